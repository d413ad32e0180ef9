"""The `tritonkit` command line: one entry point, one subcommand per job."""

from __future__ import annotations

import json
import logging
import signal
import sys
import time
from http.client import HTTPException
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from tritonkit.benchmarks.commands import register as register_bench_commands
from tritonkit.clients.store_commands import register as register_store_commands
from tritonkit.errors import ServerError, TritonKitError, UsageError, exit_code_for
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


# Client-side TLS options, the same for predict and score.
SslOption = Annotated[bool, typer.Option(envvar="TRITONKIT_SSL", help="TLS to Triton (gRPC or HTTPS).")]
RootCertificatesOption = Annotated[
    str | None,
    typer.Option(envvar="TRITONKIT_ROOT_CERTIFICATES", help="CA bundle (PEM) that signed the server's certificate."),
]
ClientCertOption = Annotated[
    str | None, typer.Option(envvar="TRITONKIT_CLIENT_CERT", help="Client certificate (PEM) for mutual TLS.")
]
ClientKeyOption = Annotated[
    str | None, typer.Option(envvar="TRITONKIT_CLIENT_KEY", help="Private key of --client-cert (PEM).")
]


@app.command()
def serve(
    model_repository: Path = typer.Option(
        Path("model_repository"), envvar="TRITONKIT_MODEL_REPOSITORY", help="Triton model repository folder."
    ),
    http_port: int = typer.Option(8000, envvar="TRITONKIT_HTTP_PORT"),
    grpc_port: int = typer.Option(8001, envvar="TRITONKIT_GRPC_PORT"),
    metrics_port: int = typer.Option(8002, envvar="TRITONKIT_METRICS_PORT"),
    host: str = typer.Option("127.0.0.1", envvar="TRITONKIT_HOST", help="Address to bind (loopback by default)."),
    log_file: Path = typer.Option(Path("triton.log"), envvar="TRITONKIT_LOG_FILE", help="Triton's log."),
    model_control_mode: str = typer.Option("none", help="Triton's --model-control-mode: none, poll or explicit."),
    exit_timeout_s: int = typer.Option(30, help="Seconds in-flight requests get to finish on shutdown."),
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
        help="File holding the key of the restricted APIs (sent as header tritonkit-admin-key). "
        "Without it they are closed to everyone.",
    ),
    restrict_api: str = typer.Option(
        "model-repository,shared-memory,trace,logging",
        envvar="TRITONKIT_RESTRICT_API",
        help="Triton API groups behind the admin key (empty: none; also model-config, statistics, ...).",
    ),
):
    """Start the embedded Triton server and serve until SIGINT or SIGTERM."""
    from tritonkit.server import EmbeddedServer
    from tritonkit.server.embedded import ADMIN_HEADER, TlsFiles, read_admin_key

    tls = None
    if tls_cert or tls_key:
        if not (tls_cert and tls_key):
            raise UsageError("--tls-cert and --tls-key go together")
        tls = TlsFiles(tls_cert, tls_key, tls_client_ca)
    elif tls_client_ca:
        raise UsageError("--tls-client-ca needs --tls-cert and --tls-key")
    endpoints = {e.strip() for e in tls_endpoints.split(",") if e.strip()}
    if not endpoints <= {"grpc", "http"}:
        raise UsageError(f"--tls-endpoints {tls_endpoints!r}: expected grpc, http or grpc,http")
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
        grpc_tls=tls if "grpc" in endpoints else None,
        http_tls=tls if "http" in endpoints else None,
        restricted_apis=restricted,
        admin_key=read_admin_key(admin_key_file) if admin_key_file else None,
    )
    server.start()
    grpc_scheme = "grpcs" if server.grpc_tls else "grpc"
    http_scheme = "https" if server.http_tls else "http"
    typer.echo(
        f"Triton ready: {grpc_scheme} {server.grpc_url}  {http_scheme} {server.http_url}  metrics {server.metrics_url}"
    )
    if restricted:
        access = (
            f"need header {ADMIN_HEADER} (key from {admin_key_file})"
            if admin_key_file
            else "are closed (no --admin-key-file)"
        )
        typer.echo(f"restricted APIs {', '.join(restricted)} {access}")
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
    input: str = typer.Option(
        ..., "--input", "-i", help='One record as JSON: {"input_name": value, ...} (or @file.json).'
    ),
    url: str = typer.Option("127.0.0.1:8001", envvar="TRITONKIT_URL", help="HOST:PORT of Triton."),
    protocol: str = typer.Option("grpc", envvar="TRITONKIT_PROTOCOL", help="grpc or http."),
    version: str = typer.Option("", help="Model version (latest when empty)."),
    timeout_s: float = typer.Option(10.0, envvar="TRITONKIT_TIMEOUT_S", help="Deadline for the call."),
    timeout_ms: float | None = typer.Option(
        None,
        "--timeout-ms",
        envvar="TRITONKIT_TIMEOUT_MS",
        help="Latency budget of the call in ms (overrides --timeout-s); past it: exit code 11, naming the budget.",
    ),
    ssl: SslOption = False,
    root_certificates: RootCertificatesOption = None,
    client_cert: ClientCertOption = None,
    client_key: ClientKeyOption = None,
    header: list[str] = typer.Option(
        [], "--header", help="'NAME=VALUE' or 'NAME: VALUE' sent with the call (repeatable); values are never printed."
    ),
):
    """One real-time prediction; prints JSON with the outputs, model version and latency_ms."""
    from tritonkit.clients import TritonClient
    from tritonkit.clients.store_commands import read_record

    features = read_record(input, "--input")
    if (client_cert is None) != (client_key is None):
        raise UsageError("--client-cert and --client-key go together")
    tls = dict(ssl=ssl, root_certificates=root_certificates, certificate_chain=client_cert, private_key=client_key)
    try:
        with TritonClient(url, protocol=protocol, timeout_s=timeout_s, headers=_headers(header), **tls) as client:
            prediction = client.predict(model, features, version=version, timeout_ms=timeout_ms)
    except (OSError, HTTPException) as e:  # HTTP transport and TLS failures (gRPC ones arrive as ServerError)
        raise ServerError(
            f"cannot talk to Triton at {url} over {protocol}{' with TLS' if ssl else ''}: {type(e).__name__}: {e}"
        ) from e
    typer.echo(json.dumps(prediction.to_dict()))


