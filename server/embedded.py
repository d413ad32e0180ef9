"""The embedded Triton Inference Server: the tritonserver binary nvidia-pytriton ships, run as a child process.

No Docker and no GPU are needed. The server runs from its own Python environment (server/environment.py:
nvidia-pytriton, numpy<2, onnxruntime; the groups its repository's backends need), not the caller's. It
gets a backend directory assembled here: Triton's Python backend with the stub for that environment's
Python, and the kit's Python-based `onnxruntime`, `fil` and `pytorch` backends, so a production model
repository loads unchanged. Triton's HTTP endpoint binds loopback on an internal port behind the guard
(server/guard.py), which takes the public HTTP port; `restart()` brings Triton back on the same ports
after a crash while the guard keeps listening (server/supervisor.py decides when).
"""

from __future__ import annotations

import logging
import os
import re
import secrets
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from tritonkit.errors import ModelLoadError, PortInUseError, ServerStartError, UsageError
from tritonkit.server.environment import groups_for_repository
from tritonkit.server.guard import Guard
from tritonkit.server.infer_check import GuardLimits
from tritonkit.server.kit_metrics import KitMetrics, MetricsServer
from tritonkit.server.security import (
    ADMIN_HEADER,
    DEFAULT_RESTRICTED_APIS,
    RESTRICTABLE_APIS,
    TlsFiles,
    admin_headers,
    check_admin_key,
    masked_command,
)
from tritonkit.server.tls_proxy import TlsProxy, server_context
from tritonkit.server.triton_install import (
    ORT_BACKEND,
    TritonInstall,
    assemble_backends,
    check_repository,
    die_with_parent,
    free_port,
    port_in_use,
)

__all__ = ["ORT_BACKEND", "EmbeddedServer", "TritonInstall", "assemble_backends", "free_port", "port_in_use"]

logger = logging.getLogger(__name__)

REPOSITORIES_ENV = "TRITONKIT_MODEL_REPOSITORIES"  # read by the onnxruntime backend's auto_complete_config
_LOAD_FAILURE = re.compile(r"failed to load '([^']+)' version \d+: (.*?)\"?$", re.MULTILINE)
_POLL_FAILURE = re.compile(r"Poll failed for model directory '([^']+)': (.*?)\"?$", re.MULTILINE)
_SERVER_ERROR = re.compile(r"^error: (.*)$", re.MULTILINE)


