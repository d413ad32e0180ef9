"""The gateway's Prometheus metrics: counted per request in every worker, exposed summed on /metrics.

With several worker processes, prometheus_client's multiprocess mode sums them (`serve` points
PROMETHEUS_MULTIPROC_DIR at a fresh folder before the workers start). Some series are computed when
/metrics is scraped instead of counted: the hit ratio (hits over lookups since start, all workers), and,
read from the store's run records, the age of each model's last batch run and its rejected rows (the
batch Jobs exit 0 on rejects by design: this is where an alert can see them).
"""

from __future__ import annotations

import os
import time

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily

from tritonkit.clients.gateway.outcome import STATUSES

LIVE_BUCKETS_S = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)
STORE_BUCKETS_S = (0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
AGE_BUCKETS_S = (60.0, 600.0, 3600.0, 6 * 3600.0, 24 * 3600.0, 2 * 86400.0, 7 * 86400.0, 30 * 86400.0)
LIVE_ERROR_REASONS = ("unavailable", "overloaded", "deadline", "model_error", "invalid_row")
STORE_OPS = ("read", "write")
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class Metrics:
    """The counters and histograms of one worker; label children are bound once, at start, for every model."""

    def __init__(self, models: tuple[str, ...]):
        self.registry = CollectorRegistry(auto_describe=True)
        self.multiprocess_dir = os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None
        r = self.registry
        lookups = Counter(
            "tritonkit_gateway_lookups",
            "Entities looked up, by model and outcome status.",
            ["model", "status"],
            registry=r,
        )
        live = Histogram(
            "tritonkit_gateway_live_call_seconds",
            "Live Triton calls, seconds.",
            ["model"],
            buckets=LIVE_BUCKETS_S,
            registry=r,
        )
        live_errors = Counter(
            "tritonkit_gateway_live_errors", "Failed live calls, by model and reason.", ["model", "reason"], registry=r
        )
        store = Histogram(
            "tritonkit_gateway_store_seconds",
            "Store round trips, seconds.",
            ["op"],
            buckets=STORE_BUCKETS_S,
            registry=r,
        )
        store_errors = Counter("tritonkit_gateway_store_errors", "Failed store round trips.", ["op"], registry=r)
        ages = Histogram(
            "tritonkit_gateway_feature_age_seconds",
            "Age of the stored features a live call used, seconds.",
            ["model"],
            buckets=AGE_BUCKETS_S,
            registry=r,
        )
        self.requests = Counter(
            "tritonkit_gateway_http_requests", "HTTP requests, by route and status code.", ["route", "code"], registry=r
        )
        self._lookups = {(m, s): lookups.labels(m, s) for m in models for s in STATUSES}
        self._live = {m: live.labels(m) for m in models}
        self._live_errors = {(m, e): live_errors.labels(m, e) for m in models for e in LIVE_ERROR_REASONS}
        self._store = {op: store.labels(op) for op in STORE_OPS}
        self._store_errors = {op: store_errors.labels(op) for op in STORE_OPS}
        self._ages = {m: ages.labels(m) for m in models}
        self._requests: dict[tuple[str, int], Counter] = {}

    def lookup(self, model: str, status: str, n: int = 1) -> None:
        self._lookups[(model, status)].inc(n)

    def live_call(self, model: str, seconds: float) -> None:
        self._live[model].observe(seconds)

    def live_error(self, model: str, reason: str) -> None:
        self._live_errors[(model, reason)].inc()

    def store_call(self, op: str, seconds: float) -> None:
        self._store[op].observe(seconds)

    def store_error(self, op: str) -> None:
        self._store_errors[op].inc()

    def feature_age(self, model: str, seconds: float) -> None:
        self._ages[model].observe(seconds)

    def request(self, route: str, code: int) -> None:
        child = self._requests.get((route, code))
        if child is None:
            child = self._requests[(route, code)] = self.requests.labels(route, str(code))
        child.inc()

    def exposition(self, runs: dict[str, dict | None], store_up: bool, now: float | None = None) -> bytes:
        """The text format: every worker's counters, plus the scrape-time series (`runs`: model -> last run)."""
        if self.multiprocess_dir:
            from prometheus_client.multiprocess import MultiProcessCollector

            base = CollectorRegistry()
            MultiProcessCollector(base, path=self.multiprocess_dir)
        else:
            base = self.registry
        families = list(base.collect())
        families += scrape_time_families(families, runs, store_up, time.time() if now is None else now)
        return generate_latest(_Families(families))


class _Families:
    """What generate_latest needs of a registry: collect()."""

    def __init__(self, families: list):
        self.families = families

    def collect(self):
        return iter(self.families)


def scrape_time_families(families: list, runs: dict[str, dict | None], store_up: bool, now: float) -> list:
    """Hit ratio per model from the lookups counter; last batch run age, time and rows from the run records."""
    lookups: dict[str, dict[str, float]] = {}
    for family in families:
        if family.name == "tritonkit_gateway_lookups":
            for sample in family.samples:
                if sample.name.endswith("_total"):
                    per = lookups.setdefault(sample.labels["model"], {})
                    per[sample.labels["status"]] = per.get(sample.labels["status"], 0.0) + sample.value
    ratio = GaugeMetricFamily(
        "tritonkit_gateway_hit_ratio",
        "Lookups answered from a fresh stored entry, over all lookups, since start.",
        labels=["model"],
    )
    for model, counts in sorted(lookups.items()):
        total = sum(counts.values())
        if total:
            ratio.add_metric([model], counts.get("hit", 0.0) / total)
    age = GaugeMetricFamily(
        "tritonkit_batch_last_run_age_seconds",
        "Seconds since the model's last recorded batch run finished.",
        labels=["model"],
    )
    finished = GaugeMetricFamily(
        "tritonkit_batch_last_run_timestamp_seconds", "When the model's last batch run finished.", labels=["model"]
    )
    rejected = GaugeMetricFamily(
        "tritonkit_batch_rows_rejected", "Rows the model's last batch run rejected.", labels=["model"]
    )
    scored = GaugeMetricFamily(
        "tritonkit_batch_rows_scored", "Rows the model's last batch run scored.", labels=["model"]
    )
    for model, run in sorted(runs.items()):
        if run is None:
            continue
        age.add_metric([model], max(0.0, now - float(run["finished_at"])))
        finished.add_metric([model], float(run["finished_at"]))
        rejected.add_metric([model], float(run.get("rows_rejected") or 0))
        scored.add_metric([model], float(run.get("rows_scored") or 0))
    up = GaugeMetricFamily("tritonkit_gateway_store_up", "1 when the store answered this scrape, else 0.")
    up.add_metric([], 1.0 if store_up else 0.0)
    return [ratio, age, finished, rejected, scored, up]
