"""The embedded Triton Inference Server: the tritonserver binary nvidia-pytriton ships, run as a child process.

No Docker and no GPU are needed. The server gets a backend directory assembled here: Triton's
Python backend with the stub for the running Python, and the kit's Python-based `onnxruntime` and
`fil` backends, so a production model repository loads unchanged.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from tritonkit.errors import ModelLoadError, PortInUseError, RepositoryError, ServerStartError, UsageError
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

logger = logging.getLogger(__name__)

ORT_BACKEND = Path(__file__).parent / "backends" / "onnxruntime" / "model.py"
FIL_BACKEND = Path(__file__).parent / "backends" / "fil" / "model.py"
TORCH_BACKEND = Path(__file__).parent / "backends" / "pytorch" / "model.py"
REPOSITORIES_ENV = "TRITONKIT_MODEL_REPOSITORIES"  # read by the onnxruntime backend's auto_complete_config
_LOAD_FAILURE = re.compile(r"failed to load '([^']+)' version \d+: (.*?)\"?$", re.MULTILINE)
_POLL_FAILURE = re.compile(r"Poll failed for model directory '([^']+)': (.*?)\"?$", re.MULTILINE)
_SERVER_ERROR = re.compile(r"^error: (.*)$", re.MULTILINE)


@dataclass(frozen=True)
class TritonInstall:
    """Where the pieces of the tritonserver that nvidia-pytriton ships live."""

    binary: Path
    python_backend: Path
    stubs: Path
    libs: Path

    @classmethod
    def locate(cls) -> TritonInstall:
        spec = importlib.util.find_spec("pytriton")
        if spec is None or not spec.submodule_search_locations:
            raise ServerStartError("nvidia-pytriton is not installed: it provides the tritonserver binary")
        root = Path(list(spec.submodule_search_locations)[0]) / "tritonserver"
        install = cls(
            binary=root / "bin" / "tritonserver",
            python_backend=root / "backends" / "python",
            stubs=root / "python_backend_stubs",
            libs=root.parent.parent / "nvidia_pytriton.libs",
        )
        if not install.binary.exists():
            raise ServerStartError(f"tritonserver binary not found at {install.binary}")
        return install

    def stub(self) -> Path:
        version = f"{sys.version_info.major}.{sys.version_info.minor}"
        path = self.stubs / version / "triton_python_backend_stub"
        if not path.exists():
            raise ServerStartError(f"nvidia-pytriton has no Python backend stub for Python {version} ({path})")
        return path


def assemble_backends(install: TritonInstall, dest: Path) -> Path:
    """Builds the backend directory: `python/` (backend + stub) and the Python-based `onnxruntime/`, `fil/`
    and `pytorch/`."""
    python_dir = dest / "python"
    python_dir.mkdir(parents=True, exist_ok=True)
    for item in install.python_backend.iterdir():
        if item.is_file():
            shutil.copy2(item, python_dir / item.name)
    shutil.copy2(install.stub(), python_dir / "triton_python_backend_stub")
    for name, source in (("onnxruntime", ORT_BACKEND), ("fil", FIL_BACKEND), ("pytorch", TORCH_BACKEND)):
        (dest / name).mkdir(exist_ok=True)
        shutil.copy2(source, dest / name / "model.py")
    return dest


def _die_with_parent():
    """A preexec_fn asking Linux to SIGTERM the server when the process that started it dies (kill -9
    included), so no orphaned Triton keeps the ports. Linux ties this to the forking thread, hence only
    used from the main thread; None elsewhere."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    pr_set_pdeathsig = 1

    def arm() -> None:
        libc.prctl(pr_set_pdeathsig, signal.SIGTERM)

    return arm


