"""The `tritonkit` command line: one entry point, one subcommand per job."""

from __future__ import annotations

import json
import logging
import signal
import sys
import time
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from tritonkit.errors import TritonKitError, UsageError, exit_code_for
from tritonkit.benchmarks.commands import register as register_bench_commands
from tritonkit.clients.store_commands import register as register_store_commands
from tritonkit.export.commands import export_app

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)
app.add_typer(export_app, name="export")
register_store_commands(app)
register_bench_commands(app)
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

    from tritonkit.clients.store_commands import read_record

    features = read_record(input, "--input")
    with TritonClient(url, protocol=protocol, timeout_s=timeout_s) as client:
        prediction = client.predict(model, features, version=version)
    typer.echo(json.dumps(prediction.to_dict()))


@app.command()
def score(
    model: str = typer.Option(..., "--model", "-m", envvar="TRITONKIT_MODEL"),
    input: Path = typer.Option(..., "--input", "-i", help="Parquet, CSV or JSON Lines file, or a folder of them."),
    output: Path = typer.Option(..., "--output", "-o", help="Result file (.parquet, .csv or .jsonl)."),
    url: str = typer.Option("127.0.0.1:8001", envvar="TRITONKIT_URL", help="HOST:PORT of Triton."),
    protocol: str = typer.Option("grpc", envvar="TRITONKIT_PROTOCOL", help="grpc or http."),
    version: str = typer.Option("", help="Model version (latest when empty)."),
    concurrency: int = typer.Option(4, envvar="TRITONKIT_CONCURRENCY", help="Requests in flight."),
    batch_size: Optional[int] = typer.Option(None, help="Rows per request (default: max_batch_size)."),
    chunk_rows: int = typer.Option(65_536, help="Rows per checkpoint (resume granularity)."),
    resume: bool = typer.Option(False, help="Continue an interrupted run: finished chunks are kept."),
    shard: str = typer.Option("0/1", envvar="TRITONKIT_SHARD", help="I/N: score the I-th of N shares."),
    id_column: Optional[str] = typer.Option(None, help="Column passed through as the row's id."),
    map: list[str] = typer.Option([], "--map", help="COLUMN=INPUT or COL1,COL2=INPUT (repeatable)."),
    rejects: Optional[Path] = typer.Option(None, help="Rejected rows (default: OUTPUT.rejects.jsonl)."),
    format: Optional[str] = typer.Option(None, help="parquet, csv or jsonl (default: from --output)."),
    threshold: Optional[float] = typer.Option(None, help="Add predicted_label = score >= THRESHOLD."),
    score_output: Optional[str] = typer.Option(None, help="Output that --threshold/--segments read."),
    segments: Optional[str] = typer.Option(None, help="Segment names, e.g. Low,Medium,High."),
    segment_bounds: Optional[str] = typer.Option(None, help="Ascending bounds, e.g. 0.3,0.6."),
    ssl: bool = typer.Option(False, help="TLS to Triton."),
    root_certificates: Optional[str] = typer.Option(None, help="CA bundle for --ssl (gRPC)."),
    header: list[str] = typer.Option([], "--header", help="NAME=VALUE sent with every request (repeatable)."),
    report: Optional[Path] = typer.Option(None, help="Also write the report here as JSON."),
    store: Optional[str] = typer.Option(None, envvar="TRITONKIT_STORE",
                                        help="Also write scored rows to this prediction store (sqlite:///, redis://)."),
    progress: bool = typer.Option(True, help="Progress bar on a terminal."),
):
    """Score a whole dataset through Triton: resumable, every row exactly once."""
    from tritonkit.clients.score import ScoreOptions, parse_shard, score as run, total_rows

    headers = {}
    for item in header:
        name, sep, value = item.partition("=")
        if not sep:
            raise UsageError(f"--header {name!r} is not NAME=VALUE")
        headers[name] = value
    options = ScoreOptions(
        model=model, input=input, output=output, url=url, protocol=protocol, version=version,
        concurrency=concurrency, batch_size=batch_size, chunk_rows=chunk_rows, resume=resume,
        shard=parse_shard(shard), id_column=id_column, maps=list(map), rejects=rejects, format=format,
        threshold=threshold, score_output=score_output,
        segments=[s.strip() for s in segments.split(",")] if segments else [],
        segment_bounds=_floats("--segment-bounds", segment_bounds), ssl=ssl,
        root_certificates=root_certificates, headers=headers, store=store,
    )
    if progress and console.is_terminal:
        from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

        columns = [TextColumn("scoring"), BarColumn(), TextColumn("{task.completed:,.0f} rows"),
                   TextColumn("{task.fields[rate]}"), TimeRemainingColumn()]
        with Progress(*columns, console=console) as bar:
            task = bar.add_task("score", total=total_rows(options), rate="")
            started = time.perf_counter()

            def advance(rows: int) -> None:
                done = bar.tasks[0].completed + rows
                bar.update(task, completed=done, rate=f"{done / (time.perf_counter() - started):,.0f} rows/s")

            result = run(options, progress=advance)
    else:
        result = run(options)
    _print_report(result)
    if report:
        report.write_text(json.dumps(result.to_dict(), indent=2))
    if result.rows_rejected:
        raise typer.Exit(8)


def _floats(option: str, text: Optional[str]) -> list[float]:
    if not text:
        return []
    try:
        return [float(v) for v in text.split(",")]
    except ValueError:
        raise UsageError(f"{option} {text!r} is not a comma-separated list of numbers") from None


def _print_report(report) -> None:
    from rich.table import Table

    table = Table(title=f"tritonkit score: {report.model} v{report.model_version} (shard {report.shard})")
    table.add_column("measure")
    table.add_column("value", justify="right")
    rows = [("rows read", f"{report.rows_read:,}"), ("rows scored", f"{report.rows_scored:,}"),
            ("rows rejected", f"{report.rows_rejected:,}"), ("resumed from earlier run", f"{report.rows_resumed:,}"),
            ("wall time", f"{report.wall_s:.2f} s"), ("rows/s", f"{report.rows_per_s:,.0f}"),
            ("requests", f"{report.requests:,}"), ("retries", f"{report.retries:,}")]
    rows += [(f"client latency {k}", f"{v:.2f} ms") for k, v in report.latency_ms.items()]
    rows += [("output", report.output), ("rejects", report.rejects)]
    for name, value in rows:
        table.add_row(name, value)
    Console().print(table)


def main() -> None:
    """Console entry point: kit errors become one line and an exit code, not a traceback."""
    try:
        code = app(standalone_mode=False)  # click returns typer.Exit's code instead of raising it
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
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
