"""Hybrid serving: read batch-precomputed predictions from the store, fall back to a live Triton call.

A lookup that finds a fresh entry is a hit. A missing or too old entry (a miss, or stale) is scored live
with the entity's features (given, or read from a feature table file, or else from the store's online
feature store, read in the same round trip as the entry) and, by default, written back with source
"realtime". Store calls are bounded by the lookup's budget (`timeout_s`): a store file another writer
holds locked costs a lookup its budget at most, never SQLite's own 10 s wait. When the store itself
fails, lookups degrade to live calls and say so. The hit rate is the number to watch; `check_freshness`
watches the batch runs that feed the store. `tritonkit gateway` serves the same decisions over HTTP
(`tritonkit.clients.gateway`); this client is the one-process form behind `tritonkit lookup`.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from tritonkit.clients.realtime import TritonClient
from tritonkit.clients.store import Entry, FeatureRow, PredictionStore, StoreError, row_outputs
from tritonkit.errors import ServerError, UsageError

logger = logging.getLogger(__name__)

FALLBACKS = ("realtime", "none")
FEATURE_TABLE_SUFFIXES = (".parquet", ".csv")


@dataclass(frozen=True)
class LookupResult:
    """What one lookup returned.

    status: "hit" (fresh entry), "miss" (none), "stale" (older than max_age_s) or "store_unavailable".
    source: "batch" or "realtime" for a stored entry, "live" when scored now, None when nothing came back.
    """

    entity_id: str
    outputs: dict | None
    source: str | None
    age_s: float | None
    status: str
    model_version: str | None = None
    detail: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class HybridStats:
    """Counters since the client was made; hit_rate = hits / lookups."""

    lookups: int = 0
    hit: int = 0
    miss: int = 0
    stale: int = 0
    fallback: int = 0
    fallback_errors: int = 0
    store_errors: int = 0

    @property
    def hit_rate(self) -> float:
        return self.hit / self.lookups if self.lookups else 0.0

    def to_dict(self) -> dict:
        return {**asdict(self), "hit_rate": round(self.hit_rate, 4)}


class FeatureTable:
    """Entity features from a Parquet or CSV file with an id column, loaded once on first use."""

    def __init__(self, path: str | Path, id_column: str):
        self.path, self.id_column = Path(path), id_column
        if self.path.suffix.lower() not in FEATURE_TABLE_SUFFIXES:
            raise UsageError(f"feature table {self.path} must be one of {', '.join(FEATURE_TABLE_SUFFIXES)}")
        self._frame = None
        self._lock = threading.Lock()

    @property
    def frame(self):
        with self._lock:
            if self._frame is None:
                self._frame = self._load()
        return self._frame

    def _load(self):
        import pandas as pd

        if not self.path.is_file():
            raise UsageError(f"feature table {self.path} does not exist")
        if self.path.suffix.lower() == ".csv":
            frame = pd.read_csv(self.path, dtype={self.id_column: str})
        else:
            frame = pd.read_parquet(self.path)
        if self.id_column not in frame.columns:
            raise UsageError(
                f"feature table {self.path} has no id column `{self.id_column}`; "
                f"its columns: {', '.join(map(str, frame.columns))}"
            )
        frame[self.id_column] = frame[self.id_column].astype(str)
        duplicated = frame[self.id_column].duplicated()
        if duplicated.any():
            raise UsageError(
                f"feature table {self.path} has {int(duplicated.sum())} duplicate id(s) in "
                f"`{self.id_column}`, e.g. {frame[self.id_column][duplicated].iloc[0]!r}"
            )
        logger.info("loaded %d entities from feature table %s", len(frame), self.path)
        return frame.set_index(self.id_column)

    def __len__(self) -> int:
        return len(self.frame)

    def features(self, entity_id: str, columns: list[str]) -> dict | None:
        """The entity's values for `columns` (the model's inputs), or None when the table lacks the entity."""
        frame = self.frame
        if str(entity_id) not in frame.index:
            return None
        missing = [c for c in columns if c not in frame.columns]
        if missing:
            raise UsageError(f"feature table {self.path} lacks model input column(s) {', '.join(missing)}")
        row = frame.loc[str(entity_id), columns]
        return {name: (value.item() if hasattr(value, "item") else value) for name, value in row.items()}


class HybridClient:
    """Store first, live model second.

    Args:
        store: the prediction store (see `open_store`).
        triton: the real-time client for fallbacks; None means no live calls.
        model: the model whose predictions are looked up.
        max_age_s: entries older than this are stale; None: any unexpired entry is fresh.
        fallback: "realtime" (score misses and stale entries live) or "none".
        write_back: store live results with source "realtime".
        feature_source: where features come from when a lookup gives none (default: the store's).
        timeout_s: a lookup's budget for its store calls (default: the Triton client's, else 10 s).
    """

    def __init__(
        self,
        store: PredictionStore,
        triton: TritonClient | None,
        model: str,
        max_age_s: float | None = None,
        fallback: str = "realtime",
        write_back: bool = True,
        feature_source: FeatureTable | None = None,
        timeout_s: float | None = None,
    ):
        if fallback not in FALLBACKS:
            raise UsageError(f"fallback is {fallback!r}; expected one of {', '.join(FALLBACKS)}")
        if fallback == "realtime" and triton is None:
            raise UsageError("fallback `realtime` needs a Triton client; pass one or use fallback `none`")
        if max_age_s is not None and max_age_s <= 0:
            raise UsageError(f"max_age_s is {max_age_s}; expected a positive number of seconds")
        self.store, self.triton, self.model = store, triton, model
        self.max_age_s, self.fallback, self.write_back = max_age_s, fallback, write_back
        self.feature_source = feature_source
        self.timeout_s = timeout_s or (triton.endpoint.timeout_s if triton is not None else 10.0)
        self._counts = HybridStats()
        self._lock = threading.Lock()

    @property
    def stats(self) -> HybridStats:
        return self._counts

    def _count(self, **increments: int) -> None:
        with self._lock:
            values = asdict(self._counts)
            for name, n in increments.items():
                values[name] += n
            self._counts = HybridStats(**values)

    def lookup(self, entity_id: str, features: dict | None = None) -> LookupResult:
        """The entity's prediction: from the store when fresh, else live (per `fallback`)."""
        entity_id = str(entity_id)
        now, deadline = time.time(), time.monotonic() + self.timeout_s
        wants_features = features is None and self.feature_source is None and self.fallback == "realtime"
        try:
            found = self.store.get_many(self.model, [entity_id], features=wants_features, timeout_s=self.timeout_s)[0]
        except StoreError as e:
            logger.warning("prediction store unavailable, falling back to %s: %s", self.fallback, e)
            self._count(lookups=1, store_errors=1)
            return self._live(entity_id, features, "store_unavailable", None, f"store unavailable: {e}", now, deadline)
        entry = found.entry
        if entry is not None and (self.max_age_s is None or entry.age_s(now) <= self.max_age_s):
            self._count(lookups=1, hit=1)
            return LookupResult(entity_id, entry.outputs, entry.source, entry.age_s(now), "hit", entry.model_version)
        status = "miss" if entry is None else "stale"
        self._count(lookups=1, **{status: 1})
        return self._live(entity_id, features, status, entry, None, now, deadline, found.features)

    def _live(
        self,
        entity_id: str,
        features: dict | None,
        status: str,
        stale: Entry | None,
        detail: str | None,
        now: float,
        deadline: float,
        stored: FeatureRow | None = None,
    ) -> LookupResult:
        if self.fallback == "none":
            if stale is not None:
                return LookupResult(
                    entity_id, stale.outputs, stale.source, stale.age_s(now), status, stale.model_version, detail
                )
            return LookupResult(entity_id, None, None, None, status, None, detail)
        try:
            record = self._features(entity_id, features, stored)
            left_ms = max(1.0, (deadline - time.monotonic()) * 1000)
            prediction = self.triton.predict(self.model, record, timeout_ms=left_ms)
        except ServerError as e:
            self._count(fallback_errors=1)
            if stale is None:
                raise
            logger.warning("live call for entity %s failed, returning its stale entry: %s", entity_id, e)
            return LookupResult(
                entity_id,
                stale.outputs,
                stale.source,
                stale.age_s(now),
                status,
                stale.model_version,
                f"live call failed: {e}",
            )
        self._count(fallback=1)
        outputs = row_outputs(prediction.outputs)
        if self.write_back and status != "store_unavailable":
            entry = Entry(entity_id, self.model, prediction.model_version, outputs, time.time(), "realtime")
            try:
                self.store.put_many([entry], timeout_s=max(0.001, deadline - time.monotonic()))
            except StoreError as e:
                logger.warning("could not write the live prediction for entity %s back: %s", entity_id, e)
                self._count(store_errors=1)
                detail = f"write-back failed: {e}"
        return LookupResult(entity_id, outputs, "live", 0.0, status, prediction.model_version, detail)

    def _features(self, entity_id: str, features: dict | None, stored: FeatureRow | None) -> dict:
        if features is not None:
            return features
        if self.feature_source is None and stored is not None:
            inputs = {t.name for t in self.triton.metadata(self.model).inputs}
            return {name: value for name, value in stored.values.items() if name in inputs}
        if self.feature_source is not None:
            inputs = [t.name for t in self.triton.metadata(self.model).inputs]
            found = self.feature_source.features(entity_id, inputs)
            if found is not None:
                return found
            raise UsageError(
                f"entity `{entity_id}` has no fresh prediction and is not in feature table "
                f"{self.feature_source.path}, so it cannot be scored live"
            )
        raise UsageError(
            f"entity `{entity_id}` has no fresh prediction for model `{self.model}` and no features in the store; "
            "pass its features (or a feature table), or push them (`tritonkit features push`), to score it live"
        )


