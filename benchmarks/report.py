"""`tritonkit bench` outputs a person reads: the cost table, the headline, report.md and the PNG plots.

Everything here reads the summary dict that bench.py builds (and writes to summary.json); nothing
here measures.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

CLIENT_BOUND_PERCENT = 90.0
DB_TARGET_RATIO = 2.0  # the project's target: dynamic batching on >= 2x off at 16 single-row clients

HEADLINE_COLUMNS = [
    "scenario",
    "model",
    "protocol",
    "shape",
    "predictions/s",
    "p50 ms",
    "p90 ms",
    "p99 ms",
    "vs onnxruntime",
    "client CPU %",
    "note",
]


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


def fmt(value, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def _ratio(value, reference, kind: str) -> str:
    if not value or not reference:
        return "-"
    ratio = value / reference
    if kind == "latency":
        return f"{ratio:.1f}x latency"
    return f"{ratio:.2f}x throughput" if ratio >= 0.1 else f"{ratio:.2g}x throughput"


def _closed_loop_note(r: dict) -> str:
    notes = []
    if r.get("processes", 1) > 1:
        notes.append(
            f"Locust --processes {r['processes']}" + (" (rerun of a client-bound point)" if r.get("rerun_of") else "")
        )
    if r["client_bound"]:
        notes.append("client-bound")
    return "; ".join(notes)


def headline_rows(summary: dict) -> list[list[str]]:
    ref = summary.get("reference") or {}
    single = ref.get("single_row") or {}
    rows = []
    for r in summary["single_stream"]:
        rows.append(
            [
                "single-stream",
                r["model"],
                r["protocol"],
                "1 user, 1 row",
                fmt(r["predictions_per_s"], 0),
                fmt(r["p50_ms"]),
                fmt(r["p90_ms"]),
                fmt(r["p99_ms"]),
                _ratio(r["p50_ms"], single.get("p50_ms"), "latency"),
                fmt(r["client_cpu_percent"], 0),
                "client-bound" if r["client_bound"] else "",
            ]
        )
    for r in summary["micro_batch"]:
        processes = r.get("processes", 1)
        shape = f"{r['users']} users, {r['batch_rows']} rows" + (f", {processes} processes" if processes > 1 else "")
        rows.append(
            [
                "closed loop",
                r["model"],
                r["protocol"],
                shape,
                fmt(r["predictions_per_s"], 0),
                fmt(r["p50_ms"]),
                fmt(r["p90_ms"]),
                fmt(r["p99_ms"]),
                _ratio(r["predictions_per_s"], ref.get("micro_batch_rows_per_s"), "throughput"),
                fmt(r["client_cpu_percent"], 0),
                _closed_loop_note(r),
            ]
        )
    db = summary.get("dynamic_batching") or {}
    for model, p in (db.get("points") or {}).items():
        if "error" in p:
            rows.append(
                [
                    "dynamic batching (perf_analyzer)",
                    model,
                    "grpc",
                    "-",
                    "-",
                    "-",
                    "-",
                    "-",
                    "-",
                    "-",
                    "perf_analyzer failed: see report",
                ]
            )
            continue
        on = model == db["on"]
        note = [f"batching {'on' if on else 'off'}"]
        if on and db.get("ratio_infer_per_s"):
            note.append(f"on/off {db['ratio_infer_per_s']:.2f}x infer/s")
        if p.get("server_avg_batch"):
            note.append(f"avg batch {p['server_avg_batch']:g}")
        if not p.get("stable", True):
            note.append("unstable")
        if p["client_cpu_percent"] > CLIENT_BOUND_PERCENT:
            note.append("client above 90 % of a core")
        rows.append(
            [
                "dynamic batching (perf_analyzer)",
                model,
                "grpc",
                f"{p['concurrency']} concurrent, 1 row",
                fmt(p["infer_per_s"], 0),
                fmt(p["p50_ms"]),
                fmt(p["p90_ms"]),
                fmt(p["p99_ms"]),
                _ratio(p["infer_per_s"], single.get("rows_per_s"), "throughput"),
                fmt(p["client_cpu_percent"], 0),
                "; ".join(note),
            ]
        )
    for model, sweep in summary["server"].items():
        ok = [p for p in sweep["points"] if p["meets_budget"]]
        p = ok[-1] if ok else sweep["points"][0]
        rows.append(
            [
                "server (open loop)",
                model,
                "grpc",
                f"max rate with p99 <= {sweep['budget_ms']:g} ms: {fmt(sweep['max_rate_within_budget'], 0)}/s",
                fmt(p["predictions_per_s"], 0),
                fmt(p["p50_ms"]),
                fmt(p["p90_ms"]),
                fmt(p["p99_ms"]),
                _ratio(p["p50_ms"], single.get("p50_ms"), "latency"),
                fmt(p["client_cpu_percent"], 0),
                "; ".join(
                    n
                    for n in (
                        "client-bound" if sweep["client_bound"] else "",
                        "" if ok else "budget missed at every rate",
                    )
                    if n
                ),
            ]
        )
    for model, r in summary["offline"].items():
        rows.append(
            [
                "offline (score)",
                model,
                "grpc",
                f"{r['rows']:,} rows",
                fmt(r["rows_per_s"], 0),
                "-",
                "-",
                "-",
                _ratio(r["rows_per_s"], ref.get("bulk_rows_per_s"), "throughput"),
                fmt(r["client_cpu_percent"], 0),
                "client-bound" if r["client_cpu_percent"] > CLIENT_BOUND_PERCENT else "",
            ]
        )
    if ref:
        rows.append(
            [
                "reference",
                "onnxruntime in-process",
                "-",
                "1 row",
                fmt(single["rows_per_s"], 0),
                fmt(single["p50_ms"], 3),
                "-",
                fmt(single["p99_ms"], 3),
                "1x",
                "-",
                "",
            ]
        )
        rows.append(
            [
                "reference",
                "onnxruntime in-process",
                "-",
                "micro-batch / bulk",
                f"{ref['micro_batch_rows_per_s']:,.0f} / {ref['bulk_rows_per_s']:,.0f}",
                "-",
                "-",
                "-",
                "1x",
                "-",
                "",
            ]
        )
    return rows


def markdown_table(columns: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


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


def write_report(summary: dict, out: Path) -> str:
    o = summary["options"]
    parts = [
        f"# tritonkit bench: {o['model']}",
        "",
        f"{summary['environment']['when']} on {summary['environment']['machine']}; server: {summary['server_url']}"
        f" ({'embedded' if summary['embedded'] else 'given URL'}); {o['seconds']:g} s per measurement; "
        f"latency budget {o['budget_ms']:g} ms (p99).",
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
    if summary.get("dynamic_batching"):
        parts += _dynamic_batching_section(summary["dynamic_batching"])
    if summary["server"]:
        parts += ["## Server scenario sweep (dynamic batching on vs off)", ""]
        rows = []
        for model, sweep in summary["server"].items():
            for p in sweep["points"]:
                rows.append(
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
                )
        parts += [
            markdown_table(
                [
                    "model",
                    "target/s",
                    "achieved/s",
                    "p50 ms",
                    "p90 ms",
                    "p99 ms",
                    "failures",
                    "client CPU %",
                    "within budget",
                ],
                rows,
            ),
            "",
        ]
    if summary["cost"]:
        parts += [
            "## Cost per million predictions",
            "",
            f"Prices (USD per instance-hour, from the options): real time {o['price_realtime_per_hour']:g}, "
            f"batch {o['price_batch_per_hour']:g}. Throughputs measured here stand in for that instance.",
            "",
            markdown_table(
                ["mode", "$/hour", "predictions/s", "$ per million"],
                [
                    [
                        r["mode"],
                        fmt(r["price_per_hour"], 3),
                        fmt(r["predictions_per_s"], 0),
                        ("-" if r["usd_per_million"] is None else f"{r['usd_per_million']:.3g}"),
                    ]
                    for r in summary["cost"]
                ],
            ),
            "",
        ]
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


def write_plots(summary: dict, out: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for model, sweep in summary["server"].items():
        points = sweep["points"]
        x = [p["requests_per_s"] for p in points]
        for q, style in (("p50", ":"), ("p90", "--"), ("p99", "-")):
            ax.plot(x, [p[f"{q}_ms"] for p in points], style, marker="o", label=f"{model} {q}")
    ax.axhline(summary["options"]["budget_ms"], color="red", linewidth=0.8, label="budget")
    ax.set_xlabel("achieved predictions/s (open loop)")
    ax.set_ylabel("latency ms")
    ax.set_yscale("log")
    ax.set_title("Latency percentiles vs throughput")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "latency_vs_throughput.png", dpi=100)
    plt.close(fig)

    bars: list[tuple[str, float, str]] = []  # label, value, colour
    for r in summary["single_stream"]:
        bars.append((f"single {r['model']} {r['protocol']}", r["predictions_per_s"], "tab:blue"))
    for r in summary["micro_batch"]:
        procs = f" {r['processes']}p" if r.get("processes", 1) > 1 else ""
        bars.append((f"closed {r['model']} {r['users']}x{r['batch_rows']}{procs}", r["predictions_per_s"], "tab:blue"))
    for model, p in ((summary.get("dynamic_batching") or {}).get("points") or {}).items():
        if "error" not in p:
            bars.append((f"perf_analyzer {model} c{p['concurrency']}", p["infer_per_s"], "tab:green"))
    for model, sweep in summary["server"].items():
        bars.append((f"server {model} max", sweep["max_rate_within_budget"] or 0, "tab:blue"))
    for model, r in summary["offline"].items():
        bars.append((f"offline {model}", r["rows_per_s"], "tab:orange"))
    ref = summary.get("reference")
    if ref:
        bars += [
            ("ort 1 row", ref["single_row"]["rows_per_s"], "tab:gray"),
            ("ort micro-batch", ref["micro_batch_rows_per_s"], "tab:gray"),
            ("ort bulk", ref["bulk_rows_per_s"], "tab:gray"),
        ]
    fig, ax = plt.subplots(figsize=(7, 0.35 * len(bars) + 1.5))
    ax.barh([b[0] for b in bars], [max(b[1], 1e-3) for b in bars], color=[b[2] for b in bars])
    ax.set_xscale("log")
    ax.set_xlabel("predictions/s (log)")
    ax.set_title("Real time vs batch")
    fig.tight_layout()
    fig.savefig(out / "realtime_vs_batch.png", dpi=100)
    plt.close(fig)
    return ["latency_vs_throughput.png", "realtime_vs_batch.png"]
