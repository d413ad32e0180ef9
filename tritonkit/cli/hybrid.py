"""`tritonkit lookup` and `tritonkit freshness`: Hybrid serving from the command line.

Exit code 7 (`NotFreshError`) means "no fresh prediction": a lookup that returned nothing, or a
freshness check that found the batch output stale.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import typer

from tritonkit.cli.options import endpoint_options, option_group, read_record
from tritonkit.errors import NotFreshError, UsageError


def default_store_url() -> str:
    """`predictions.db` in the working folder, as a SQLite store URL."""
    return f"sqlite://{Path.cwd() / 'predictions.db'}"


@option_group(endpoint_options(timeout_ms=10_000))
def lookup(
    model: str = typer.Option(..., "--model", "-m", envvar="TRITONKIT_MODEL", help="Model whose prediction to read."),
    entity_id: str = typer.Option(..., "--id", envvar="TRITONKIT_ENTITY_ID", help="Entity id to look up."),
    store: str | None = typer.Option(
        None,
        envvar="TRITONKIT_STORE",
        show_default=False,
        help="Store URL: sqlite:///abs/path.db or redis://host:port/db (default: sqlite://$PWD/predictions.db).",
    ),
    max_age: str | None = typer.Option(
        None,
        envvar="TRITONKIT_LOOKUP_MAX_AGE",
        help="Entries older than this are stale (90s, 30m, 12h, 2d); default: any unexpired entry is fresh.",
    ),
    fallback: str = typer.Option(
        "realtime", envvar="TRITONKIT_FALLBACK", help="On a miss or stale entry: realtime (score live) or none."
    ),
    features: str | None = typer.Option(
        None, envvar="TRITONKIT_FEATURES", help='Features as JSON {"input": value, ...} (or @file.json).'
    ),
    feature_table: Path | None = typer.Option(
        None,
        envvar="TRITONKIT_FEATURE_TABLE",
        help="Parquet or CSV file of features with an id column (default: the store's features).",
    ),
    id_column: str = typer.Option("entity_id", envvar="TRITONKIT_ID_COLUMN", help="Id column of --feature-table."),
    write_back: bool = typer.Option(
        True,
        "--write-back/--no-write-back",
        envvar="TRITONKIT_WRITE_BACK",
        help="Store live results with source realtime.",
    ),
    endpoint=None,
):
    """One entity's prediction from the store, or live when missing or stale (with the store's features unless
    given); prints JSON. --timeout-ms bounds the whole lookup, store calls included."""
    from tritonkit.clients.hybrid import FeatureTable, HybridClient
    from tritonkit.clients.realtime import TritonClient
    from tritonkit.clients.store import open_store, parse_duration

    max_age_s = parse_duration(max_age, "--max-age") if max_age else None
    record = read_record(features, "--features") if features else None
    table = FeatureTable(feature_table, id_column) if feature_table else None
    prediction_store = open_store(store or default_store_url())
    triton = TritonClient(endpoint) if fallback == "realtime" else None
    try:
        client = HybridClient(
            prediction_store,
            triton,
            model,
            max_age_s=max_age_s,
            fallback=fallback,
            write_back=write_back,
            feature_source=table,
            timeout_s=endpoint.timeout_s,
        )
        result = client.lookup(entity_id, record)
    finally:
        prediction_store.close()
        if triton is not None:
            triton.close()
    typer.echo(json.dumps({"model": model, **result.to_dict()}))
    if result.outputs is None:
        raise NotFreshError(f"no fresh prediction of `{model}` for entity `{entity_id}` ({result.status})")


def freshness(
    model: str = typer.Option(..., "--model", "-m", envvar="TRITONKIT_MODEL", help="Model to check."),
    store: str | None = typer.Option(
        None, envvar="TRITONKIT_STORE", show_default=False, help="Store URL (default: sqlite://$PWD/predictions.db)."
    ),
    max_age: str = typer.Option(
        "24h",
        envvar="TRITONKIT_FRESHNESS_MAX_AGE",
        help="The last batch run must have finished within this (90s, 30m, 12h, 2d).",
    ),
    entities: int | None = typer.Option(
        None, envvar="TRITONKIT_ENTITIES", help="All entities, for coverage (default: the last run's count)."
    ),
    feature_table: Path | None = typer.Option(
        None, envvar="TRITONKIT_FEATURE_TABLE", help="Count all entities from this Parquet or CSV file instead."
    ),
    id_column: str = typer.Option("entity_id", envvar="TRITONKIT_ID_COLUMN", help="Id column of --feature-table."),
    min_coverage: float = typer.Option(
        0.0, envvar="TRITONKIT_MIN_COVERAGE", help="Alarm too when coverage is below this fraction (0 to 1; 0: off)."
    ),
    json_output: bool = typer.Option(False, "--json", envvar="TRITONKIT_JSON", help="Print JSON for monitors."),
):
    """The last batch run, its age and coverage; exits 7 when stale, low on coverage or never run."""
    from tritonkit.clients.hybrid import FeatureTable, check_freshness
    from tritonkit.clients.store import open_store, parse_duration

    max_age_s = parse_duration(max_age, "--max-age")
    if entities is not None and feature_table is not None:
        raise UsageError("give either --entities or --feature-table, not both")
    if entities is not None and entities <= 0:
        raise UsageError(f"--entities is {entities}; expected a positive count")
    total = len(FeatureTable(feature_table, id_column)) if feature_table else entities
    with open_store(store or default_store_url()) as prediction_store:
        report = check_freshness(prediction_store, model, max_age_s, total_entities=total, min_coverage=min_coverage)
    if json_output:
        typer.echo(json.dumps(report.to_dict()))
    else:
        _print_report(report)
    if not report.ok:
        raise NotFreshError(f"the predictions of `{model}` are not fresh: {report.status}")


def _print_report(report) -> None:
    from rich.console import Console
    from rich.table import Table

    from tritonkit.clients.store import format_duration

    run = report.last_run
    colour = "green" if report.ok else "red"
    table = Table(title=f"freshness of `{report.model}`", show_header=False)
    table.add_column(style="bold")
    table.add_column()
    table.add_row("status", f"[{colour}]{report.status}[/{colour}]")
    table.add_row("store", report.store)
    if run is not None:
        finished = datetime.fromtimestamp(run["finished_at"], timezone.utc).isoformat(timespec="seconds")
        table.add_row("last run", f"{run['run_id']} (model version {run['model_version'] or '?'})")
        table.add_row("finished", f"{finished}, {format_duration(report.age_s)} ago")
        table.add_row("rows", f"{run['rows_scored']} scored, {run['rows_rejected']} rejected")
    else:
        table.add_row("last run", "none recorded")
    table.add_row("max age", format_duration(report.max_age_s))
    if report.coverage is None:
        table.add_row("coverage", f"{report.fresh_entities} fresh entities (total unknown: pass --entities)")
    else:
        table.add_row("coverage", f"{report.fresh_entities} / {report.total_entities} ({report.coverage:.1%})")
    Console(width=100).print(table)
