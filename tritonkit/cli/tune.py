"""`tritonkit tune`: measure a model's config for real time or bulk, write the winner, print the gain."""

from __future__ import annotations

import logging
from pathlib import Path

import typer

from tritonkit.extras import requires


def tune(
    model: str = typer.Option(..., "--model", "-m", envvar="TRITONKIT_MODEL", help="Model (or ensemble) to tune."),
    repository: Path = typer.Option(
        Path("model_repository"), "--repository", "-r", envvar="TRITONKIT_MODEL_REPOSITORY", help="Its repository."
    ),
    profile: str = typer.Option(
        "both",
        help="realtime (NAME's own config: highest infer/s within the p99 budget), bulk (a second model "
        "NAME_bulk: highest rows/s through score) or both.",
    ),
    p99_budget_ms: float = typer.Option(20.0, help="Real time: the p99 latency a config must stay within."),
    max_minutes: float = typer.Option(10.0, help="Stop trying new configs after this long (the rest is reported)."),
    quick: bool = typer.Option(False, help="A smaller grid and shorter measurements (a few minutes)."),
    data: Path | None = typer.Option(
        None, help="Rows for the bulk sweep (Parquet/CSV; default: synthesized from the model's metadata)."
    ),
    map: list[str] = typer.Option([], "--map", help="As score's --map, for --data columns named otherwise."),
    out: Path | None = typer.Option(None, help="Report folder (default tune-out/MODEL)."),
    engine: str = typer.Option(
        "auto",
        help="Real-time sweep: model-analyzer (Triton's model_analyzer, local launch of the embedded server's "
        "binary), kit (perf_analyzer driven here) or auto (model-analyzer when installed; kit for ensembles).",
    ),
    dry_run: bool = typer.Option(False, "--dry-run", help="Measure and report, but write nothing to the repository."),
) -> None:
    """Sweep instances x threads x batching (real time, perf_analyzer) or x request size x in flight (bulk,
    score); write the winner and report.md, tune.json and throughput_vs_p99.png."""
    requires("bench", "matplotlib", what="`tritonkit tune`")
    from tritonkit.benchmarks.tune import TuneOptions, gain_lines
    from tritonkit.benchmarks.tune import tune as run

    options = TuneOptions(
        model=model,
        repository=repository,
        profile=profile,
        p99_budget_ms=p99_budget_ms,
        max_minutes=max_minutes,
        quick=quick,
        data=data,
        maps=list(map),
        out=out,
        write=not dry_run,
        engine=engine,
    )
    logging.getLogger("tritonkit.benchmarks").setLevel(logging.INFO)
    summary = run(options, log=typer.echo)
    for line in gain_lines(summary):
        typer.echo(line)
    typer.echo(f"report: {options.out / 'report.md'} (tune.json, throughput_vs_p99.png); {summary['wall_s']:.0f} s")
