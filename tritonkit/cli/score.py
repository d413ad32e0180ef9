"""`tritonkit score`: a whole dataset (or each file that lands in a folder) through Triton."""

from __future__ import annotations

import json
import signal
import sys
import time
from pathlib import Path

import typer
from rich.console import Console

from tritonkit.cli.options import endpoint_options, floats, names, option_group
from tritonkit.errors import RowsRejectedError, UsageError

console = Console(stderr=True, soft_wrap=True)  # one line per error, whatever the width


@option_group(endpoint_options(timeout_ms=120_000, retry_s=120.0))
def score(
    model: str = typer.Option(..., "--model", "-m", envvar="TRITONKIT_MODEL"),
    input: str | None = typer.Option(
        None,
        "--input",
        "-i",
        help="Parquet, CSV or JSON Lines file, or a folder of them; local, s3://, gs:// or abfs:// "
        "(--engine spark: also table:NAME).",
    ),
    output: str = typer.Option(
        ...,
        "--output",
        "-o",
        help="Result file (.parquet, .csv or .jsonl), local or s3://, gs://, abfs://; may hold {run_id}, {date}, "
        "{shard}, {shards}; with --watch, the folder of results; --engine spark: a Parquet folder or URI.",
    ),
    watch: Path | None = typer.Option(
        None,
        help="Keep running: score each new file that lands in this folder, once "
        "each, across restarts (instead of --input).",
    ),
    poll_s: float = typer.Option(2.0, help="With --watch: seconds between looks at the folder."),
    settle_s: float = typer.Option(1.0, help="With --watch: a file is taken once unchanged this long."),
    once: bool = typer.Option(False, help="With --watch: score what is there now, then exit."),
    version: str = typer.Option("", envvar="TRITONKIT_VERSION", help="Model version (latest when empty)."),
    concurrency: int = typer.Option(4, envvar="TRITONKIT_CONCURRENCY", help="Requests in flight."),
    batch_size: int | None = typer.Option(None, help="Rows per request (default: max_batch_size)."),
    chunk_rows: int = typer.Option(65_536, help="Rows per checkpoint (resume granularity)."),
    resume: bool = typer.Option(False, help="Continue an interrupted run: finished chunks are kept."),
    shard: str = typer.Option("0/1", envvar="TRITONKIT_SHARD", help="I/N: score the I-th of N shares."),
    id_column: str | None = typer.Option(None, help="Column passed through as the row's id."),
    map: list[str] = typer.Option([], "--map", help="COLUMN=INPUT or COL1,COL2=INPUT (repeatable)."),
    rejects: str | None = typer.Option(None, help="Rejected rows (default: OUTPUT.rejects.jsonl)."),
    rejects_exit_code: int = typer.Option(
        8, help="Exit code of a run that rejected some rows (0: such a run counts as done)."
    ),
    run_id: str | None = typer.Option(
        None, envvar="TRITONKIT_RUN_ID", help="{run_id} in --output (default: the UTC start, 20261126T134500Z)."
    ),
    format: str | None = typer.Option(None, help="parquet, csv or jsonl (default: from --output)."),
    threshold: float | None = typer.Option(None, help="Add predicted_label = score >= THRESHOLD."),
    score_output: str | None = typer.Option(None, help="Output that --threshold/--segments read."),
    segments: str | None = typer.Option(None, help="Segment names, e.g. Low,Medium,High."),
    segment_bounds: str | None = typer.Option(None, help="Ascending bounds, e.g. 0.3,0.6."),
    report: str | None = typer.Option(None, help="Also write the report here as JSON (templates as --output)."),
    store: str | None = typer.Option(
        None, envvar="TRITONKIT_STORE", help="Also write scored rows to this prediction store (sqlite:///, redis://)."
    ),
    features: bool = typer.Option(False, help="With --store: also write each row's model inputs to the feature store."),
    progress: bool = typer.Option(True, help="Progress bar on a terminal."),
    engine: str = typer.Option("local", envvar="TRITONKIT_ENGINE", help="local (this process) or spark (a Spark job)."),
    master: str | None = typer.Option(
        None,
        envvar="TRITONKIT_SPARK_MASTER",
        help="--engine spark: Spark master (default local[*], or spark-submit's).",
    ),
    partitions: int | None = typer.Option(
        None, envvar="TRITONKIT_SPARK_PARTITIONS", help="--engine spark: repartition the input into N first."
    ),
    endpoint=None,
):
    """Score a whole dataset through Triton: resumable, every row exactly once."""
    from tritonkit.clients.score import ScoreOptions, parse_shard

    if not 0 <= rejects_exit_code <= 255:
        raise UsageError(f"--rejects-exit-code {rejects_exit_code}: expected 0 to 255")
    if (input is None) == (watch is None):
        raise UsageError("give --input (one dataset) or --watch (a folder to follow), not both or neither")
    options = ScoreOptions(
        model=model,
        input=input,
        output=output,
        endpoint=endpoint,
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
        segments=names(segments),
        segment_bounds=floats("--segment-bounds", segment_bounds),
        store=store,
        features=features,
        engine=engine,
        spark_master=master,
        spark_partitions=partitions,
        run_id=run_id,
    )
    if watch is not None:
        _watch(options, watch, Path(output), poll_s, settle_s, once)
        return
    result = _run(options, progress and console.is_terminal)
    print_report(result)
    if report:
        from tritonkit.clients.storage import locate

        locate(options.expand(report)).write_bytes(json.dumps(result.to_dict(), indent=2).encode())
    if result.rows_rejected:
        rejected = RowsRejectedError(result.rows_rejected, result.rows_read, result.rejects, rejects_exit_code)
        if rejects_exit_code:
            raise rejected
        console.print(f"[yellow]note:[/yellow] {rejected} (--rejects-exit-code 0: the run counts as done)")


def _run(options, bar: bool):
    from tritonkit.clients.score import score, total_rows

    if not bar or options.engine != "local":
        return score(options)
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    columns = [
        TextColumn("scoring"),
        BarColumn(),
        TextColumn("{task.completed:,.0f} rows"),
        TextColumn("{task.fields[rate]}"),
        TimeRemainingColumn(),
    ]
    with Progress(*columns, console=console) as shown:
        task = shown.add_task("score", total=total_rows(options), rate="")
        started = time.perf_counter()

        def advance(rows: int) -> None:
            done = shown.tasks[0].completed + rows
            shown.update(task, completed=done, rate=f"{done / (time.perf_counter() - started):,.0f} rows/s")

        return score(options, progress=advance)


def _watch(options, folder: Path, out_dir: Path, poll_s: float, settle_s: float, once: bool) -> None:
    """`score --watch`: one line per scored file; SIGINT/SIGTERM stop it (an interrupted file resumes next time)."""
    from tritonkit.clients.watch import Watcher

    if options.engine != "local":
        raise UsageError("--watch applies to --engine local only; a Spark job reads --input")

    def scored(path: Path, report) -> None:
        fields = ("output", "model_version", "rows_read", "rows_scored", "rows_rejected", "rows_per_s")
        typer.echo(json.dumps({"file": str(path), **{k: getattr(report, k) for k in fields}}))
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
        raise typer.Exit(RowsRejectedError.exit_code)


def print_report(report) -> None:
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
