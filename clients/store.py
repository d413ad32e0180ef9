"""The prediction store of Hybrid serving: batch runs write predictions, applications read them back.

An entry is one entity's latest prediction from one model, with its model version, time and source
("batch" or "realtime"). Entries expire per source (batch 24 h, real time 1 h by default); an expired
entry reads as absent. Beside the predictions, the online feature store: per entity, the features the
model takes (`FeatureRow`, written by `score --features` and `tritonkit features push`), with the time
they were written and their own TTL (7 days by default), so a live fallback scores exactly what the batch
scored. Two implementations share one protocol: SQLite (one file, the embedded default, in
`store_sqlite`) and Redis (the production choice, in `store_redis`); `open_store(url)` picks one, and
`store_async.open_async_store(url)` gives the gateway's asyncio form of either.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol, runtime_checkable
from urllib.parse import parse_qsl, urlencode

import numpy as np
from orjson import loads as json_loads  # noqa: F401 (for the stores: several times faster than json on the hit path)

from tritonkit.errors import StoreError, StoreUnavailableError, UsageError  # noqa: F401 (re-exported)

SOURCES = ("batch", "realtime")
DEFAULT_TTL_S = {"batch": 24 * 3600.0, "realtime": 3600.0}
DEFAULT_FEATURES_TTL_S = 7 * 24 * 3600.0
SCHEMES = ("sqlite", "redis", "rediss")
TTL_PARAMS = {"batch_ttl": "batch", "realtime_ttl": "realtime"}
FEATURES_TTL_PARAM = "features_ttl"
RESERVED_FEATURE_PREFIX = "@"  # `@at` holds a feature row's time in the Redis hash
RUN_KEYS = (
    "run_id",
    "model",
    "model_version",
    "started_at",
    "finished_at",
    "rows_scored",
    "rows_rejected",
    "entities",
    "entity_count",
)
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd])\s*$")
_UNIT_S = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


@dataclass(frozen=True)
class Entry:
    """One entity's prediction from one model, as the store holds it.

    Args:
        entity_id: the entity (customer, card, ...) the prediction is for.
        model: the Triton model name.
        model_version: the served version that computed it.
        outputs: output name -> JSON value (a number, a string or a list).
        predicted_at: when it was computed, in unix seconds.
        source: "batch" (a bulk run) or "realtime" (a live call written back).
    """

    entity_id: str
    model: str
    model_version: str
    outputs: dict
    predicted_at: float
    source: str

    def __post_init__(self):
        if self.source not in SOURCES:
            raise UsageError(f"entry source is {self.source!r}; expected one of {', '.join(SOURCES)}")

    def outputs_json(self) -> str:
        """The outputs as JSON; raises UsageError naming the entity when they cannot be serialised."""
        try:
            return json.dumps(self.outputs, default=_plain, separators=(",", ":"))
        except (TypeError, ValueError) as e:
            raise UsageError(
                f"outputs of entity `{self.entity_id}` (model `{self.model}`) are not JSON-serialisable: {e}"
            ) from e

    def age_s(self, now: float) -> float:
        return max(0.0, now - self.predicted_at)

    def to_dict(self) -> dict:
        return {
            "entity_id": self.entity_id,
            "model": self.model,
            "model_version": self.model_version,
            "outputs": self.outputs,
            "predicted_at": self.predicted_at,
            "source": self.source,
        }


@dataclass(frozen=True)
class FeatureRow:
    """One entity's features for one model, as the online feature store holds them.

    Args:
        entity_id: the entity the features describe.
        model: the model whose inputs they are (the feature namespace).
        values: feature (input) name -> JSON value (a number, a string, a list).
        updated_at: when they were written, in unix seconds.
    """

    entity_id: str
    model: str
    values: dict
    updated_at: float

    def __post_init__(self):
        for name in self.values:
            if not isinstance(name, str) or not name or name.startswith(RESERVED_FEATURE_PREFIX):
                raise UsageError(
                    f"feature name {name!r} of entity `{self.entity_id}` cannot be stored: "
                    f"it must be non-empty text not starting with {RESERVED_FEATURE_PREFIX!r}"
                )

    def encoded(self) -> dict[str, str]:
        """Each value as JSON text; raises UsageError naming the entity and feature when one cannot be."""
        encoded = {}
        for name, value in self.values.items():
            try:
                encoded[name] = json.dumps(_plain(value), separators=(",", ":"), allow_nan=False)
            except (TypeError, ValueError) as e:
                raise UsageError(
                    f"feature `{name}` of entity `{self.entity_id}` (model `{self.model}`) is not storable as JSON: {e}"
                ) from e
        return encoded

    def age_s(self, now: float) -> float:
        return max(0.0, now - self.updated_at)


@dataclass(frozen=True)
class Found:
    """What one store read found for one entity: its prediction entry and its features (each may be None)."""

    entity_id: str
    entry: Entry | None = None
    features: FeatureRow | None = field(default=None)


@runtime_checkable
class PredictionStore(Protocol):
    """What every prediction store does. Failures to reach it raise StoreUnavailableError."""

    url: str
    ttl_s: dict[str, float]
    features_ttl_s: float

    def put_many(
        self, entries: list[Entry], features: list[FeatureRow] | None = None, timeout_s: float | None = None
    ) -> None:
        """Writes all entries (and feature rows) or none of them, in one transaction; the newest write wins.
        `timeout_s` bounds the wait for a lock held by another writer (SQLite)."""

    def get(self, model: str, entity_id: str, timeout_s: float | None = None) -> Entry | None:
        """The entity's entry, or None when there is none or it has expired."""

    def get_many(
        self, model: str, entity_ids: list[str], features: bool = False, timeout_s: float | None = None
    ) -> list[Found]:
        """Entries (and, with `features`, feature rows) of many entities in one round trip, in order."""

    def put_features(self, rows: list[FeatureRow], timeout_s: float | None = None) -> None:
        """Merges each row's values over the entity's stored features, all rows or none; renews their TTL."""

    def record_run(self, model: str, run: dict) -> None:
        """Stores the summary of a finished batch run (see `normalize_run`)."""

    def last_run(self, model: str) -> dict | None:
        """The summary of the batch run that finished last, or None when no run was recorded."""

    def count_fresh(self, model: str, max_age_s: float, now: float | None = None) -> dict[str, int]:
        """Unexpired entries predicted within `max_age_s` of `now`, counted per source."""

    def close(self) -> None:
        """Releases connections; the store is not used afterwards."""


