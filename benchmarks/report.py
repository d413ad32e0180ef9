"""`tritonkit bench` outputs a person reads: the cost table and report.md (the headline table is in
headline.py, the PNG plots in plots.py).

Everything here reads the summary dict that bench.py builds (and writes to summary.json); nothing
here measures.
"""

from __future__ import annotations

from pathlib import Path

from tritonkit.benchmarks.headline import (
    CLIENT_BOUND_PERCENT,
    HEADLINE_COLUMNS,
    fmt,
    headline_rows,
    markdown_table,
)

__all__ = ["CLIENT_BOUND_PERCENT", "HEADLINE_COLUMNS", "cost_table", "headline_rows", "markdown_table", "write_report"]

DB_TARGET_RATIO = 2.0  # the project's target: dynamic batching on >= 2x off at 16 single-row clients


def cost_table(
    server: dict, offline: dict, budget_ms: float, price_realtime: float, price_batch: float, utilisation: float
) -> list[dict]:
    """Cost per million predictions: always-on real time (max rate within budget, and average load) vs batch."""

    def per_million(price_per_hour: float, per_s: float | None) -> float | None:
        return None if not per_s else price_per_hour / (per_s * 3600.0) * 1e6

    rows = []
    for model, sweep in server.items():
        rate = sweep["max_rate_within_budget"]
        average = rate * utilisation if rate else None
        rows.append(
            {
                "mode": f"real time, always on ({model}, at the max rate within {budget_ms:g} ms p99)",
                "price_per_hour": price_realtime,
                "predictions_per_s": rate,
                "usd_per_million": per_million(price_realtime, rate),
            }
        )
        rows.append(
            {
                "mode": f"real time, always on ({model}, {utilisation:.0%} average utilisation)",
                "price_per_hour": price_realtime,
                "predictions_per_s": average,
                "usd_per_million": per_million(price_realtime, average),
            }
        )
    for model, result in offline.items():
        rows.append(
            {
                "mode": f"scheduled batch ({model}, tritonkit score)",
                "price_per_hour": price_batch,
                "predictions_per_s": result["rows_per_s"],
                "usd_per_million": per_million(price_batch, result["rows_per_s"]),
            }
        )
    return rows


def _dynamic_batching_section(db: dict) -> list[str]:
    parts = ["## Dynamic batching on vs off (perf_analyzer)", ""]
    if db.get("skipped"):
        return parts + [f"Not measured: {db['skipped']}", ""]
    rows = []
    for model, p in db["points"].items():
        if "error" in p:
            rows.append([model, "-", "-", "-", "-", "-", "-", "-", "-", "-", f"failed: {p['error'][-200:]}"])
            continue
        rows.append(
            [
                model,
                "on" if model == db["on"] else "off",
                fmt(p["infer_per_s"], 0),
                fmt(p["p50_ms"]),
                fmt(p["p90_ms"]),
                fmt(p["p99_ms"]),
                fmt(p["server_queue_ms"]),
                fmt(p["server_compute_ms"]),
                fmt(p["server_avg_batch"]),
                fmt(p["client_cpu_percent"], 0),
                "yes" if p.get("stable", True) else f"no (at {p['stability_percent']:g} %)",
            ]
        )
    ratio = db.get("ratio_infer_per_s")
    verdict = (
        f"**on/off: {ratio:.2f}x infer/s** (target >= {DB_TARGET_RATIO:g}x: "
        f"{'met' if ratio >= DB_TARGET_RATIO else 'not met'}); p99 on/off {db['ratio_p99']:.2f}x."
        if ratio
        else "No on/off ratio (no `_nobatch` twin served, or a run failed)."
    )
    first = next(iter(db["points"].values()))
    return parts + [
        f"{db['tool']}, gRPC, {db['concurrency']} concurrent clients of one row each (`-b 1`), time windows, "
        f"{db['rounds']} round(s) alternating the order; the same single-row inputs as the Locust users. "
        "Server queue and compute are Triton's own averages per request; avg batch = inferences / executions.",
        "",
        markdown_table(
            [
                "model",
                "dynamic batching",
                "infer/s",
                "p50 ms",
                "p90 ms",
                "p99 ms",
                "server queue ms",
                "server compute ms",
                "avg batch",
                "perf_analyzer CPU %",
                "stable",
            ],
            rows,
        ),
        "",
        verdict,
        "",
        f"`{first.get('command', '')}`",
        "",
    ]


