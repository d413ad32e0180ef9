"""`tritonkit serve`: the embedded Triton behind the guard, supervised, until SIGINT or SIGTERM."""

from __future__ import annotations

import signal
import sys
from pathlib import Path

import typer

from tritonkit.cli.guard import GUARD_LIMITS
from tritonkit.cli.options import option_group
from tritonkit.errors import UsageError

DEFAULT_RESTRICTED = "model-repository,shared-memory,trace,logging"


@option_group(GUARD_LIMITS)
def serve(
    model_repository: Path = typer.Option(
        Path("model_repository"), envvar="TRITONKIT_MODEL_REPOSITORY", help="Triton model repository folder."
    ),
    http_port: int = typer.Option(8000, envvar="TRITONKIT_HTTP_PORT"),
    grpc_port: int = typer.Option(8001, envvar="TRITONKIT_GRPC_PORT"),
    metrics_port: int = typer.Option(8002, envvar="TRITONKIT_METRICS_PORT"),
    kit_metrics_port: int = typer.Option(
        8003, help="Port of the kit's own Prometheus metrics (guard rejections, Triton restarts) at /metrics."
    ),
    host: str = typer.Option("127.0.0.1", envvar="TRITONKIT_HOST", help="Address to bind (loopback by default)."),
    log_file: Path = typer.Option(Path("triton.log"), envvar="TRITONKIT_LOG_FILE", help="Triton's log."),
    model_control_mode: str = typer.Option("none", help="Triton's --model-control-mode: none, poll or explicit."),
    exit_timeout_s: int = typer.Option(30, help="Seconds in-flight requests get to finish on shutdown."),
    guard: bool = typer.Option(
        True,
        "--guard/--no-guard",
        help="Check HTTP inference requests before Triton sees them. --no-guard exposes Triton's own HTTP "
        "endpoint, which one crafted request crashes (Triton 2.51): only behind another validating proxy.",
    ),
    restart: str = typer.Option(
        "on-failure", help="on-failure: restart Triton with backoff when it crashes; no: report the crash and exit."
    ),
    tls_cert: Path | None = typer.Option(
        None, envvar="TRITONKIT_TLS_CERT", help="Server certificate (PEM): serve gRPC and HTTPS over TLS."
    ),
    tls_key: Path | None = typer.Option(None, envvar="TRITONKIT_TLS_KEY", help="Private key of --tls-cert (PEM)."),
    tls_client_ca: Path | None = typer.Option(
        None, envvar="TRITONKIT_TLS_CLIENT_CA", help="Mutual TLS: clients need a certificate signed by this CA."
    ),
    tls_endpoints: str = typer.Option(
        "grpc,http", envvar="TRITONKIT_TLS_ENDPOINTS", help="Endpoints --tls-cert applies to: grpc, http or grpc,http."
    ),
    admin_key_file: Path | None = typer.Option(
        None,
        envvar="TRITONKIT_ADMIN_KEY_FILE",
        help="File holding the key of the restricted APIs (sent as header tritonkit-admin-key); it must not be "
        "readable by other users. Without it they are closed to everyone.",
    ),
    restrict_api: str = typer.Option(
        DEFAULT_RESTRICTED,
        envvar="TRITONKIT_RESTRICT_API",
        help="Triton API groups behind the admin key (empty: none; also model-config, statistics, ...).",
    ),
    limits=None,
):
    """Start the embedded Triton server behind the guard and serve until SIGINT or SIGTERM."""
    from tritonkit.server import EmbeddedServer
    from tritonkit.server.security import ADMIN_HEADER, read_admin_key
    from tritonkit.server.supervisor import RestartPolicy, Supervisor

    policy = RestartPolicy(mode=restart)
    grpc_tls, http_tls = _tls(tls_cert, tls_key, tls_client_ca, tls_endpoints)
    restricted = tuple(a.strip() for a in restrict_api.split(",") if a.strip())
    server = EmbeddedServer(
        model_repository,
        http_port=http_port,
        grpc_port=grpc_port,
        metrics_port=metrics_port,
        host=host,
        log_file=log_file,
        model_control_mode=model_control_mode,
        exit_timeout_s=exit_timeout_s,
        grpc_tls=grpc_tls,
        http_tls=http_tls,
        restricted_apis=restricted,
        admin_key=read_admin_key(admin_key_file) if admin_key_file else None,
        guard=limits if guard else None,
        kit_metrics_port=kit_metrics_port,
    )
    server.start()
    _announce(server, restricted, admin_key_file, ADMIN_HEADER, policy.mode)
    supervisor = Supervisor(server, policy, notify=lambda line: typer.echo(line, err=True))

    def _stop(signum, _frame):
        typer.echo(f"{signal.Signals(signum).name}: letting in-flight requests finish, then stopping")
        supervisor.request_stop()  # the main thread's run() returns once Triton has exited

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    code = supervisor.run()  # raises ServerCrashedError (exit code 14) on a crash it does not restart
    typer.echo("Triton stopped")
    if code not in (0, -signal.SIGTERM):
        raise typer.Exit(code)


def _tls(cert: Path | None, key: Path | None, client_ca: Path | None, endpoints_text: str):
    """(gRPC TLS files, HTTP TLS files), each None where --tls-endpoints leaves it plain."""
    from tritonkit.server.security import TlsFiles

    tls = None
    if cert or key:
        if not (cert and key):
            raise UsageError("--tls-cert and --tls-key go together")
        tls = TlsFiles(cert, key, client_ca)
    elif client_ca:
        raise UsageError("--tls-client-ca needs --tls-cert and --tls-key")
    endpoints = {e.strip() for e in endpoints_text.split(",") if e.strip()}
    if not endpoints <= {"grpc", "http"}:
        raise UsageError(f"--tls-endpoints {endpoints_text!r}: expected grpc, http or grpc,http")
    return (tls if "grpc" in endpoints else None), (tls if "http" in endpoints else None)


def _announce(server, restricted: tuple[str, ...], admin_key_file: Path | None, header: str, restart: str) -> None:
    grpc_scheme = "grpcs" if server.grpc_tls else "grpc"
    http_scheme = "https" if server.http_tls else "http"
    typer.echo(
        f"Triton ready: {grpc_scheme} {server.grpc_url}  {http_scheme} {server.http_url}  metrics {server.metrics_url}"
    )
    front = (
        f"HTTP guarded: inference requests checked against each model's config (Triton's own HTTP on "
        f"{server.triton_http_url})"
        if server.guard is not None
        else "HTTP NOT guarded (--no-guard): Triton's own endpoint is exposed; one crafted request can crash it"
    )
    typer.echo(f"{front}; kit metrics {server.kit_metrics_url}; --restart {restart}")
    if restricted:
        access = (
            f"need header {header} (key from {admin_key_file})"
            if admin_key_file
            else "are closed (no --admin-key-file)"
        )
        typer.echo(f"restricted APIs {', '.join(restricted)} {access}")
    typer.echo(f"repository {server.model_repository}, log {server.log_file}; Ctrl-C stops it")
    sys.stdout.flush()
