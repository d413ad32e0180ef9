"""The headline table of `tritonkit bench`: one row per measured point, formatted for people.

Reads the summary dict that bench.py builds (and writes to summary.json); nothing here measures.
"""

from __future__ import annotations

import numpy as np

CLIENT_BOUND_PERCENT = 90.0

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
    if r.get("client_cpu_ms_per_request") is not None:
        notes.append(f"client {r['client_cpu_ms_per_request']:.3f} ms CPU/request")
    if r["client_bound"]:
        notes.append("client-bound")
    return "; ".join(notes)


def _latencies(r: dict) -> list[str]:
    return [fmt(r["p50_ms"]), fmt(r["p90_ms"]), fmt(r["p99_ms"])]


def _single_stream_rows(summary: dict, single: dict) -> list[list[str]]:
    return [
        [
            "single-stream",
            r["model"],
            r["protocol"],
            "1 user, 1 row",
            fmt(r["predictions_per_s"], 0),
            *_latencies(r),
            _ratio(r["p50_ms"], single.get("p50_ms"), "latency"),
            fmt(r["client_cpu_percent"], 0),
            _closed_loop_note(r),
        ]
        for r in summary["single_stream"]
    ]


def _micro_batch_rows(summary: dict, ref: dict) -> list[list[str]]:
    rows = []
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
                *_latencies(r),
                _ratio(r["predictions_per_s"], ref.get("micro_batch_rows_per_s"), "throughput"),
                fmt(r["client_cpu_percent"], 0),
                _closed_loop_note(r),
            ]
        )
    return rows


def _dynamic_batching_note(db: dict, model: str, p: dict) -> str:
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
    return "; ".join(note)


def _dynamic_batching_rows(summary: dict, single: dict) -> list[list[str]]:
    db = summary.get("dynamic_batching") or {}
    rows = []
    for model, p in (db.get("points") or {}).items():
        scenario = "dynamic batching (perf_analyzer)"
        if "error" in p:
            rows.append([scenario, model, "grpc", *["-"] * 7, "perf_analyzer failed: see report"])
            continue
        rows.append(
            [
                scenario,
                model,
                "grpc",
                f"{p['concurrency']} concurrent, 1 row",
                fmt(p["infer_per_s"], 0),
                *_latencies(p),
                _ratio(p["infer_per_s"], single.get("rows_per_s"), "throughput"),
                fmt(p["client_cpu_percent"], 0),
                _dynamic_batching_note(db, model, p),
            ]
        )
    return rows


def _server_rows(summary: dict, single: dict) -> list[list[str]]:
    rows = []
    for model, sweep in summary["server"].items():
        ok = [p for p in sweep["points"] if p["meets_budget"]]
        p = ok[-1] if ok else sweep["points"][0]
        notes = ["client-bound" if sweep["client_bound"] else "", "" if ok else "budget missed at every rate"]
        rows.append(
            [
                "server (open loop)",
                model,
                "grpc",
                f"max rate with p99 <= {sweep['budget_ms']:g} ms: {fmt(sweep['max_rate_within_budget'], 0)}/s",
                fmt(p["predictions_per_s"], 0),
                *_latencies(p),
                _ratio(p["p50_ms"], single.get("p50_ms"), "latency"),
                fmt(p["client_cpu_percent"], 0),
                "; ".join(n for n in notes if n),
            ]
        )
    return rows


def _offline_rows(summary: dict, ref: dict) -> list[list[str]]:
    return [
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
        for model, r in summary["offline"].items()
    ]


def _reference_rows(ref: dict) -> list[list[str]]:
    if not ref:
        return []
    single = ref["single_row"]
    batch = f"{ref['micro_batch_rows_per_s']:,.0f} / {ref['bulk_rows_per_s']:,.0f}"
    return [
        ["reference", "onnxruntime in-process", "-", "1 row", fmt(single["rows_per_s"], 0), fmt(single["p50_ms"], 3)]
        + ["-", fmt(single["p99_ms"], 3), "1x", "-", ""],
        ["reference", "onnxruntime in-process", "-", "micro-batch / bulk", batch, "-", "-", "-", "1x", "-", ""],
    ]


def headline_rows(summary: dict) -> list[list[str]]:
    """Every scenario's points as rows of HEADLINE_COLUMNS, then the in-process references."""
    ref = summary.get("reference") or {}
    single = ref.get("single_row") or {}
    return [
        *_single_stream_rows(summary, single),
        *_micro_batch_rows(summary, ref),
        *_dynamic_batching_rows(summary, single),
        *_server_rows(summary, single),
        *_offline_rows(summary, ref),
        *_reference_rows(ref),
    ]


def markdown_table(columns: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)
