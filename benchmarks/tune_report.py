"""The report of `tritonkit tune`: tune.json (every figure), report.md (for people) and throughput_vs_p99.png."""

from __future__ import annotations

import json
from pathlib import Path

from tritonkit import atomic
from tritonkit.benchmarks.headline import fmt, markdown_table

PLOT = "throughput_vs_p99.png"


def _trial_rows(result: dict) -> list[list[str]]:
    winner = (result.get("winner") or {}).get("label")
    rows = []
    for i, trial in enumerate(result["trials"]):
        label = trial["candidate"]["label"]
        note = "starting config" if i == 0 else ""
        if label == winner:
            note = (note + "; winner").lstrip("; ")
        if "error" in trial:
            note = (note + "; failed: " + trial["error"][:100]).lstrip("; ")
        extra = fmt(trial.get("concurrency")) if result["profile"] == "realtime" else fmt(trial.get("requests"))
        rows.append(
            [label, fmt(trial["throughput"], 0), fmt(trial.get("p99_ms")), extra, fmt(trial.get("load_s")), note]
        )
    return rows


def _profile_section(profile: str, result: dict, budget_ms: float) -> list[str]:
    realtime = profile == "realtime"
    what = (
        f"highest single-row infer/s whose p99 stays within {budget_ms:g} ms (perf_analyzer, gRPC, rising concurrency)"
        if realtime
        else "rows/s through `tritonkit score` end to end (read Parquet, send, write Parquet)"
    )
    columns = [
        "config",
        "infer/s within budget" if realtime else "rows/s",
        "p99 ms" if realtime else "request p99 ms",
        "at concurrency" if realtime else "requests",
        "load s",
        "note",
    ]
    if result.get("engine") == "model-analyzer":
        what += (
            ", by Triton's model_analyzer (its reports: `model_analyzer/reports/summaries/`, its CSV "
            "`model_analyzer/results/metrics-model-inference.csv`, its plots `model_analyzer/plots/`); the "
            "side-by-side confirmation by the kit's perf_analyzer run"
        )
    parts = [f"## {profile}", "", f"Measured: {what}.", "", markdown_table(columns, _trial_rows(result)), ""]
    if result.get("stopped"):
        parts += [f"Stopped early ({result['stopped']}): raise --max-minutes to try the rest.", ""]
    confirm = result.get("confirm")
    if confirm:
        runs = ", ".join(f"{k} {[round(v) for v in vs]}" for k, vs in confirm["runs"].items())
        parts += [
            f"**Winner: {result['winner']['label']}**. Side by side, alternating ({runs}): "
            f"{confirm['winner']:,.0f} against {confirm['start']:,.0f} for the starting config: "
            f"**gain {confirm['gain']:.2f}x**."
            if confirm.get("gain")
            else "No gain figure (the start measured 0).",
            "",
        ]
    if result.get("best_is_start"):
        parts += ["**The starting config measured best** of every config tried.", ""]
    parts += _why(result)
    if result.get("written"):
        parts += [f"Written: {result['written']}.", ""]
    elif result.get("kept_start"):
        parts += [f"Kept the starting config: {result['kept_start']}.", ""]
    return parts


def _why(result: dict) -> list[str]:
    """When no config beats the start by 1.3x: whether the configs came close to each other (the config is not
    the limit here) and whether the confirmation moved by more than the configs differ (run-to-run variation)."""
    confirm = result.get("confirm") or {}
    gain = 1.0 if result.get("best_is_start") else confirm.get("gain")
    measured = sorted((t["throughput"] for t in result["trials"] if t["throughput"] > 0), reverse=True)
    if gain is None or gain >= 1.3 or len(measured) < 2:
        return []
    start = result["trials"][0]["throughput"]
    close = sum(1 for value in measured if value >= 0.8 * measured[0])
    lines = []
    if close > 1:
        lines.append(
            f"{close} of the {len(measured)} configs measured came within 20 % of the best ({measured[0]:,.0f}; the "
            f"starting config {start:,.0f}; the slowest {measured[-1]:,.0f}): the config is not what limits "
            "throughput on this machine, where the server shares its cores with the load generator (and with other "
            "work: see the load average above)."
        )
    if confirm and gain < 1.0:
        best = max(result["trials"], key=lambda t: t["throughput"])["throughput"]
        lines.append(
            f"The winner measured {best:,.0f} in the sweep and {confirm['winner']:,.0f} side by side with the start "
            f"({confirm['start']:,.0f}): run-to-run variation here is larger than what the configs change."
        )
    return [f"Why no config does 1.3x better here: {' '.join(lines)}", ""] if lines else []


def write_plot(summary: dict, out: Path) -> str:
    """Throughput against p99 for every config tried, one marker per profile; winners ringed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    profiles = summary["profiles"]
    fig, axes = plt.subplots(1, max(len(profiles), 1), figsize=(6 * max(len(profiles), 1), 4.5), squeeze=False)
    for ax, (profile, result) in zip(axes[0], profiles.items()):
        ok = [t for t in result["trials"] if t.get("p99_ms") is not None]
        ax.scatter([t["p99_ms"] for t in ok], [t["throughput"] for t in ok], s=18, label="configs tried")
        winner = (result.get("winner") or {}).get("label")
        for trial in ok:
            if trial["candidate"]["label"] == winner:
                ax.scatter([trial["p99_ms"]], [trial["throughput"]], s=120, facecolors="none", edgecolors="red")
        if ok:
            first = result["trials"][0]
            if first.get("p99_ms") is not None:
                ax.scatter([first["p99_ms"]], [first["throughput"]], marker="s", color="black", label="start")
        if profile == "realtime":
            ax.axvline(summary["options"]["p99_budget_ms"], color="red", linewidth=0.8, label="budget")
        ax.set_xlabel("p99 ms" if profile == "realtime" else "request p99 ms")
        ax.set_ylabel("infer/s within budget" if profile == "realtime" else "rows/s (score)")
        ax.set_title(f"{summary['model']}: {profile}")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / PLOT, dpi=100)
    plt.close(fig)
    return PLOT


def write_report(summary: dict, out: Path) -> str:
    """Writes tune.json, report.md and the plot into `out`; returns report.md's text."""
    environment = summary["environment"]
    summary["plot"] = write_plot(summary, out)
    parts = [
        f"# tritonkit tune: {summary['model']}",
        "",
        f"{environment['when']}, {environment['cores']} cores; load average {environment['load_average_start']} "
        f"at the start, {environment.get('load_average_end')} at the end; {summary.get('wall_s')} s in all. "
        f"Configs changed on `{summary['tuned_model']}`; starting config: {summary['start_config']['label']}.",
        "",
        "Each config is written with the typed ModelConfig and loaded with explicit model control "
        f"(load: {_mean(summary.get('load_s'))} s on average; a server restart took {summary.get('restart_s')} s).",
        "",
    ]
    for profile, result in summary["profiles"].items():
        parts += _profile_section(profile, result, summary["options"]["p99_budget_ms"])
    parts += [f"![throughput against p99]({PLOT})", ""]
    text = "\n".join(parts)
    atomic.write_text(out / "tune.json", json.dumps(summary, indent=2, default=str))
    atomic.write_text(out / "report.md", text)
    return text


def _mean(values) -> str:
    return f"{sum(values) / len(values):.2f}" if values else "-"
