"""`tritonkit guard`: the validating HTTP front alone, before a Triton that runs beside it (the Helm chart's
sidecar); also the guard options that `tritonkit serve` shares."""

from __future__ import annotations

import signal
import sys
import threading
from pathlib import Path

import typer

from tritonkit.cli.options import OptionGroup, option_group
from tritonkit.errors import UsageError

_LIMITS = (
    ("max_body_bytes", int, typer.Option(
        64 * 2**20, "--max-body-bytes", help="Guard: largest request body (after decompression); larger: 413.")),
    ("max_json_bytes", int, typer.Option(
        8 * 2**20, "--max-json-bytes",
        help="Guard: largest JSON part of an inference request (send bigger tensors as binary data).")),
    ("max_tensor_bytes", int, typer.Option(
        64 * 2**20, "--max-tensor-bytes",
        help="Guard: most bytes all inputs of one inference request may hold (element count x datatype size).")),
)  # fmt: skip


def _limits(values: dict):
    from tritonkit.server.infer_check import GuardLimits

    for name, value in values.items():
        if value < 1:
            raise UsageError(f"--{name.replace('_', '-')} is {value}; expected a number of bytes above 0")
    return GuardLimits(**values)


GUARD_LIMITS = OptionGroup("limits", _LIMITS, _limits)


def host_port(text: str, option: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise UsageError(f"{option} is {text!r}; expected HOST:PORT (e.g. 127.0.0.1:8000)")
    return host.strip("[]"), int(port)


@option_group(GUARD_LIMITS)
def guard(
    upstream: str = typer.Option("127.0.0.1:8000", help="HOST:PORT of Triton's own HTTP endpoint (on loopback)."),
    listen: str = typer.Option("127.0.0.1:8080", help="HOST:PORT the guard serves HTTP on."),
    metrics_listen: str = typer.Option(
        "127.0.0.1:8003", help="HOST:PORT of the kit's Prometheus metrics (/metrics); empty: none."
    ),
    admin_key_file: Path | None = typer.Option(
        None, envvar="TRITONKIT_ADMIN_KEY_FILE", help="Key for reading model configs when model-config is restricted."
    ),
    tls_cert: Path | None = typer.Option(None, envvar="TRITONKIT_TLS_CERT", help="Serve HTTPS with this certificate."),
    tls_key: Path | None = typer.Option(None, envvar="TRITONKIT_TLS_KEY", help="Private key of --tls-cert (PEM)."),
    tls_client_ca: Path | None = typer.Option(
        None, envvar="TRITONKIT_TLS_CLIENT_CA", help="Mutual TLS: clients need a certificate signed by this CA."
    ),
    limits=None,
):
    """Check every HTTP inference request against the model's config before it reaches Triton (until SIGTERM)."""
    from tritonkit.server.guard import Guard
    from tritonkit.server.kit_metrics import KitMetrics, MetricsServer
    from tritonkit.server.security import ADMIN_HEADER, read_admin_key
    from tritonkit.server.tls_proxy import server_context

    if bool(tls_cert) != bool(tls_key) or (tls_client_ca and not tls_cert):
        raise UsageError("--tls-cert and --tls-key go together (and --tls-client-ca needs them)")
    context = server_context(tls_cert, tls_key, tls_client_ca) if tls_cert else None
    headers = {ADMIN_HEADER: read_admin_key(admin_key_file)} if admin_key_file else None
    metrics = KitMetrics()
    front = Guard(*host_port(listen, "--listen"), host_port(upstream, "--upstream"), limits, context, metrics, headers)
    exporter = MetricsServer(*host_port(metrics_listen, "--metrics-listen"), metrics) if metrics_listen else None
    front.start()
    if exporter is not None:
        exporter.start()
    typer.echo(
        f"guard on {'https' if context else 'http'}://{front.url} -> Triton http://{upstream}"
        + (f"; kit metrics {exporter.url}" if exporter else "")
    )
    sys.stdout.flush()
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    stop.wait()
    front.stop()
    if exporter is not None:
        exporter.stop()
    typer.echo("guard stopped")
