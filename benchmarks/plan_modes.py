"""The figures of each serving mode (batch, real time, hybrid, near-real-time) for one plan's inputs.

Pure arithmetic on checked inputs; `plan` builds the recommendation on top, `plan_inputs` reads
summaries, stores and gateway metrics, `plan_render` prints and draws.

The rules, stated once:
- Headroom h: every fleet keeps h of its capacity free. Real time: instances = ceil(peak requests/s /
  requests/s per instance / (1 - h)), at least 1 (100/s at 100/s per instance with h = 0.5: 2 instances).
  Batch: a run, start-up included, must finish within (1 - h) of its period. Near-real-time: the
  micro-batch of a peak interval must finish within (1 - h) of the interval.
- Batch scores every entity once per `freshness_s` (the oldest a served prediction may be) on batch-priced
  (spot) instances billed by the second, each instance paying `batch_startup_s` per run. Its predictions
  are read from a store (`store_p99_ms`), and a request finds one with probability `hit_ratio`.
- Real time is always on, at the on-demand price, 24 hours a day; it stores nothing.
- Hybrid: the batch above for every entity, plus a real-time fleet sized for the misses, (1 - hit ratio) x
  the request rate. Its p99 is the real-time p99 once 1 % or more of requests miss, the store's below that.
- Near-real-time: an always-on scorer (on-demand price, `tritonkit score --watch`) rescoring every
  `nrt_interval_s` the entities that changed or were requested (`changed_per_day` in all, peaking with the
  requests); predictions are read from the store.
- Storage: entities x bytes per prediction, a GB = 1e9 bytes, a month = 730 hours, for every mode that stores.
- Basis: an input is measured (bench summary, store, gateway metrics), given (an option) or assumed (the
  kit's default). A figure is assumed when any input it rests on is, else measured when any is, else given:
  "measured" says the figure rests on a measurement and on nothing the kit guessed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace

from tritonkit.errors import UsageError

DAY_S = 86_400.0
HOURS_PER_MONTH = 730.0
GB = 1e9
MEASURED, GIVEN, ASSUMED = "measured", "given", "assumed"
MODES = ("batch", "realtime", "hybrid", "nrt")
TITLES = {"batch": "batch", "realtime": "real time", "hybrid": "hybrid", "nrt": "near-real-time"}
SIMPLICITY = {mode: i for i, mode in enumerate(("batch", "hybrid", "nrt", "realtime"))}  # ties go to the simpler
P99_MISS_SHARE = 0.01  # at or above this share of misses, the p99 request is a real-time call
DEFAULT_PRICE_REALTIME_PER_HOUR = 0.17  # tritonkit bench's defaults: an on-demand 4-vCPU instance ...
DEFAULT_PRICE_BATCH_PER_HOUR = 0.06  # ... and the same instance as spot
HEADROOM_RULE = (
    "every fleet keeps `headroom` of its capacity free: real time = ceil(peak rate / rate per instance / "
    "(1 - headroom)), at least 1; a batch run (start-up included) finishes within (1 - headroom) of its period; "
    "a near-real-time micro-batch at the peak within (1 - headroom) of its interval"
)
_EPS = 1e-9  # ceil(2.0000000000000004) is 3: float noise must not buy an instance


@dataclass(frozen=True)
class Spec:
    """One input: its default (None: required), the check it must pass, its unit."""

    default: float | None
    check: str  # count | nonneg | positive | fraction | headroom
    unit: str
    optional: bool = False  # shown when known, used by no figure


SPECS: dict[str, Spec] = {
    # the workload
    "entities": Spec(None, "count", "entities"),
    "request_rate": Spec(None, "nonneg", "requests/s"),
    "peak_rate": Spec(None, "nonneg", "requests/s"),  # default: request_rate
    "requested_share": Spec(1.0, "fraction", "share of entities per day"),
    "changed_per_day": Spec(None, "nonneg", "entities/day"),  # default: entities x requested_share
    "freshness_s": Spec(DAY_S, "nonneg", "s"),
    "latency_budget_ms": Spec(100.0, "positive", "ms"),
    "nrt_interval_s": Spec(900.0, "positive", "s"),
    "headroom": Spec(0.5, "headroom", "share"),
    "hit_ratio": Spec(1.0, "fraction", "share of requests"),
    "min_coverage": Spec(0.99, "fraction", "share of requests"),
    # the prices
    "price_realtime_per_hour": Spec(DEFAULT_PRICE_REALTIME_PER_HOUR, "nonneg", "$/instance-hour"),
    "price_batch_per_hour": Spec(DEFAULT_PRICE_BATCH_PER_HOUR, "nonneg", "$/instance-hour"),
    "price_storage_gb_month": Spec(0.25, "nonneg", "$/GB-month"),
    # the capacities
    "batch_rows_per_s": Spec(None, "positive", "predictions/s per instance"),
    "batch_startup_s": Spec(60.0, "nonneg", "s per run"),
    "realtime_rps_per_instance": Spec(None, "positive", "requests/s per instance"),
    "realtime_p99_ms": Spec(None, "positive", "ms"),
    "single_stream_p99_ms": Spec(None, "positive", "ms", optional=True),  # one request at a time: the floor
    "store_p99_ms": Spec(5.0, "positive", "ms"),
    "bytes_per_prediction": Spec(100.0, "positive", "bytes"),
}
_CHECKS = {
    "count": (lambda v: v >= 0 and float(v).is_integer(), "a whole number >= 0"),
    "nonneg": (lambda v: v >= 0, "a number >= 0"),
    "positive": (lambda v: v > 0, "a number > 0"),
    "fraction": (lambda v: 0 <= v <= 1, "a fraction in [0, 1]"),
    "headroom": (lambda v: 0 <= v < 1, "a fraction in [0, 1)"),
}


@dataclass(frozen=True)
class Value:
    """An input and where it came from: basis measured, given or assumed; source an option, a default or a field."""

    value: float
    basis: str = GIVEN
    source: str = ""


@dataclass(frozen=True)
class PlanInputs:
    """Every input of a plan, checked: `values` maps each SPECS name to a Value."""

    values: Mapping[str, Value]
    model: str | None = None
    provenance: tuple[str, ...] = ()  # where the measured inputs came from (a bench run, a store, a gateway)

    @classmethod
    def build(cls, model: str | None = None, provenance: tuple[str, ...] = (), **given) -> PlanInputs:
        """Inputs from numbers (basis given) or Values; missing ones take their default (basis assumed)."""
        unknown = sorted(set(given) - set(SPECS))
        if unknown:
            raise UsageError(f"unknown plan input(s) {', '.join(unknown)}; valid ones: {', '.join(SPECS)}")
        values = {}
        for name, spec in SPECS.items():
            raw = given.get(name)
            if raw is None and spec.default is not None:
                raw = Value(spec.default, ASSUMED, "default")
            if raw is not None:
                values[name] = raw if isinstance(raw, Value) else Value(float(raw), GIVEN, name)
        values.setdefault("peak_rate", _derived(values, "request_rate", "= request_rate"))
        if "changed_per_day" not in values and "entities" in values:
            changed = values["entities"].value * values["requested_share"].value
            values["changed_per_day"] = Value(changed, ASSUMED, "default: entities x requested_share")
        inputs = cls(values, model, tuple(provenance))
        inputs.check()
        return inputs

    def check(self) -> None:
        """Raises UsageError naming the first input that is missing or out of range, with its value."""
        for name, spec in SPECS.items():
            if name not in self.values:
                if spec.optional:
                    continue
                raise UsageError(f"plan input {name} ({spec.unit}) is missing; give it or a bench summary")
            value = self.values[name]
            ok, expected = _CHECKS[spec.check]
            if not (isinstance(value.value, int | float) and math.isfinite(value.value) and ok(value.value)):
                raise UsageError(f"{name} is {value.value!r} (from {value.source}); expected {expected}")
        if self.v("peak_rate") < self.v("request_rate"):
            peak = self.values["peak_rate"]
            raise UsageError(
                f"peak_rate is {peak.value:g} (from {peak.source}); expected at least request_rate "
                f"({self.v('request_rate'):g})"
            )

    def v(self, name: str) -> float:
        return self.values[name].value

    def with_rate(self, rate: float) -> PlanInputs:
        """The same inputs at another average request rate, the peak scaled with it."""
        factor = self.v("peak_rate") / self.v("request_rate") if self.v("request_rate") else 1.0
        values = dict(self.values)
        values["request_rate"] = replace(values["request_rate"], value=rate)
        values["peak_rate"] = replace(values["peak_rate"], value=rate * factor)
        return replace(self, values=values)


def _derived(values: dict, name: str, how: str) -> Value | None:
    found = values.get(name)
    return None if found is None else Value(found.value, found.basis, how)


@dataclass(frozen=True)
class Figure:
    """One figure of a mode: value (None: cannot be done), unit, basis and the inputs it rests on."""

    value: float | None
    unit: str
    basis: str
    inputs: tuple[str, ...]


@dataclass(frozen=True)
class ModePlan:
    """One mode's figures, whether it meets the latency, freshness and coverage needs, and notes."""

    mode: str
    figures: dict[str, Figure]
    meets: dict[str, bool]
    notes: tuple[str, ...] = ()

    def value(self, name: str) -> float | None:
        return self.figures[name].value

    @property
    def meets_all(self) -> bool:
        return all(self.meets.values())


