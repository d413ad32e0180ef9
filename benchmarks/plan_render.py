"""A plan as a person or a program reads it: table rows, a JSON-ready dict, a PNG of daily cost against rate.

Every cell of the table carries its basis as a letter (m measured, g given, a assumed); the dict carries
it in full with the inputs each figure rests on. matplotlib is imported only when a PNG is asked for.
"""

from __future__ import annotations

import io
from pathlib import Path

from tritonkit.atomic import write_bytes
from tritonkit.benchmarks.plan import Plan, duration, sweep_rates
from tritonkit.benchmarks.plan_modes import MODES, SPECS, TITLES, Figure, combined_basis, costs
from tritonkit.extras import requires

MODE_COLUMNS = [
    "mode",
    "batch instances",
    "always-on instances",
    "compute h/day",
    "storage GB",
    "$/day",
    "$/M predictions",
    "$/M requests",
    "freshness",
    "p99 ms",
    "coverage",
    "meets",
]
INPUT_COLUMNS = ["input", "value", "unit", "basis", "source"]
LEGEND = "m measured (rests on a measurement and what you gave), g given (on what you gave), a assumed (on a default)"
COLOURS = {"batch": "tab:orange", "realtime": "tab:blue", "hybrid": "tab:green", "nrt": "tab:purple"}
WIDTHS = {"batch": 2.0, "realtime": 2.0, "hybrid": 4.0, "nrt": 1.5}  # equal costs stay visible: wide under narrow


def _tag(*figures: Figure) -> str:
    return combined_basis(f.basis for f in figures)[0]


def _cell(figure: Figure, text: str) -> str:
    return "-" if figure.value is None else f"{text} {_tag(figure)}"


def _number(value: float | None, digits: int = 2) -> str:
    """Fixed digits, or three significant ones for a small non-zero value (a cost of $0.0019 is not $0.00)."""
    if value is None:
        return "-"
    if 0 < abs(value) < 10**-digits * 10:
        return f"{value:.3g}"
    return f"{value:,.{digits}f}"


def plain(value: float) -> str:
    """An input as a person writes it: 1,000,000, 0.25, 22.86."""
    if float(value).is_integer() and abs(value) < 1e15:
        return f"{int(value):,}"
    return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.4g}"


def mode_rows(plan: Plan) -> list[list[str]]:
    """One row per mode, figures tagged with their basis."""
    rows = []
    for mode in plan.modes:
        f = mode.figures
        misses = [need for need, ok in mode.meets.items() if not ok]
        freshness = f["freshness_s"].value
        rows.append(
            [
                TITLES[mode.mode] + (" *" if plan.recommendation.mode == mode.mode else ""),
                _cell(f["batch_instances"], str(f["batch_instances"].value)),
                _cell(f["always_on_instances"], str(f["always_on_instances"].value)),
                _cell(f["compute_hours_per_day"], _number(f["compute_hours_per_day"].value)),
                _cell(f["storage_gb"], _number(f["storage_gb"].value, 3)),
                _cell(f["usd_per_day"], _number(f["usd_per_day"].value)),
                _cell(f["usd_per_million_predictions"], _number(f["usd_per_million_predictions"].value, 4)),
                _cell(f["usd_per_million_requests"], _number(f["usd_per_million_requests"].value, 4)),
                _cell(f["freshness_s"], "per request" if freshness == 0 else duration(freshness)),
                _cell(f["p99_ms"], f"{f['p99_ms'].value:.3g}"),
                _cell(f["coverage"], f"{f['coverage'].value:.1%}"),
                "yes" if not misses else "no: " + ", ".join(misses),
            ]
        )
    return rows


def input_rows(plan: Plan) -> list[list[str]]:
    """One row per input: value, unit, basis and where it came from."""
    return [
        [name, plain(value.value), SPECS[name].unit, value.basis, value.source]
        for name, value in plan.inputs.values.items()
    ]


def _figure(figure: Figure) -> dict:
    return {"value": figure.value, "unit": figure.unit, "basis": figure.basis, "inputs": list(figure.inputs)}


def to_dict(plan: Plan) -> dict:
    """The whole plan, JSON-ready: inputs with their sources, each mode's tagged figures, the decision."""
    x = plan.inputs
    return {
        "model": x.model,
        "provenance": list(x.provenance),
        "rules": plan.rules,
        "inputs": {
            name: {"value": v.value, "unit": SPECS[name].unit, "basis": v.basis, "source": v.source}
            for name, v in x.values.items()
        },
        "modes": {
            m.mode: {
                "title": TITLES[m.mode],
                "figures": {name: _figure(f) for name, f in m.figures.items()},
                "meets": m.meets,
                "meets_all": m.meets_all,
                "notes": list(m.notes),
            }
            for m in plan.modes
        },
        "recommendation": {
            "mode": plan.recommendation.mode,
            "title": TITLES.get(plan.recommendation.mode, None),
            "reasons": list(plan.recommendation.reasons),
        },
        "crossovers": [
            {
                "cheaper_below": c.modes[0],
                "cheaper_above": c.modes[1],
                "request_rate": c.request_rate,
                "usd_per_day": c.usd_per_day,
            }
            for c in plan.crossovers
        ],
    }


def write_png(plan: Plan, path: Path) -> Path:
    """Daily cost of each mode against the request rate (the peak scaled with it), crossovers marked."""
    requires("bench", "matplotlib", what="--png")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rates = sweep_rates(plan.inputs)
    curves = [costs(plan.inputs.with_rate(r)) for r in rates]
    fig, ax = plt.subplots(figsize=(8, 5))
    for mode in MODES:
        points = [(r, c[mode]) for r, c in zip(rates, curves) if c[mode] is not None and c[mode] > 0]
        if not points:
            continue
        fits = plan.mode(mode).meets_all
        label = TITLES[mode] + (
            "" if fits else " (misses " + ", ".join(k for k, ok in plan.mode(mode).meets.items() if not ok) + ")"
        )
        ax.step(
            *zip(*points),
            where="post",
            linestyle="-" if fits else ":",
            color=COLOURS[mode],
            linewidth=WIDTHS[mode],
            label=label,
        )
    for c in plan.crossovers:
        ax.plot(c.request_rate, c.usd_per_day, "kx", markersize=8)
        ax.annotate(
            f"{c.request_rate:,.3g}/s",
            (c.request_rate, c.usd_per_day),
            fontsize=7,
            xytext=(4, 4),
            textcoords="offset points",
        )
    ax.axvline(
        plan.inputs.v("request_rate") or rates[0], color="grey", linewidth=0.8, linestyle="--", label="this workload"
    )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("average requests/s (peak scaled with it)")
    ax.set_ylabel("$ per day")
    ax.set_title(f"Daily cost by mode{' for ' + plan.inputs.model if plan.inputs.model else ''} (x: crossovers)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    write_bytes(Path(path), buffer.getvalue())
    return Path(path)