def _intro(summary: dict) -> list[str]:
    o = summary["options"]
    return [
        f"# tritonkit bench: {o['model']}",
        "",
        f"{summary['environment']['when']} on {summary['environment']['machine']}; server: {summary['server_url']}"
        f" ({'embedded' if summary['embedded'] else 'given URL'}); {o['seconds']:g} s per measurement; "
        f"latency budget {o['budget_ms']:g} ms (p99); load average {summary['environment'].get('load_average')}.",
        "",
        "`" + summary["command"] + "`",
        "",
        "## Headline",
        "",
        markdown_table(HEADLINE_COLUMNS, headline_rows(summary)),
        "",
        "single-stream and closed loop: Locust users waiting for each answer (closed loop, under-reports latency "
        "at saturation). dynamic batching: perf_analyzer, closed loop at a fixed concurrency. server: open-loop "
        "Poisson arrivals, latency from the scheduled arrival. `_nobatch` is the same model without "
        "dynamic_batching. vs onnxruntime: latency ratio (Triton / in-process) or throughput ratio.",
        "",
    ]


def _server_section(summary: dict) -> list[str]:
    rows = [
        [
            model,
            fmt(p["target_rate"], 0),
            fmt(p["requests_per_s"], 0),
            fmt(p["p50_ms"]),
            fmt(p["p90_ms"]),
            fmt(p["p99_ms"]),
            p["failures"],
            fmt(p["client_cpu_percent"], 0),
            "yes" if p["meets_budget"] else "no",
        ]
        for model, sweep in summary["server"].items()
        for p in sweep["points"]
    ]
    columns = ["model", "target/s", "achieved/s", "p50 ms", "p90 ms", "p99 ms", "failures", "client CPU %"]
    return [
        "## Server scenario sweep (dynamic batching on vs off)",
        "",
        markdown_table([*columns, "within budget"], rows),
        "",
    ]


def _cost_section(summary: dict) -> list[str]:
    o = summary["options"]
    rows = [
        [
            r["mode"],
            fmt(r["price_per_hour"], 3),
            fmt(r["predictions_per_s"], 0),
            ("-" if r["usd_per_million"] is None else f"{r['usd_per_million']:.3g}"),
        ]
        for r in summary["cost"]
    ]
    return [
        "## Cost per million predictions",
        "",
        f"Prices (USD per instance-hour, from the options): real time {o['price_realtime_per_hour']:g}, "
        f"batch {o['price_batch_per_hour']:g}. Throughputs measured here stand in for that instance.",
        "",
        markdown_table(["mode", "$/hour", "predictions/s", "$ per million"], rows),
        "",
    ]


def write_report(summary: dict, out: Path) -> str:
    """Writes report.md into `out` and returns its text."""
    parts = _intro(summary)
    if summary.get("dynamic_batching"):
        parts += _dynamic_batching_section(summary["dynamic_batching"])
    if summary["server"]:
        parts += _server_section(summary)
    if summary["cost"]:
        parts += _cost_section(summary)
    parts += [
        "## Client capacity",
        "",
        _client_capacity(summary),
        "",
        "## Plots",
        "",
        "![latency vs throughput](latency_vs_throughput.png)",
        "",
        "![real time vs batch](realtime_vs_batch.png)",
        "",
    ]
    text = "\n".join(parts)
    (out / "report.md").write_text(text)
    return text


def _client_capacity(summary: dict) -> str:
    bound = summary["client_bound"]
    reruns = [r for r in summary["micro_batch"] if r.get("processes", 1) > 1]
    text = (
        f"**Client-bound**: the load generator used more than {CLIENT_BOUND_PERCENT:g} % of the cores it had in: "
        f"{', '.join(bound)}. Those figures measure the client, not the server."
        if bound
        else f"No Locust scenario had the client above {CLIENT_BOUND_PERCENT:g} % of its cores."
    )
    costs = [r for r in summary["single_stream"] + summary["micro_batch"] if r.get("client_cpu_ms_per_request")]
    if costs:
        text += (
            " The client's own CPU per request (the users' accounting, client_cost.py): "
            + ", ".join(
                f"{r['scenario']} {r['client_cpu_ms_per_request']:.3f} ms (mean latency {r['mean_ms']:.2f} ms)"
                for r in costs
            )
            + "."
        )
    if reruns:
        text += (
            " Closed-loop points run again with Locust's multi-process mode (`locust --processes N`, "
            "figures from its CSV): "
            + ", ".join(
                f"{r['scenario']} ({r['processes']} processes, {r['predictions_per_s']:,.0f}/s)" for r in reruns
            )
            + "."
        )
    elif bound:
        text += " Rerun with `--processes N` (Locust's multi-process mode) or from another machine."
    return text