def format_duration(seconds: float) -> str:
    """A short human form, the inverse of `parse_duration`: 45s, 12m 5s, 3h 12m, 2d 4h."""
    seconds = int(round(seconds))
    for unit, size, sub, sub_size in (("d", 86400, "h", 3600), ("h", 3600, "m", 60), ("m", 60, "s", 1)):
        if seconds >= size:
            rest = (seconds % size) // sub_size
            return f"{seconds // size}{unit}" + (f" {rest}{sub}" if rest else "")
    return f"{seconds}s"


def parse_duration(text: str, option: str = "duration") -> float:
    """Seconds in `text`: a positive number with a unit, like 90s, 30m, 12h, 2d (or 1.5h)."""
    match = _DURATION.match(str(text))
    seconds = float(match.group(1)) * _UNIT_S[match.group(2)] if match else 0.0
    if seconds <= 0:
        raise UsageError(
            f"{option} is {text!r}; expected a positive number with a unit s, m, h or d, like 90s, 30m, 12h or 2d"
        )
    return seconds


def open_store(url: str, ttl_s: dict[str, float] | None = None) -> PredictionStore:
    """Opens the store at `url` (connections are made on first use, so this only checks the URL).

    `sqlite:///abs/path.db` (or `sqlite://relative/path.db`), `redis://host:port/db`, `rediss://...`
    for TLS. TTLs come from `ttl_s` ({"batch": s, "realtime": s}) or the URL's query,
    `?batch_ttl=24h&realtime_ttl=1h&features_ttl=7d`; the defaults are DEFAULT_TTL_S and
    DEFAULT_FEATURES_TTL_S.
    """
    parsed = parse_store_url(url, ttl_s)
    if parsed.kind == "sqlite":
        from tritonkit.clients.store_sqlite import SQLiteStore

        return SQLiteStore(parsed.location, ttl_s=parsed.ttl_s, features_ttl_s=parsed.features_ttl_s)
    from tritonkit.clients.store_redis import RedisStore

    return RedisStore(parsed.location, ttl_s=parsed.ttl_s, features_ttl_s=parsed.features_ttl_s)


@dataclass(frozen=True)
class StoreURL:
    """A checked store URL: kind ("sqlite" or "redis"), location (the SQLite path or the Redis URL), TTLs."""

    kind: str
    location: str
    ttl_s: dict
    features_ttl_s: float