class _Figures:
    """Collects a mode's figures, each tagged with the inputs it rests on and their combined basis."""

    def __init__(self, inputs: PlanInputs):
        self.inputs = inputs
        self.figures: dict[str, Figure] = {}

    def add(self, name: str, value: float | None, unit: str, *uses: str) -> float | None:
        names: set[str] = set()
        for use in uses:
            names |= set(self.figures[use].inputs) if use in self.figures else {use}
        bases = [self.inputs.values[n].basis for n in names]
        basis = combined_basis(bases)
        self.figures[name] = Figure(value, unit, basis, tuple(sorted(names)))
        return value


def combined_basis(bases) -> str:
    """assumed if any basis is, else measured if any is, else given."""
    bases = set(bases)
    return ASSUMED if ASSUMED in bases else MEASURED if MEASURED in bases else GIVEN


def _ceil(x: float) -> int:
    return math.ceil(x - _EPS)


def realtime_instances(peak_rate: float, per_instance: float, headroom: float) -> int:
    """ceil(peak / per-instance rate / (1 - headroom)), at least one: an always-on service keeps one up."""
    return max(1, _ceil(peak_rate / per_instance / (1.0 - headroom)))


def _storage(f: _Figures) -> None:
    x = f.inputs
    f.add("storage_gb", x.v("entities") * x.v("bytes_per_prediction") / GB, "GB", "entities", "bytes_per_prediction")
    per_day = f.figures["storage_gb"].value * x.v("price_storage_gb_month") * 24.0 / HOURS_PER_MONTH
    f.add("storage_usd_per_day", per_day, "$/day", "storage_gb", "price_storage_gb_month")


