"""Which serving mode to pay for: batch, real time, hybrid or near-real-time, from measured capacities.

Pure computation: the workload, the prices and the capacities (a `tritonkit bench` summary's, or given by
hand) in; each mode's figures (`plan_modes`, where the rules are stated), the recommendation with its
reasons and the request rates where one mode's daily cost crosses another's out. Nothing here measures,
reads files or draws: `plan_inputs` reads summaries, stores and gateway metrics, `plan_render` prints and
draws.

    from tritonkit.benchmarks.plan import PlanInputs, make_plan
    plan = make_plan(PlanInputs.build(entities=1_000_000, request_rate=100, batch_rows_per_s=10_000,
                                      realtime_rps_per_instance=100, realtime_p99_ms=20))
    plan.recommendation.mode, plan.mode("realtime").value("usd_per_day")

The recommendation: of the modes that meet the p99 budget, the freshness need and the coverage (the share of
requests that find a prediction), the cheapest per day; within a cent, the simpler (batch, hybrid,
near-real-time, real time). None when no mode meets all three.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from tritonkit.benchmarks.plan_modes import (
    DAY_S,
    HEADROOM_RULE,
    HOURS_PER_MONTH,
    MODE_FUNCTIONS,
    MODES,
    SIMPLICITY,
    TITLES,
    ModePlan,
    PlanInputs,
    Value,
    costs,
)

__all__ = ["Crossover", "Plan", "PlanInputs", "Recommendation", "Value", "crossovers", "make_plan", "recommend"]

SWEEP_SPAN = 1000.0  # the cost sweep runs from rate / SPAN to rate x SPAN
SWEEP_POINTS = 200


@dataclass(frozen=True)
class Recommendation:
    """The mode to pay for (None: no mode meets every need) and why, one sentence a reason."""

    mode: str | None
    reasons: tuple[str, ...]


@dataclass(frozen=True)
class Crossover:
    """Where two modes' daily costs cross as the request rate grows (the peak scaled with it)."""

    modes: tuple[str, str]  # (cheaper below the rate, cheaper above it)
    request_rate: float
    usd_per_day: float


@dataclass(frozen=True)
class Plan:
    """Every mode's figures, the recommendation and the crossover points, for one set of inputs."""

    inputs: PlanInputs
    modes: tuple[ModePlan, ...]
    recommendation: Recommendation
    crossovers: tuple[Crossover, ...] = ()
    rules: dict[str, str] = field(default_factory=dict)

    def mode(self, name: str) -> ModePlan:
        return next(m for m in self.modes if m.mode == name)


def make_plan(inputs: PlanInputs) -> Plan:
    """Every mode's figures for `inputs`, the recommendation and the cost crossovers around the request rate."""
    modes = tuple(MODE_FUNCTIONS[mode](inputs) for mode in MODES)
    rules = {
        "headroom": HEADROOM_RULE,
        "storage": f"entities x bytes per prediction; 1 GB = 1e9 bytes; 1 month = {HOURS_PER_MONTH:g} hours",
        "billing": "by the second; batch runs at the batch (spot) price, always-on fleets at the on-demand price",
        "basis": "measured (bench summary, store, gateway), given (an option) or assumed (a default); "
        "a figure is assumed when any input it rests on is, else measured when any is, else given",
    }
    return Plan(inputs, modes, recommend(inputs, modes), tuple(crossovers(inputs)), rules)


def recommend(inputs: PlanInputs, modes: tuple[ModePlan, ...]) -> Recommendation:
    """The cheapest mode that meets latency, freshness and coverage, with the reasons that decided it."""
    by_mode = {m.mode: m for m in modes}
    reasons = [
        _latency_reason(inputs, modes),
        _freshness_reason(inputs, modes),
        _coverage_reason(inputs, by_mode),
        _share_reason(inputs, by_mode),
        _peak_reason(inputs, by_mode),
    ]
    fit = [m for m in modes if m.meets_all and m.value("usd_per_day") is not None]
    if not fit:
        return Recommendation(None, ("no mode meets the latency budget, the freshness need and the coverage", *reasons))
    fit.sort(key=lambda m: (round(m.value("usd_per_day"), 2), SIMPLICITY[m.mode]))
    best = fit[0]
    choice = (
        f"{TITLES[best.mode]}: the cheapest mode that meets the latency budget, the freshness need and the "
        f"coverage, at {_usd(best.value('usd_per_day'))}/day"
    )
    if len(fit) > 1:
        choice += "; next: " + ", ".join(f"{TITLES[m.mode]} at {_usd(m.value('usd_per_day'))}/day" for m in fit[1:])
    missing = [m for m in modes if not m.meets_all]
    if missing:
        choice += "; ruled out: " + ", ".join(f"{TITLES[m.mode]} ({_failures(m)})" for m in missing)
    return Recommendation(best.mode, (choice, *reasons))


def _failures(mode: ModePlan) -> str:
    return ", ".join(need for need, ok in mode.meets.items() if not ok)


def _usd(value: float | None) -> str:
    if value is None:
        return "-"
    return f"${value:.3g}" if 0 < value < 0.1 else f"${value:,.2f}"