@dataclass(frozen=True)
class FreshnessReport:
    """How fresh a model's stored predictions are.

    status: "fresh"; "stale" (the last batch run finished more than max_age_s ago); "no_run" (none
    recorded); "low_coverage" (fewer entities than min_coverage have a fresh prediction).
    """

    model: str
    store: str
    status: str
    max_age_s: float
    checked_at: float
    last_run: dict | None
    age_s: float | None
    fresh_entities: int
    fresh_by_source: dict
    total_entities: int | None
    coverage: float | None
    min_coverage: float = 0.0

    @property
    def ok(self) -> bool:
        return self.status == "fresh"

    def to_dict(self) -> dict:
        return {**asdict(self), "ok": self.ok}


def check_freshness(
    store: PredictionStore,
    model: str,
    max_age_s: float,
    total_entities: int | None = None,
    min_coverage: float = 0.0,
    now: float | None = None,
) -> FreshnessReport:
    """The last batch run, its age and coverage: entities with a fresh prediction over all entities.

    All entities are `total_entities` when given, else the last run's entity count. Coverage counts
    entries of either source predicted within `max_age_s` (a live write-back is a fresh prediction too),
    capped at 1 when the store knows entities the total does not.
    """
    if not 0.0 <= min_coverage <= 1.0:
        raise UsageError(f"min_coverage is {min_coverage}; expected a fraction from 0 to 1")
    now = time.time() if now is None else now
    run = store.last_run(model)
    by_source = store.count_fresh(model, max_age_s, now=now)
    fresh = sum(by_source.values())
    if total_entities is None and run is not None:
        total_entities = run.get("entity_count")
    coverage = min(1.0, fresh / total_entities) if total_entities else None
    age_s = max(0.0, now - run["finished_at"]) if run else None
    if run is None:
        status = "no_run"
    elif age_s > max_age_s:
        status = "stale"
    elif min_coverage and (coverage is None or coverage < min_coverage):
        status = "low_coverage"
    else:
        status = "fresh"
    return FreshnessReport(
        model, store.url, status, max_age_s, now, run, age_s, fresh, by_source, total_entities, coverage, min_coverage
    )