def _no_storage(f: _Figures) -> None:
    f.add("storage_gb", 0.0, "GB")
    f.add("storage_usd_per_day", 0.0, "$/day")


def _batch_part(f: _Figures) -> bool:
    """The batch run over every entity each freshness period; False when no schedule can keep up."""
    x = f.inputs
    period, startup = x.v("freshness_s"), x.v("batch_startup_s")
    compute_s = x.v("entities") / x.v("batch_rows_per_s")
    window = (1.0 - x.v("headroom")) * period - startup
    feasible = period > 0 and window > 0
    uses = ("entities", "batch_rows_per_s", "freshness_s", "headroom", "batch_startup_s")
    instances = max(1, _ceil(compute_s / window)) if feasible else None
    f.add("batch_instances", instances, "instances per run", *uses)
    runs = DAY_S / period if feasible else None
    hours = runs * (instances * startup + compute_s) / 3600.0 if feasible else None
    f.add("batch_hours_per_day", hours, "instance-hours/day", *uses)
    f.add("batch_predictions_per_day", x.v("entities") * runs if feasible else None, "/day", "entities", "freshness_s")
    cost = hours * x.v("price_batch_per_hour") if feasible else None
    f.add("batch_usd_per_day", cost, "$/day", "batch_hours_per_day", "price_batch_per_hour")
    return feasible


def _realtime_part(f: _Figures, share: float, share_input: str | None) -> None:
    """An always-on real-time fleet for `share` of the requests."""
    x = f.inputs
    extra = (share_input,) if share_input else ()
    uses = ("peak_rate", "realtime_rps_per_instance", "headroom", *extra)
    f.add(
        "always_on_instances",
        realtime_instances(x.v("peak_rate") * share, x.v(uses[1]), x.v("headroom")),
        "instances",
        *uses,
    )
    f.add("realtime_hours_per_day", f.figures["always_on_instances"].value * 24.0, "instance-hours/day", *uses)
    cost = f.figures["realtime_hours_per_day"].value * x.v("price_realtime_per_hour")
    f.add("realtime_usd_per_day", cost, "$/day", "realtime_hours_per_day", "price_realtime_per_hour")
    f.add("realtime_predictions_per_day", x.v("request_rate") * share * DAY_S, "/day", "request_rate", *extra)


def _totals(f: _Figures, parts: tuple[str, ...], storage: bool = True) -> None:
    """Sums the parts' hours, costs and predictions; the cost per million predictions and per million requests."""
    x = f.inputs

    def total(suffix: str) -> float | None:
        values = [f.figures[f"{p}_{suffix}"].value for p in parts]
        return None if any(v is None for v in values) else sum(values)

    f.add("compute_hours_per_day", total("hours_per_day"), "instance-hours/day", *(f"{p}_hours_per_day" for p in parts))
    compute = total("usd_per_day")
    usd = None if compute is None else compute + f.figures["storage_usd_per_day"].value
    cost_uses = (*(f"{p}_usd_per_day" for p in parts), "storage_usd_per_day" if storage else "")
    f.add("usd_per_day", usd, "$/day", *(u for u in cost_uses if u))
    f.add("predictions_per_day", total("predictions_per_day"), "/day", *(f"{p}_predictions_per_day" for p in parts))
    made, asked = f.figures["predictions_per_day"].value, x.v("request_rate") * DAY_S
    per_made = usd / made * 1e6 if usd is not None and made else None
    f.add("usd_per_million_predictions", per_made, "$", "usd_per_day", "predictions_per_day")
    per_asked = usd / asked * 1e6 if usd is not None and asked else None
    f.add("usd_per_million_requests", per_asked, "$", "usd_per_day", "request_rate")