def duration(seconds: float | None) -> str:
    """A short human form: 0s, 45s, 15m, 24h, 2d 4h ("-" for none)."""
    from tritonkit.clients.store import format_duration

    return "-" if seconds is None else format_duration(seconds)


def _latency_reason(x: PlanInputs, modes: tuple[ModePlan, ...]) -> str:
    parts = [
        f"{TITLES[m.mode]} {m.value('p99_ms'):.3g} ms ({m.figures['p99_ms'].basis}, "
        f"{'meets' if m.meets['latency'] else 'over'})"
        for m in modes
    ]
    return f"latency need: p99 within {x.v('latency_budget_ms'):g} ms; delivered: " + ", ".join(parts)


def _freshness_reason(x: PlanInputs, modes: tuple[ModePlan, ...]) -> str:
    need = x.v("freshness_s")
    parts = []
    for m in modes:
        delivered = m.value("freshness_s")
        what = "cannot keep up" if delivered is None else ("per request" if delivered == 0 else duration(delivered))
        parts.append(f"{TITLES[m.mode]} {what} ({'meets' if m.meets['freshness'] else 'too old'})")
    wanted = "computed at request time" if need == 0 else f"at most {duration(need)} old"
    return f"freshness need: predictions {wanted}; delivered: " + ", ".join(parts)


def _coverage_reason(x: PlanInputs, by_mode: dict[str, ModePlan]) -> str:
    hit = x.values["hit_ratio"]
    return (
        f"coverage: {hit.value:.1%} of requests find a stored prediction ({hit.basis}); batch and near-real-time "
        f"answer only those, hybrid and real time all of them (need {x.v('min_coverage'):.1%})"
    )


def _share_reason(x: PlanInputs, by_mode: dict[str, ModePlan]) -> str:
    share = x.v("requested_share")
    computed = by_mode["batch"].value("predictions_per_day")
    text = f"share requested: {share:.0%} of {x.v('entities'):,.0f} entities a day"
    if computed:
        text += f"; batch computes {computed:,.0f} predictions a day for {x.v('request_rate') * DAY_S:,.0f} requests"
        if share < 0.5:
            text += f", {1 - share:.0%} of them for entities nobody asks for"
    return text


def _peak_reason(x: PlanInputs, by_mode: dict[str, ModePlan]) -> str:
    average, peak = x.v("request_rate"), x.v("peak_rate")
    instances = by_mode["realtime"].value("always_on_instances")
    used = average / (instances * x.v("realtime_rps_per_instance"))
    factor = f"{peak / average:.1f}x the average {average:g}/s" if average else "no average traffic"
    return (
        f"traffic peaks: peak {peak:g}/s, {factor}; real time is sized for the peak with {x.v('headroom'):.0%} "
        f"headroom ({instances} instances), so it runs at {used:.0%} of its capacity on average; batch cost does "
        "not depend on traffic"
    )


def crossovers(inputs: PlanInputs, points: int = SWEEP_POINTS) -> list[Crossover]:
    """The request rates, from rate / 1000 to rate x 1000, where the cheaper of two modes changes."""
    rates = sweep_rates(inputs, points)
    curves = [costs(inputs.with_rate(r)) for r in rates]
    found = []
    for i, a in enumerate(MODES):
        for b in MODES[i + 1 :]:
            last, last_sign = None, 0
            for k, cost in enumerate(curves):
                sign = _sign(cost[a], cost[b])
                if sign and last_sign and sign != last_sign:
                    found.append(_bisect(inputs, a, b, rates[last], rates[k], last_sign))
                if sign:
                    last, last_sign = k, sign
    return sorted(found, key=lambda c: c.request_rate)


def sweep_rates(inputs: PlanInputs, points: int = SWEEP_POINTS) -> list[float]:
    """Log-spaced request rates around the plan's own (1/s when it is 0)."""
    centre = inputs.v("request_rate") or 1.0
    low, high = math.log10(centre / SWEEP_SPAN), math.log10(centre * SWEEP_SPAN)
    return [10 ** (low + (high - low) * i / (points - 1)) for i in range(points)]


def _sign(a: float | None, b: float | None) -> int:
    if a is None or b is None or math.isclose(a, b, rel_tol=1e-12, abs_tol=1e-12):
        return 0
    return 1 if a > b else -1


def _bisect(inputs: PlanInputs, a: str, b: str, low: float, high: float, low_sign: int) -> Crossover:
    """Narrows [low, high] to where the order of a and b flips; the level is where the lines meet."""
    for _ in range(60):
        middle = math.sqrt(low * high)
        cost = costs(inputs.with_rate(middle))
        if _sign(cost[a], cost[b]) == low_sign:
            low = middle
        else:
            high = middle
    before, after = costs(inputs.with_rate(low)), costs(inputs.with_rate(high))
    steady = min((a, b), key=lambda m: abs(after[m] - before[m]))  # the line that did not jump
    cheaper_first = (b, a) if low_sign > 0 else (a, b)
    return Crossover(cheaper_first, high, after[steady])