@dataclass
class EmbeddedServer:
    """A tritonserver child process bound to loopback by default; use as a context manager.

    Args:
        model_repository: the Triton model repository folder.
        http_port, grpc_port, metrics_port: ports to serve on (0 picks a free one).
        host: address all endpoints bind to.
        log_file: where Triton's log goes (a temporary file when None).
        model_control_mode: Triton's `--model-control-mode` (none, poll or explicit).
        startup_timeout_s: how long to wait for /v2/health/ready.
        exit_timeout_s: how long Triton lets in-flight requests finish on shutdown.
        extra_args: more tritonserver arguments, passed as given.
        grpc_tls: serve gRPC over TLS (Triton's own --grpc-use-ssl / --grpc-use-ssl-mutual).
        http_tls: serve HTTPS: the guard (or, without it, a TLS proxy) terminates TLS on the public port.
        restricted_apis: Triton API groups that need the admin header (`ADMIN_HEADER`).
        admin_key: the admin header's value; None draws a random key that is never shown, so the
            restricted APIs are closed to everyone.
        guard: limits of the validating HTTP front (server/guard.py); None exposes Triton's own HTTP
            endpoint, which one crafted request can crash (Triton 2.51).
        kit_metrics_port: where the kit's Prometheus metrics (guard rejections, Triton restarts) are
            served at /metrics; 0 picks a free port, None serves none.
    """

    model_repository: Path
    http_port: int = 8000
    grpc_port: int = 8001
    metrics_port: int = 8002
    host: str = "127.0.0.1"
    log_file: Path | None = None
    model_control_mode: str = "none"
    startup_timeout_s: float = 120.0
    exit_timeout_s: int = 30
    extra_args: list[str] = field(default_factory=list)
    grpc_tls: TlsFiles | None = None
    http_tls: TlsFiles | None = None
    restricted_apis: tuple[str, ...] = DEFAULT_RESTRICTED_APIS
    admin_key: str | None = field(default=None, repr=False)
    guard: GuardLimits | None = field(default_factory=GuardLimits)
    kit_metrics_port: int | None = None
    kit_metrics: KitMetrics = field(default_factory=KitMetrics, repr=False)
    _process: subprocess.Popen | None = field(default=None, init=False, repr=False)
    _workdir: Path | None = field(default=None, init=False, repr=False)
    _proxy: Guard | TlsProxy | None = field(default=None, init=False, repr=False)  # the front on the HTTP port
    _metrics_server: MetricsServer | None = field(default=None, init=False, repr=False)
    _triton_http: str = field(default="", init=False, repr=False)  # where Triton's own HTTP listens
    _key: str | None = field(default=None, init=False, repr=False)
    _launch: tuple[list[str], dict[str, str]] | None = field(default=None, init=False, repr=False)

    @property
    def http_url(self) -> str:
        return f"{self.host}:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"{self.host}:{self.grpc_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://{self.host}:{self.metrics_port}/metrics"

    @property
    def kit_metrics_url(self) -> str | None:
        return self._metrics_server.url if self._metrics_server is not None else None

    @property
    def triton_http_url(self) -> str:
        """Triton's own HTTP endpoint (loopback, internal port, behind the guard): for tests and diagnostics."""
        return self._triton_http

    def _security_args(self) -> list[str]:
        unknown = sorted(set(self.restricted_apis) - set(RESTRICTABLE_APIS))
        if unknown:
            raise UsageError(f"restricted API {unknown[0]!r} is not one of Triton's: {', '.join(RESTRICTABLE_APIS)}")
        args = []
        if self.restricted_apis:
            if self.admin_key is not None:
                check_admin_key(self.admin_key)
            key = self._key = self.admin_key or secrets.token_urlsafe(32)
            apis = ",".join(dict.fromkeys(self.restricted_apis))
            args += [
                f"--grpc-restricted-protocol={apis}:{ADMIN_HEADER}={key}",
                f"--http-restricted-api={apis}:{ADMIN_HEADER}={key}",
            ]
        if self.grpc_tls is not None:
            self.grpc_tls.check("gRPC")
            args += [
                "--grpc-use-ssl=true",
                f"--grpc-server-cert={Path(self.grpc_tls.cert).resolve()}",
                f"--grpc-server-key={Path(self.grpc_tls.key).resolve()}",
            ]
            if self.grpc_tls.client_ca is not None:
                args += ["--grpc-use-ssl-mutual=true", f"--grpc-root-cert={Path(self.grpc_tls.client_ca).resolve()}"]
        if self.http_tls is not None:
            self.http_tls.check("HTTP")
        return args

    def start(self) -> EmbeddedServer:
        self.model_repository = Path(self.model_repository).resolve()
        check_repository(self.model_repository)
        security = self._security_args()
        for name in ("http", "grpc", "metrics") + (("kit_metrics",) if self.kit_metrics_port is not None else ()):
            port = getattr(self, f"{name}_port")
            if port == 0:
                setattr(self, f"{name}_port", free_port(self.host))
            elif port_in_use(self.host, port):
                raise PortInUseError(name.replace("_", "-"), self.host, port)
        # Behind the guard (or the TLS proxy), Triton's HTTP binds loopback on an internal port.
        fronted = self.guard is not None or self.http_tls is not None
        triton_http = ("127.0.0.1", free_port("127.0.0.1")) if fronted else (self.host, self.http_port)
        self._triton_http = f"{triton_http[0]}:{triton_http[1]}"
        install = TritonInstall.locate(groups_for_repository(self.model_repository))
        self._workdir = Path(tempfile.mkdtemp(prefix="tritonkit-server-"))
        backends = assemble_backends(install, self._workdir / "backends")
        if self.log_file is None:
            self.log_file = self._workdir / "triton.log"
        self.log_file = Path(self.log_file).resolve()
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        env = install.environment(os.environ)
        env[REPOSITORIES_ENV] = str(self.model_repository)
        command = [
            str(install.binary),
            f"--model-repository={self.model_repository}",
            f"--backend-directory={backends}",
            f"--model-control-mode={self.model_control_mode}",
            f"--http-address={triton_http[0]}",
            f"--http-port={triton_http[1]}",
            f"--grpc-address={self.host}",
            f"--grpc-port={self.grpc_port}",
            f"--metrics-address={self.host}",
            f"--metrics-port={self.metrics_port}",
            f"--exit-timeout-secs={self.exit_timeout_s}",
            *security,
            *self.extra_args,
        ]
        logger.info("starting %s", " ".join(masked_command(command)))
        self._launch = (command, env)
        self._spawn()
        try:
            self._wait_ready()
            self._start_front(triton_http)
        except BaseException:
            self.stop()
            raise
        return self

    def _spawn(self) -> None:
        command, env = self._launch
        with open(self.log_file, "ab") as log:
            self._process = subprocess.Popen(
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
                preexec_fn=die_with_parent() if threading.current_thread() is threading.main_thread() else None,
            )

    def _start_front(self, triton_http: tuple[str, int]) -> None:
        context = None
        if self.http_tls is not None:
            context = server_context(self.http_tls.cert, self.http_tls.key, self.http_tls.client_ca)
        if self.guard is not None:
            headers = {ADMIN_HEADER: self._key} if self._key else None
            self._proxy = Guard(self.host, self.http_port, triton_http, self.guard, context, self.kit_metrics, headers)
            self._proxy.start()
        elif context is not None:
            self._proxy = TlsProxy(self.host, self.http_port, *triton_http, context).start()
        if self.kit_metrics_port is not None and self._metrics_server is None:
            self._metrics_server = MetricsServer(self.host, self.kit_metrics_port, self.kit_metrics).start()
            self.kit_metrics_port = self._metrics_server.port

    def restart(self) -> None:
        """Starts Triton again on the same ports after it exited (a crash, a kill); the HTTP front keeps
        listening meanwhile (answering 502) and the kit's metrics keep counting."""
        if self._launch is None:
            raise UsageError("restart() needs a server that was started")
        self._end_process()
        logger.info("restarting Triton")
        self._spawn()
        self._wait_ready()
        if isinstance(self._proxy, Guard):
            self._proxy.specs.clear()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.startup_timeout_s
        url = f"http://{self._triton_http}/v2/health/ready"
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                self._raise_start_failure()
            try:
                with urllib.request.urlopen(url, timeout=1) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.2)
        raise ServerStartError(
            f"Triton was not ready after {self.startup_timeout_s:.0f} s; see its log at {self.log_file}"
        )

    def _raise_start_failure(self) -> None:
        log = self.log_file.read_text(errors="replace") if self.log_file.exists() else ""
        for pattern in (_LOAD_FAILURE, _POLL_FAILURE):
            match = pattern.search(log)
            if match:
                model = Path(match.group(1)).name
                # The Python backend appends the stub's traceback ("\n\nAt:\n ...") to the reason.
                reason = match.group(2).replace("\\n", "\n").split("\n\nAt:")[0].strip()
                raise ModelLoadError(model, reason)
        match = _SERVER_ERROR.search(log)
        reason = match.group(1) if match else f"exit code {self._process.returncode}"
        raise ServerStartError(f"Triton exited during start-up: {reason}; see its log at {self.log_file}")

    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def pid(self) -> int | None:
        """The tritonserver process id (its Python backend stubs are its children); None before start."""
        return self._process.pid if self._process is not None else None

    def kill(self) -> None:
        """SIGKILL Triton and its stubs at once, as a crash would; `start()` brings it back on the same ports."""
        self._end_process()
        self.stop()

    def _end_process(self) -> None:
        """SIGKILLs what is left of Triton's process group (its stubs outlive a crashed Triton) and reaps it."""
        if self._process is None:
            return
        try:
            os.killpg(self._process.pid, signal.SIGKILL)  # its own session: the stubs share its process group
        except (ProcessLookupError, PermissionError):  # the group is gone already
            pass
        self._process.wait()

    def wait(self) -> int:
        """Blocks until the server process exits; returns its exit code (-N: killed by signal N)."""
        return self._process.wait()

    def request_stop(self) -> None:
        """Sends SIGTERM and returns at once (safe in a signal handler): Triton drains, then exits."""
        if self._process is not None and self._process.poll() is None:
            self._process.send_signal(signal.SIGTERM)

    def stop(self) -> None:
        """SIGTERM: Triton stops taking requests, lets in-flight ones finish, then exits."""
        for front in (self._proxy, self._metrics_server):
            if front is not None:
                front.stop()
        self._proxy = self._metrics_server = None
        if self._process is not None and self._process.poll() is None:
            self.request_stop()
            try:
                self._process.wait(timeout=self.exit_timeout_s + 15)
            except subprocess.TimeoutExpired:
                logger.warning("Triton did not exit within %s s; killing it", self.exit_timeout_s + 15)
        self._end_process()
        if self._workdir is not None:
            shutil.rmtree(self._workdir / "backends", ignore_errors=True)

    def admin_headers(self, protocol: str) -> dict[str, str]:
        """Headers that open the restricted APIs; only when the key was given (a drawn key stays secret)."""
        if self.admin_key is None:
            raise UsageError("this server was started without an admin key: its restricted APIs are closed")
        return admin_headers(self.admin_key, protocol)

    def __enter__(self) -> EmbeddedServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