def _meets(f: _Figures, freshness_ok: bool) -> dict[str, bool]:
    x = f.inputs
    return {
        "latency": f.figures["p99_ms"].value <= x.v("latency_budget_ms"),
        "freshness": freshness_ok,
        "coverage": f.figures["coverage"].value >= x.v("min_coverage"),
    }


def batch_mode(x: PlanInputs) -> ModePlan:
    f = _Figures(x)
    feasible = _batch_part(f)
    f.add("always_on_instances", 0, "instances")
    _storage(f)
    _totals(f, ("batch",))
    f.add("freshness_s", x.v("freshness_s") if feasible else None, "s", "freshness_s")
    f.add("p99_ms", x.v("store_p99_ms"), "ms", "store_p99_ms")
    f.add("coverage", x.v("hit_ratio"), "share of requests", "hit_ratio")
    notes = () if feasible else ("no batch schedule meets this freshness: start-up and headroom leave no time",)
    return ModePlan("batch", f.figures, _meets(f, feasible), notes)


def realtime_mode(x: PlanInputs) -> ModePlan:
    f = _Figures(x)
    f.add("batch_instances", 0, "instances per run")
    _realtime_part(f, 1.0, None)
    _no_storage(f)
    _totals(f, ("realtime",), storage=False)
    f.add("freshness_s", 0.0, "s")
    f.add("p99_ms", x.v("realtime_p99_ms"), "ms", "realtime_p99_ms")
    f.add("coverage", 1.0, "share of requests")
    return ModePlan("realtime", f.figures, _meets(f, True))


def hybrid_mode(x: PlanInputs) -> ModePlan:
    f = _Figures(x)
    feasible = _batch_part(f)
    miss = 1.0 - x.v("hit_ratio")
    _realtime_part(f, miss, "hit_ratio")
    _storage(f)
    _totals(f, ("batch", "realtime"))
    f.add("freshness_s", x.v("freshness_s") if feasible else None, "s", "freshness_s")
    p99 = "realtime_p99_ms" if miss >= P99_MISS_SHARE else "store_p99_ms"
    f.add("p99_ms", x.v(p99), "ms", "hit_ratio", p99)
    f.add("coverage", 1.0, "share of requests")
    return ModePlan("hybrid", f.figures, _meets(f, feasible))


def nrt_mode(x: PlanInputs) -> ModePlan:
    f = _Figures(x)
    f.add("batch_instances", 0, "instances per run")
    interval = x.v("nrt_interval_s")
    peak_factor = x.v("peak_rate") / x.v("request_rate") if x.v("request_rate") else 1.0
    rows_per_s_at_peak = x.v("changed_per_day") / DAY_S * peak_factor
    uses = ("changed_per_day", "peak_rate", "request_rate", "batch_rows_per_s", "headroom")
    instances = max(1, _ceil(rows_per_s_at_peak / x.v("batch_rows_per_s") / (1.0 - x.v("headroom"))))
    f.add("always_on_instances", instances, "instances", *uses)
    f.add("nrt_hours_per_day", instances * 24.0, "instance-hours/day", *uses)
    f.add(
        "nrt_usd_per_day", instances * 24.0 * x.v("price_realtime_per_hour"), "$/day", *uses, "price_realtime_per_hour"
    )
    f.add("nrt_predictions_per_day", x.v("changed_per_day"), "/day", "changed_per_day")
    _storage(f)
    _totals(f, ("nrt",))
    f.add("freshness_s", interval, "s", "nrt_interval_s")
    f.add("p99_ms", x.v("store_p99_ms"), "ms", "store_p99_ms")
    f.add("coverage", x.v("hit_ratio"), "share of requests", "hit_ratio")
    note = f"rows per peak interval: {rows_per_s_at_peak * interval:,.0f}"
    return ModePlan("nrt", f.figures, _meets(f, interval <= x.v("freshness_s")), (note,))


MODE_FUNCTIONS = {"batch": batch_mode, "realtime": realtime_mode, "hybrid": hybrid_mode, "nrt": nrt_mode}


def costs(inputs: PlanInputs) -> dict[str, float | None]:
    """Each mode's cost per day."""
    return {mode: MODE_FUNCTIONS[mode](inputs).value("usd_per_day") for mode in MODES}
