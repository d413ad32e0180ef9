"""`tritonkit gateway` (Hybrid serving as an HTTP service) and `tritonkit features push` (the online feature store).

The library does the work (`tritonkit.clients.gateway`, `tritonkit.clients.store_features`); these commands
build its settings and hand off.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

from tritonkit.cli.hybrid import default_store_url
from tritonkit.cli.options import endpoint_options, names, option_group

features_app = typer.Typer(
    no_args_is_help=True, help="The online feature store: features the live fallback scores with."
)

STORE_HELP = (
    "Store URL: redis://host:port/db, rediss://... or sqlite:///abs/path.db (default: sqlite://$PWD/predictions.db)."
)


@option_group(endpoint_options(timeout_ms=500, retry_s=0.0))
def gateway(
    model: list[str] = typer.Option(..., "--model", "-m", help="A model to serve predictions of (repeatable)."),
    store: str | None = typer.Option(None, envvar="TRITONKIT_STORE", show_default=False, help=STORE_HELP),
    host: str = typer.Option("127.0.0.1", help="Address to listen on (0.0.0.0: every interface)."),
    port: int = typer.Option(8080, help="Port to listen on."),
    workers: int = typer.Option(1, help="Worker processes (each with its own store pool and Triton channel)."),
    request_features: Path | None = typer.Option(
        None, help="YAML or JSON file declaring request-time features per model (hour_of_day, day_of_week, ...)."
    ),
    max_age: str | None = typer.Option(
        None, help="Default freshness: entries older than this are stale (90s, 30m, 12h, 2d); default: any unexpired."
    ),
    fallback: str = typer.Option("realtime", help="Default on a miss or stale entry: realtime (score live) or none."),
    write_back: bool = typer.Option(
        True, "--write-back/--no-write-back", help="Store live answers and POSTed features."
    ),
    stale_on_version: bool = typer.Option(
        True,
        "--stale-on-version/--no-stale-on-version",
        help="An entry from an older model version than Triton serves is stale.",
    ),
    version_refresh_s: float = typer.Option(30.0, help="Seconds between re-reads of the models' metadata."),
    store_connections: int = typer.Option(64, help="Redis connections per worker."),
    max_batch_ids: int = typer.Option(1000, help="Most ids in one batchGet."),
    write_timeout_ms: float = typer.Option(1000.0, help="Budget of a write-back, in ms."),
    endpoint=None,
):
    """Serve predictions by entity id over HTTP: stored when fresh, else live on Triton (--timeout-ms is the
    default request budget); /docs, /metrics, /healthz, /readyz."""
    from tritonkit.clients.gateway import GatewaySettings
    from tritonkit.clients.gateway.server import serve
    from tritonkit.clients.store import parse_duration

    settings = GatewaySettings(
        models=tuple(model),
        store=store or default_store_url(),
        endpoint=endpoint,
        host=host,
        port=port,
        workers=workers,
        request_features=str(request_features) if request_features else None,
        max_age_s=parse_duration(max_age, "--max-age") if max_age else None,
        fallback=fallback,
        write_back=write_back,
        stale_on_version=stale_on_version,
        version_refresh_s=version_refresh_s,
        store_connections=store_connections,
        max_batch_ids=max_batch_ids,
        write_timeout_s=write_timeout_ms / 1000,
    )
    serve(settings)


@features_app.command("push")
def push(
    model: str = typer.Option(..., "--model", "-m", envvar="TRITONKIT_MODEL", help="Model whose inputs these are."),
    input: Path = typer.Option(
        ..., "--input", "-i", help="Parquet, CSV or JSON Lines file (or folder), one row per entity."
    ),
    id_column: str = typer.Option(..., envvar="TRITONKIT_ID_COLUMN", help="Column holding the entity id."),
    store: str | None = typer.Option(None, envvar="TRITONKIT_STORE", show_default=False, help=STORE_HELP),
    columns: str | None = typer.Option(
        None, help="Feature columns to push, comma-separated (default: all but the id)."
    ),
    chunk_rows: int = typer.Option(10_000, help="Rows per transaction."),
    json_output: bool = typer.Option(False, "--json", envvar="TRITONKIT_JSON", help="Print JSON for programs."),
):
    """Write features computed elsewhere to the online feature store (merged per entity, with a TTL)."""
    from tritonkit.clients.store import open_store
    from tritonkit.clients.store_features import push_features

    with open_store(store or default_store_url()) as opened:
        report = push_features(opened, model, input, id_column, names(columns), chunk_rows)
    if json_output:
        typer.echo(json.dumps(report.to_dict()))
    else:
        skipped = f"; {report.rows_skipped:,} rows skipped (no id or no value)" if report.rows_skipped else ""
        features = ", ".join(report.features)
        typer.echo(
            f"pushed {report.rows_written:,} feature rows of `{model}` ({features}) to {report.store} "
            f"in {report.wall_s:.1f} s{skipped}"
        )