def parse_store_url(url: str, ttl_s: dict[str, float] | None = None) -> StoreURL:
    """Checks a store URL and reads its TTL parameters (see `open_store`)."""
    scheme, sep, rest = str(url).partition("://")
    if not sep or scheme not in SCHEMES:
        raise UsageError(
            f"store URL {redact(url)!r} has an unknown scheme; expected one of "
            f"{', '.join(s + '://' for s in SCHEMES)} (e.g. sqlite:///abs/path/predictions.db)"
        )
    location, _, query = rest.partition("?")
    ttls = dict(DEFAULT_TTL_S)
    features_ttl = DEFAULT_FEATURES_TTL_S
    passthrough = []
    for key, value in parse_qsl(query, keep_blank_values=True):
        if key in TTL_PARAMS:
            ttls[TTL_PARAMS[key]] = parse_duration(value, f"store URL parameter {key}")
        elif key == FEATURES_TTL_PARAM:
            features_ttl = parse_duration(value, f"store URL parameter {key}")
        elif scheme == "sqlite":
            valid = ", ".join([*TTL_PARAMS, FEATURES_TTL_PARAM])
            raise UsageError(f"store URL parameter {key!r} is unknown; valid ones: {valid}")
        else:
            passthrough.append((key, value))
    for source, seconds in (ttl_s or {}).items():
        if source not in SOURCES:
            raise UsageError(f"TTL given for source {source!r}; valid sources: {', '.join(SOURCES)}")
        ttls[source] = float(seconds)
    if scheme == "sqlite":
        if not location:
            raise UsageError("store URL sqlite:// names no file; use sqlite:///abs/path/predictions.db")
        return StoreURL("sqlite", location, ttls, features_ttl)
    redis_url = f"{scheme}://{location}" + ("?" + urlencode(passthrough) if passthrough else "")
    return StoreURL("redis", redis_url, ttls, features_ttl)


def redact(url: str) -> str:
    """`url` without its password, fit for logs and messages."""
    return re.sub(r"(://[^:/@]*:)[^@/]*@", r"\1***@", str(url))


def newer_version(version: str, than: str) -> bool:
    """Whether model version `version` is newer than `than` (numbers compared as numbers; "" is unknown)."""
    if not version or not than:
        return False
    if version.isdigit() and than.isdigit():
        return int(version) > int(than)
    return version != than and max(version, than) == version


def check_model_name(model: str) -> str:
    """Model names become key parts: they must be non-empty and free of ':', '{' and '}'."""
    if not model or any(c in model for c in ":{}"):
        raise UsageError(f"model name {model!r} cannot be stored: it must be non-empty, without ':', '{{' or '}}'")
    return model


def normalize_run(model: str, run: dict) -> dict:
    """The summary `record_run` stores: known keys only, times in unix seconds, the entity count.

    `entities` (the ids the run covered) is reduced to `entity_count`, the coverage denominator;
    without either, the count is rows_scored + rows_rejected.
    """
    unknown = sorted(set(run) - set(RUN_KEYS))
    if unknown:
        raise UsageError(f"run summary has unknown key(s) {', '.join(unknown)}; valid ones: {', '.join(RUN_KEYS)}")
    if run.get("model", model) != model:
        raise UsageError(f"run summary is for model `{run['model']}`, recorded under `{model}`")
    if not run.get("run_id"):
        raise UsageError("run summary needs a run_id")
    if run.get("finished_at") is None:
        raise UsageError(f"run summary `{run['run_id']}` needs finished_at (unix seconds)")
    summary = {
        "run_id": str(run["run_id"]),
        "model": model,
        "model_version": str(run.get("model_version") or ""),
        "started_at": _unix_s(run["started_at"], "started_at") if run.get("started_at") is not None else None,
        "finished_at": _unix_s(run["finished_at"], "finished_at"),
        "rows_scored": int(run.get("rows_scored") or 0),
        "rows_rejected": int(run.get("rows_rejected") or 0),
    }
    if run.get("entity_count") is not None:
        summary["entity_count"] = int(run["entity_count"])
    elif run.get("entities") is not None:
        summary["entity_count"] = len({str(e) for e in run["entities"]})
    else:
        summary["entity_count"] = summary["rows_scored"] + summary["rows_rejected"]
    return summary


def row_outputs(arrays: dict[str, np.ndarray], row: int = 0) -> dict:
    """Row `row` of a batch of model outputs as store values: one-element rows become scalars, bytes text.

    The batch scorer and the real-time fallback both use it, so both write entries of the same shape.
    """
    outputs = {}
    for name, array in arrays.items():
        value = np.asarray(array)[row]
        if isinstance(value, np.ndarray) and value.size == 1:
            value = value.reshape(())[()]
        outputs[name] = _plain(value)
    return outputs


def _plain(value):
    """JSON-ready form of numpy values and bytes; raises TypeError for anything else unknown."""
    if isinstance(value, np.ndarray):
        return _plain(value.tolist()) if value.dtype == object else value.tolist()
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, (int, float, str, bool)) or value is None:
        return value
    raise TypeError(f"{type(value).__name__} value {value!r} is not JSON-serialisable")


def _unix_s(value, name: str) -> float:
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            raise UsageError(f"run summary {name} is {value!r}; expected unix seconds or an ISO time") from None
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise UsageError(f"run summary {name} {value.isoformat()} has no time zone; give unix seconds or UTC")
        return value.timestamp()
    if isinstance(value, (int, float)) and math.isfinite(value):
        return float(value)
    raise UsageError(f"run summary {name} is {value!r}; expected unix seconds")
