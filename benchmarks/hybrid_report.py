"""The hybrid scenario's outputs a person reads: the comparison table and the cost view (hybrid.md).

Cost: a million requests served at a point's measured throughput cost price_per_hour / (requests/s x 3600)
x 1e6 on an always-on instance; the hit ratio (the gateway's own measurement) says how many of them were
answered from the store and how many needed a live prediction. Precomputing the hits costs the batch price
at the batch run's measured rows/s, per million entities per run.
"""

from __future__ import annotations

from pathlib import Path

COLUMNS = [
    "service",
    "hits (mix)",
    "hits (measured)",
    "requests/s",
    "p50 ms",
    "p99 ms",
    "server CPU µs/request",
    "non-200",
    "USD per million requests",
    "load (1 min)",
]


def fmt(value, digits: int = 2) -> str:
    if value is None or value != value:  # None or NaN
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def markdown_table(columns: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    return "\n".join(lines + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows])


def per_million(price_per_hour: float, per_s: float | None) -> float | None:
    return price_per_hour / (per_s * 3600.0) * 1e6 if per_s else None


def cost_rows(summary: dict, price_realtime: float, price_batch: float) -> list[dict]:
    """One row per point (always-on price at its throughput), and one for precomputing the batch."""
    rows = []
    for point in summary["points"]:
        ratio = point.get("measured_hit_ratio")
        ratio = point["hit_ratio"] if ratio is None else ratio
        rows.append(
            {
                "mode": f"{point['service']} at {point['hit_ratio']:.0%} hits",
                "hit_ratio": ratio,
                "live_predictions_per_million_requests": round((1.0 - ratio) * 1e6),
                "price_per_hour": price_realtime,
                "requests_per_s": point["requests_per_s"],
                "usd_per_million": per_million(price_realtime, point["requests_per_s"]),
            }
        )
    rows_per_s = (summary.get("batch") or {}).get("rows_per_s")
    rows.append(
        {
            "mode": "nightly batch that precomputes the hits (tritonkit score --store --features)",
            "hit_ratio": None,
            "live_predictions_per_million_requests": None,
            "price_per_hour": price_batch,
            "requests_per_s": rows_per_s,
            "usd_per_million": per_million(price_batch, rows_per_s),
        }
    )
    return rows


def table_rows(summary: dict) -> list[list[str]]:
    cost = {row["mode"]: row for row in summary.get("cost", [])}
    rows = []
    for p in summary["points"]:
        statuses = p.get("statuses", {})
        bad = sum(v for k, v in statuses.items() if k != "200") + p.get("errors", 0)
        measured = p.get("measured_hit_ratio")
        usd = cost.get(f"{p['service']} at {p['hit_ratio']:.0%} hits", {}).get("usd_per_million")
        rows.append(
            [
                p["service"],
                f"{p['hit_ratio']:.0%}",
                "-" if measured is None else f"{measured:.1%}",
                fmt(p["requests_per_s"], 0),
                fmt(p["p50_ms"]),
                fmt(p["p99_ms"]),
                fmt(p.get("server_cpu_us_per_request"), 0),
                str(bad),
                fmt(usd, 4),
                fmt(p.get("load_average_1m")),
            ]
        )
    return rows


def ratios(summary: dict) -> list[str]:
    """Gateway against seed-style, per hit ratio: throughput ratio and p99s."""
    by = {(p["service"], p["hit_ratio"]): p for p in summary["points"]}
    lines = []
    for (service, ratio), gateway in by.items():
        seed = by.get(("seed", ratio))
        if service != "gateway" or seed is None or not seed["requests_per_s"]:
            continue
        lines.append(
            f"- {ratio:.0%} hits: gateway {gateway['requests_per_s'] / seed['requests_per_s']:.2f} x the seed-style "
            f"service's requests/s; p99 {gateway['p99_ms']:.2f} ms against {seed['p99_ms']:.2f} ms"
        )
    return lines


def write_markdown(summary: dict, path: Path) -> None:
    batch = summary.get("batch") or {}
    text = [
        "# Hybrid: the gateway against a seed-style service",
        "",
        f"{summary['clients']} concurrent clients (closed loop, benchmarks/http_load.py), {summary['seconds']:g} s per "
        f"point; {summary['entities']:,} entities with a batch prediction and as many with features only. "
        f"The batch run: {fmt(batch.get('rows_scored'))} rows at {fmt(batch.get('rows_per_s'), 0)} rows/s.",
        "",
        markdown_table(COLUMNS, table_rows(summary)),
        "",
        *ratios(summary),
        "",
        "## Cost",
        "",
        markdown_table(
            ["mode", "hits", "live predictions per million requests", "USD/hour", "requests/s", "USD per million"],
            [
                [
                    r["mode"],
                    "-" if r["hit_ratio"] is None else f"{r['hit_ratio']:.1%}",
                    fmt(r["live_predictions_per_million_requests"]),
                    fmt(r["price_per_hour"]),
                    fmt(r["requests_per_s"], 0),
                    fmt(r["usd_per_million"], 4),
                ]
                for r in summary.get("cost", [])
            ],
        ),
    ]
    path.write_text("\n".join(text) + "\n")
