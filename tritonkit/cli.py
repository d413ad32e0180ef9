"""The `tritonkit` command line: one entry point, one subcommand per job."""

from __future__ import annotations

import json
import logging
import signal
import sys
from pathlib import Path

import typer
from rich.console import Console

from tritonkit.errors import TritonKitError, UsageError, exit_code_for
from tritonkit.export.commands import export_app

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)
app.add_typer(export_app, name="export")
console = Console(stderr=True)


@app.callback()
def _root(verbose: bool = typer.Option(False, "--verbose", "-v", help="Log what the kit does.")):
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


@app.command()
def serve(
    model_repository: Path = typer.Option(Path("model_repository"), envvar="TRITONKIT_MODEL_REPOSITORY",
                                          help="Triton model repository folder."),
    http_port: int = typer.Option(8000, envvar="TRITONKIT_HTTP_PORT"),
    grpc_port: int = typer.Option(8001, envvar="TRITONKIT_GRPC_PORT"),
    metrics_port: int = typer.Option(8002, envvar="TRITONKIT_METRICS_PORT"),
    host: str = typer.Option("127.0.0.1", envvar="TRITONKIT_HOST", help="Address to bind (loopback by default)."),
    log_file: Path = typer.Option(Path("triton.log"), envvar="TRITONKIT_LOG_FILE", help="Triton's log."),
    model_control_mode: str = typer.Option("none", help="Triton's --model-control-mode: none, poll or explicit."),
    exit_timeout_s: int = typer.Option(30, help="Seconds in-flight requests get to finish on shutdown."),
):
    """Start the embedded Triton server and serve until SIGINT or SIGTERM."""
    from tritonkit.server import EmbeddedServer

    server = EmbeddedServer(
        model_repository, http_port=http_port, grpc_port=grpc_port, metrics_port=metrics_port, host=host,
        log_file=log_file, model_control_mode=model_control_mode, exit_timeout_s=exit_timeout_s,
    )
    server.start()
    typer.echo(f"Triton ready: grpc {server.grpc_url}  http {server.http_url}  metrics {server.metrics_url}")
    typer.echo(f"repository {server.model_repository}, log {server.log_file}; Ctrl-C stops it")
    sys.stdout.flush()

    def _stop(signum, _frame):
        typer.echo(f"{signal.Signals(signum).name}: letting in-flight requests finish, then stopping")
        server.request_stop()  # the main thread's wait() returns once Triton has exited

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    code = server.wait()
    server.stop()
    typer.echo("Triton stopped")
    if code not in (0, -signal.SIGTERM):
        raise typer.Exit(code)


@app.command()
def predict(
    model: str = typer.Option(..., "--model", "-m", envvar="TRITONKIT_MODEL"),
    input: str = typer.Option(..., "--input", "-i", help='One record as JSON: {"input_name": value, ...} '
                              "(or @file.json)."),
    url: str = typer.Option("127.0.0.1:8001", envvar="TRITONKIT_URL", help="HOST:PORT of Triton."),
    protocol: str = typer.Option("grpc", envvar="TRITONKIT_PROTOCOL", help="grpc or http."),
    version: str = typer.Option("", help="Model version (latest when empty)."),
    timeout_s: float = typer.Option(10.0, envvar="TRITONKIT_TIMEOUT_S", help="Deadline for the call."),
):
    """One real-time prediction; prints JSON with the outputs, model version and latency_ms."""
    from tritonkit.clients import TritonClient

    text = Path(input[1:]).read_text() if input.startswith("@") else input
    try:
        features = json.loads(text)
    except json.JSONDecodeError as e:
        raise UsageError(f"--input is not valid JSON ({e.msg} at character {e.pos}): {text[:80]!r}") from None
    if not isinstance(features, dict):
        raise UsageError(f"--input must be a JSON object of input names to values, got {type(features).__name__}")
    with TritonClient(url, protocol=protocol, timeout_s=timeout_s) as client:
        prediction = client.predict(model, features, version=version)
    typer.echo(json.dumps(prediction.to_dict()))


def main() -> None:
    """Console entry point: kit errors become one line and an exit code, not a traceback."""
    try:
        app(standalone_mode=False)
    except TritonKitError as e:
        console.print(f"[red]error:[/red] {e}", highlight=False)
        sys.exit(exit_code_for(e))
    except typer.Exit as e:
        sys.exit(e.exit_code)
    except typer.Abort:
        console.print("aborted")
        sys.exit(130)
    except Exception as e:  # click's usage errors and the like
        import click

        if isinstance(e, click.ClickException):
            e.show()
            sys.exit(e.exit_code)
        raise


if __name__ == "__main__":
    main()