@app.command()
def score(
    model: str = typer.Option(..., "--model", "-m", envvar="TRITONKIT_MODEL"),
    input: str | None = typer.Option(
        None, "--input", "-i", help="Parquet, CSV or JSON Lines file, or a folder of them."
    ),
    output: str = typer.Option(
        ..., "--output", "-o", help="Result file (.parquet, .csv or .jsonl); with --watch, the folder of results."
    ),
    watch: Path | None = typer.Option(
        None,
        help="Keep running: score each new file that lands in this folder, "
        "once each, across restarts (instead of --input).",
    ),
    poll_s: float = typer.Option(2.0, help="With --watch: seconds between looks at the folder."),
    settle_s: float = typer.Option(1.0, help="With --watch: a file is taken once unchanged this long."),
    once: bool = typer.Option(False, help="With --watch: score what is there now, then exit."),
    url: str = typer.Option("127.0.0.1:8001", envvar="TRITONKIT_URL", help="HOST:PORT of Triton."),
    protocol: str = typer.Option("grpc", envvar="TRITONKIT_PROTOCOL", help="grpc or http."),
    version: str = typer.Option("", help="Model version (latest when empty)."),
    concurrency: int = typer.Option(4, envvar="TRITONKIT_CONCURRENCY", help="Requests in flight."),
    batch_size: int | None = typer.Option(None, help="Rows per request (default: max_batch_size)."),
    chunk_rows: int = typer.Option(65_536, help="Rows per checkpoint (resume granularity)."),
    resume: bool = typer.Option(False, help="Continue an interrupted run: finished chunks are kept."),
    shard: str = typer.Option("0/1", envvar="TRITONKIT_SHARD", help="I/N: score the I-th of N shares."),
    id_column: str | None = typer.Option(None, help="Column passed through as the row's id."),
    map: list[str] = typer.Option([], "--map", help="COLUMN=INPUT or COL1,COL2=INPUT (repeatable)."),
    rejects: Path | None = typer.Option(None, help="Rejected rows (default: OUTPUT.rejects.jsonl)."),
    format: str | None = typer.Option(None, help="parquet, csv or jsonl (default: from --output)."),
    threshold: float | None = typer.Option(None, help="Add predicted_label = score >= THRESHOLD."),
    score_output: str | None = typer.Option(None, help="Output that --threshold/--segments read."),
    segments: str | None = typer.Option(None, help="Segment names, e.g. Low,Medium,High."),
    segment_bounds: str | None = typer.Option(None, help="Ascending bounds, e.g. 0.3,0.6."),
    ssl: SslOption = False,
    root_certificates: RootCertificatesOption = None,
    client_cert: ClientCertOption = None,
    client_key: ClientKeyOption = None,
    header: list[str] = typer.Option(
        [],
        "--header",
        help="'NAME=VALUE' or 'NAME: VALUE' sent with every request (repeatable); values are never printed.",
    ),
    report: Path | None = typer.Option(None, help="Also write the report here as JSON."),
    store: str | None = typer.Option(
        None, envvar="TRITONKIT_STORE", help="Also write scored rows to this prediction store (sqlite:///, redis://)."
    ),
    progress: bool = typer.Option(True, help="Progress bar on a terminal."),
    engine: str = typer.Option(
        "local",
        envvar="TRITONKIT_ENGINE",
        help="local (this process) or spark (a Spark job: --input is Parquet, a URI or "
        "table:NAME; --output a Parquet folder or URI).",
    ),
    master: str | None = typer.Option(
        None,
        envvar="TRITONKIT_SPARK_MASTER",
        help="--engine spark: Spark master (default local[*], or spark-submit's).",
    ),
    partitions: int | None = typer.Option(
        None, envvar="TRITONKIT_SPARK_PARTITIONS", help="--engine spark: repartition the input into N first."
    ),
):
    """Score a whole dataset through Triton: resumable, every row exactly once."""
    from tritonkit.clients.score import ScoreOptions, parse_shard, total_rows
    from tritonkit.clients.score import score as run

    headers = _headers(header)
    if (input is None) == (watch is None):
        raise UsageError("give --input (one dataset) or --watch (a folder to follow), not both or neither")
    if engine not in ("local", "spark"):
        raise UsageError(f"--engine is {engine!r}; expected local or spark")
    if engine == "spark" and watch is not None:
        raise UsageError("--watch applies to --engine local only; a Spark job reads --input")
    if engine == "local" and (master or partitions):
        raise UsageError(f"--master {master!r} / --partitions {partitions!r} apply to --engine spark only")
    spark = engine == "spark"  # Spark takes URIs (s3a://...) that Path would mangle
    options = ScoreOptions(
        model=model,
        input=(input if spark else Path(input)) if input else watch,
        output=output if spark else Path(output),
        url=url,
        protocol=protocol,
        version=version,
        concurrency=concurrency,
        batch_size=batch_size,
        chunk_rows=chunk_rows,
        resume=resume,
        shard=parse_shard(shard),
        id_column=id_column,
        maps=list(map),
        rejects=rejects,
        format=format,
        threshold=threshold,
        score_output=score_output,
        segments=[s.strip() for s in segments.split(",")] if segments else [],
        segment_bounds=_floats("--segment-bounds", segment_bounds),
        ssl=ssl,
        root_certificates=root_certificates,
        certificate_chain=client_cert,
        private_key=client_key,
        headers=headers,
        store=store,
    )
    if (client_cert is None) != (client_key is None):
        raise UsageError("--client-cert and --client-key go together")
    if watch is not None:
        _watch(options, watch, Path(output), poll_s, settle_s, once)
        return
    if spark:
        from tritonkit.spark import run_score

        result = run_score(options, master=master, partitions=partitions)
    elif progress and console.is_terminal:
        from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

        columns = [
            TextColumn("scoring"),
            BarColumn(),
            TextColumn("{task.completed:,.0f} rows"),
            TextColumn("{task.fields[rate]}"),
            TimeRemainingColumn(),
        ]
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