def port_in_use(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return True
    return False


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def check_repository(path: Path) -> None:
    """Raises RepositoryError unless `path` is a folder holding at least one model folder."""
    if not path.exists():
        raise RepositoryError(f"model repository {path} does not exist (run `tritonkit export ...` first)")
    if not path.is_dir():
        raise RepositoryError(f"model repository {path} is not a folder")
    models = [p for p in path.iterdir() if p.is_dir() and not p.name.startswith(".")]
    if not models:
        raise RepositoryError(f"model repository {path} is empty: it needs one folder per model")


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
        http_tls: serve HTTPS: Triton's HTTP binds loopback on an internal port behind a TLS proxy.
        restricted_apis: Triton API groups that need the admin header (`ADMIN_HEADER`).
        admin_key: the admin header's value; None draws a random key that is never shown, so the
            restricted APIs are closed to everyone.
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
    _process: subprocess.Popen | None = field(default=None, init=False, repr=False)
    _workdir: Path | None = field(default=None, init=False, repr=False)
    _proxy: TlsProxy | None = field(default=None, init=False, repr=False)
    _triton_http: str = field(default="", init=False, repr=False)  # where Triton's own HTTP listens

    @property
    def http_url(self) -> str:
        return f"{self.host}:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"{self.host}:{self.grpc_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://{self.host}:{self.metrics_port}/metrics"

    def _security_args(self) -> list[str]:
        unknown = sorted(set(self.restricted_apis) - set(RESTRICTABLE_APIS))
        if unknown:
            raise UsageError(f"restricted API {unknown[0]!r} is not one of Triton's: {', '.join(RESTRICTABLE_APIS)}")
        args = []
        if self.restricted_apis:
            if self.admin_key is None:
                key = secrets.token_urlsafe(32)
            else:
                check_admin_key(self.admin_key)
                key = self.admin_key
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
        for name in ("http", "grpc", "metrics"):
            port = getattr(self, f"{name}_port")
            if port == 0:
                setattr(self, f"{name}_port", free_port(self.host))
            elif port_in_use(self.host, port):
                raise PortInUseError(name, self.host, port)
        # With HTTPS, Triton's plain HTTP binds loopback on an internal port; the TLS proxy takes the public one.
        triton_http = ("127.0.0.1", free_port("127.0.0.1")) if self.http_tls else (self.host, self.http_port)
        self._triton_http = f"{triton_http[0]}:{triton_http[1]}"
        install = TritonInstall.locate()
        self._workdir = Path(tempfile.mkdtemp(prefix="tritonkit-server-"))
        backends = assemble_backends(install, self._workdir / "backends")
        if self.log_file is None:
            self.log_file = self._workdir / "triton.log"
        self.log_file = Path(self.log_file).resolve()
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ)
        env["LD_LIBRARY_PATH"] = os.pathsep.join(filter(None, [str(install.libs), env.get("LD_LIBRARY_PATH")]))
        # The stub runs model.py with the first python3 on PATH: make it this environment's.
        env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
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
        with open(self.log_file, "ab") as log:
            self._process = subprocess.Popen(
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
                preexec_fn=_die_with_parent() if threading.current_thread() is threading.main_thread() else None,
            )
        try:
            self._wait_ready()
            if self.http_tls is not None:
                context = server_context(self.http_tls.cert, self.http_tls.key, self.http_tls.client_ca)
                self._proxy = TlsProxy(self.host, self.http_port, *triton_http, context).start()
        except BaseException:
            self.stop()
            raise
        return self

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
        if self._process is not None and self._process.poll() is None:
            os.killpg(self._process.pid, signal.SIGKILL)  # its own session: the stubs share its process group
            self._process.wait()
        self.stop()

    def wait(self) -> int:
        """Blocks until the server process exits; returns its exit code."""
        return self._process.wait()

    def request_stop(self) -> None:
        """Sends SIGTERM and returns at once (safe in a signal handler): Triton drains, then exits."""
        if self._process is not None and self._process.poll() is None:
            self._process.send_signal(signal.SIGTERM)

    def stop(self) -> None:
        """SIGTERM: Triton stops taking requests, lets in-flight ones finish, then exits."""
        if self._proxy is not None:
            self._proxy.stop()
            self._proxy = None
        if self._process is not None and self._process.poll() is None:
            self.request_stop()
            try:
                self._process.wait(timeout=self.exit_timeout_s + 15)
            except subprocess.TimeoutExpired:
                logger.warning("Triton did not exit within %s s; killing it", self.exit_timeout_s + 15)
                self._process.kill()
                self._process.wait()
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
