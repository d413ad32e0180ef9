"""The PNG plots of `tritonkit bench`: latency percentiles against throughput, and real time against batch."""

from __future__ import annotations

from pathlib import Path


def _bars(summary: dict) -> list[tuple[str, float, str]]:
    """(label, predictions/s, colour) for every measured point and the onnxruntime references."""
    bars: list[tuple[str, float, str]] = []
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
    return bars


def write_plots(summary: dict, out: Path) -> list[str]:
    """Writes latency_vs_throughput.png and realtime_vs_batch.png into `out`; returns their names."""
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

    bars = _bars(summary)
    fig, ax = plt.subplots(figsize=(7, 0.35 * len(bars) + 1.5))
    ax.barh([b[0] for b in bars], [max(b[1], 1e-3) for b in bars], color=[b[2] for b in bars])
    ax.set_xscale("log")
    ax.set_xlabel("predictions/s (log)")
    ax.set_title("Real time vs batch")
    fig.tight_layout()
    fig.savefig(out / "realtime_vs_batch.png", dpi=100)
    plt.close(fig)
    return ["latency_vs_throughput.png", "realtime_vs_batch.png"]