def _watch(options, folder: Path, out_dir: Path, poll_s: float, settle_s: float, once: bool) -> None:
    """`score --watch`: one line per scored file; SIGINT/SIGTERM stop it (an interrupted file resumes next time)."""
    from tritonkit.clients.watch import Watcher

    def scored(path: Path, report) -> None:
        typer.echo(
            json.dumps(
                {
                    "file": str(path),
                    "output": report.output,
                    "model_version": report.model_version,
                    "rows_read": report.rows_read,
                    "rows_scored": report.rows_scored,
                    "rows_rejected": report.rows_rejected,
                    "rows_per_s": report.rows_per_s,
                }
            )
        )
        sys.stdout.flush()

    watcher = Watcher(options, folder, out_dir, settle_s=0 if once else settle_s, on_file=scored)
    if once:
        result = watcher.run_once()
    else:

        def _stop(signum, _frame):
            raise KeyboardInterrupt(signal.Signals(signum).name)

        signal.signal(signal.SIGTERM, _stop)
        typer.echo(f"watching {folder} for new files (results in {out_dir}); Ctrl-C stops")
        sys.stdout.flush()
        try:
            result = watcher.run(poll_s)
        except KeyboardInterrupt:
            typer.echo("stopped; an unfinished file resumes on the next start")
            return
    for path, reason in result.failed.items():
        typer.echo(f"failed: {path}: {reason}", err=True)
    if result.failed:
        raise typer.Exit(8)


def _headers(items: list[str]) -> dict[str, str]:
    """`--header` values as a dict; errors name the header's position, never its value (it may be a secret)."""
    headers = {}
    for position, item in enumerate(items, start=1):
        colon, equals = item.find(":"), item.find("=")
        cut = colon if colon >= 0 and (equals < 0 or colon < equals) else equals
        name, value = (item[:cut].strip(), item[cut + 1 :].strip()) if cut >= 0 else ("", "")
        if not name or any(c.isspace() for c in name):
            raise UsageError(
                f"--header number {position} is not 'NAME=VALUE' or 'NAME: VALUE' "
                "(its text is not shown: it may hold a secret)"
            )
        headers[name.lower()] = value  # gRPC (HTTP/2) needs lowercase names; HTTP/1.1 ignores case
    return headers


def _floats(option: str, text: str | None) -> list[float]:
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
    rows = [
        ("rows read", f"{report.rows_read:,}"),
        ("rows scored", f"{report.rows_scored:,}"),
        ("rows rejected", f"{report.rows_rejected:,}"),
        ("resumed from earlier run", f"{report.rows_resumed:,}"),
        ("wall time", f"{report.wall_s:.2f} s"),
        ("rows/s", f"{report.rows_per_s:,.0f}"),
        ("requests", f"{report.requests:,}"),
        ("retries", f"{report.retries:,}"),
    ]
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
