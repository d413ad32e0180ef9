"""`tritonkit plan`: which mode to pay for (batch, real time, hybrid, near-real-time), from measured numbers.

The workload and the prices are options; the capacities come from a bench summary (`--from`) or by hand;
the hit ratio from `--hit-ratio` or a gateway's metrics; the entry size from `--bytes-per-prediction` or a
store. Everything is computed by `tritonkit.benchmarks.plan`; this module only parses and prints.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

# (parameter, plan input, flag): numbers given by hand; None leaves the input to a measurement or its default.
NUMBERS = (
    ("entities", "entities", "--entities"),
    ("request_rate", "request_rate", "--request-rate"),
    ("peak_rate", "peak_rate", "--peak-rate"),
    ("requested_share", "requested_share", "--requested-share"),
    ("changed_per_day", "changed_per_day", "--changed-per-day"),
    ("budget_ms", "latency_budget_ms", "--budget-ms"),
    ("headroom", "headroom", "--headroom"),
    ("hit_ratio", "hit_ratio", "--hit-ratio"),
    ("min_coverage", "min_coverage", "--min-coverage"),
    ("price_realtime_per_hour", "price_realtime_per_hour", "--price-realtime-per-hour"),
    ("price_batch_per_hour", "price_batch_per_hour", "--price-batch-per-hour"),
    ("price_storage_gb_month", "price_storage_gb_month", "--price-storage-gb-month"),
    ("bytes_per_prediction", "bytes_per_prediction", "--bytes-per-prediction"),
    ("batch_rows_per_s", "batch_rows_per_s", "--batch-rows-per-s"),
    ("batch_startup_s", "batch_startup_s", "--batch-startup-s"),
    ("realtime_rps_per_instance", "realtime_rps_per_instance", "--realtime-rps-per-instance"),
    ("realtime_p99_ms", "realtime_p99_ms", "--realtime-p99-ms"),
    ("store_p99_ms", "store_p99_ms", "--store-p99-ms"),
)
DURATIONS = (("freshness", "freshness_s", "--freshness"), ("nrt_every", "nrt_interval_s", "--nrt-every"))


def _number(flag: str, help: str, required: bool = False):
    return typer.Option(... if required else None, flag, help=help, show_default=False)


def plan(
    summary: Path | None = typer.Option(
        None, "--from", help="A `tritonkit bench` summary.json: batch and real-time capacities, p99s, the model."
    ),
    model: str | None = typer.Option(
        None, "--model", "-m", envvar="TRITONKIT_MODEL", help="The model (default: the summary's)."
    ),
    entities: int = _number("--entities", "Entities that need a prediction.", required=True),
    request_rate: float = _number("--request-rate", "Average requests/s, one prediction each.", required=True),
    peak_rate: float | None = _number("--peak-rate", "Peak requests/s (default: the average)."),
    requested_share: float | None = _number(
        "--requested-share", "Share of entities requested per day, 0 to 1 (default 1)."
    ),
    changed_per_day: float | None = _number(
        "--changed-per-day",
        "Entities changed or requested per day, rescored by near-real-time (default: entities x share).",
    ),
    freshness: str | None = typer.Option(
        None,
        "--freshness",
        help="Oldest a served prediction may be, and so the batch period: 15m, 24h (default), 0 = at request time.",
    ),
    budget_ms: float | None = _number("--budget-ms", "p99 latency budget in ms (default 100)."),
    nrt_every: str | None = typer.Option(
        None, "--nrt-every", help="Near-real-time micro-batch interval (default 15m)."
    ),
    headroom: float | None = _number("--headroom", "Share of each fleet's capacity kept free, 0 to <1 (default 0.5)."),
    hit_ratio: float | None = _number("--hit-ratio", "Share of requests that find a stored prediction (default 1)."),
    gateway_metrics: str | None = typer.Option(
        None, "--gateway-metrics", help="Measure the hit ratio from a gateway's /metrics URL or a saved copy."
    ),
    min_coverage: float | None = _number(
        "--min-coverage", "Share of requests that must get a prediction (default 0.99)."
    ),
    price_realtime_per_hour: float | None = _number(
        "--price-realtime-per-hour", "$ per on-demand instance-hour (default 0.17)."
    ),
    price_batch_per_hour: float | None = _number(
        "--price-batch-per-hour", "$ per batch (spot) instance-hour (default 0.06)."
    ),
    price_storage_gb_month: float | None = _number("--price-storage-gb-month", "$ per GB-month (default 0.25)."),
    bytes_per_prediction: float | None = _number(
        "--bytes-per-prediction", "Bytes per stored prediction (default 100)."
    ),
    store: str | None = typer.Option(
        None, "--store", help="Measure entry size and read p99 from a store: sqlite:///abs/path.db or redis://..."
    ),
    batch_rows_per_s: float | None = _number("--batch-rows-per-s", "Batch predictions/s per instance."),
    batch_startup_s: float | None = _number("--batch-startup-s", "Start-up seconds per batch run (default 60)."),
    realtime_rps_per_instance: float | None = _number(
        "--realtime-rps-per-instance", "Requests/s one real-time instance serves within the budget."
    ),
    realtime_p99_ms: float | None = _number("--realtime-p99-ms", "Real-time p99 at that rate, ms."),
    store_p99_ms: float | None = _number("--store-p99-ms", "p99 of a store read, ms (default 5)."),
    json_output: bool = typer.Option(False, "--json", help="Print the plan as JSON."),
    png: Path | None = typer.Option(None, "--png", help="Write daily cost against request rate, crossovers marked."),
):
    """Which mode to pay for: per-mode instances, hours, storage, cost, freshness and p99, and a recommendation."""
    from tritonkit.benchmarks.plan import make_plan
    from tritonkit.benchmarks.plan_inputs import PlanOptions, parse_duration_s, resolve
    from tritonkit.benchmarks.plan_modes import GIVEN, Value

    arguments = locals()
    given = {name: Value(arguments[p], GIVEN, flag) for p, name, flag in NUMBERS if arguments[p] is not None}
    for p, name, flag in DURATIONS:
        if arguments[p] is not None:
            given[name] = Value(parse_duration_s(arguments[p], flag), GIVEN, flag)
    options = PlanOptions(model=model, summary=summary, gateway_metrics=gateway_metrics, store=store, given=given)
    result = make_plan(resolve(options))
    if png is not None:
        from tritonkit.benchmarks.plan_render import write_png

        write_png(result, png)
    if json_output:
        from tritonkit.benchmarks.plan_render import to_dict

        typer.echo(json.dumps(to_dict(result), indent=2))
    else:
        _print_plan(result, png)


def _print_plan(result, png: Path | None) -> None:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    from tritonkit.benchmarks.plan_modes import TITLES
    from tritonkit.benchmarks.plan_render import INPUT_COLUMNS, LEGEND, MODE_COLUMNS, input_rows, mode_rows

    console = Console(width=160)
    title = f"tritonkit plan{' for ' + result.inputs.model if result.inputs.model else ''}"
    for columns, rows, caption in (
        (MODE_COLUMNS, mode_rows(result), LEGEND),
        (INPUT_COLUMNS, input_rows(result), None),
    ):
        table = Table(title=title if columns is MODE_COLUMNS else "inputs", caption=caption)
        for column in columns:
            table.add_column(column, overflow="fold", no_wrap=column in ("mode", "freshness", "input"))
        for row in rows:
            table.add_row(*(Text(cell) for cell in row))  # sources hold [..]: not rich markup
        console.print(table)
    chosen = result.recommendation.mode
    console.print(f"[bold]recommendation: {TITLES[chosen] if chosen else 'none'}[/bold]", highlight=False)
    for reason in result.recommendation.reasons:
        console.print(f"- {reason}", highlight=False)
    for c in result.crossovers:
        console.print(
            f"crossover: {TITLES[c.modes[1]]} becomes cheaper than {TITLES[c.modes[0]]} at "
            f"{c.request_rate:,.3g} requests/s (${c.usd_per_day:,.2f}/day)",
            highlight=False,
        )
    for line in result.inputs.provenance:
        console.print(f"measured: {line}", highlight=False)
    console.print(f"headroom: {result.rules['headroom']}", highlight=False)
    if png is not None:
        console.print(f"wrote {png}", highlight=False)
