"""The Redis prediction store: the production choice, shared by every application replica.

Keys, with the model as a hash tag so one model's keys share a cluster slot (MULTI needs that):
  `tritonkit:{model}:p:<entity>`   the entry as JSON, expiring at predicted_at + the source's TTL (PXAT)
  `tritonkit:{model}:f:<entity>`   hash of the entity's features (name -> JSON value, `@at` -> unix seconds),
                                   expiring at its last write + the features TTL
  `tritonkit:{model}:fresh:<source>` sorted set of entity ids by predicted_at, for coverage counts
  `tritonkit:{model}:runs` hash run_id -> summary; `tritonkit:{model}:run-order` sorted set by finished_at
An entity sits in the sorted set of its current entry's source only; members past that source's TTL are
trimmed on each write, so counts are exact as long as every writer uses the same TTLs.

A lookup of entries with their features is one read-only Lua script (one command, one round trip; cheaper
for the client than a pipeline of GET and HGETALL, measured). The key layout, the script and the functions
that queue writes and read replies are shared with the gateway's asyncio store (`store_async`): one
encoding, whichever client sends them.
"""

from __future__ import annotations

import json
import time

import redis

from tritonkit.clients.store import (
    SOURCES,
    Entry,
    FeatureRow,
    Found,
    StoreError,
    StoreUnavailableError,
    check_model_name,
    json_loads,
    normalize_run,
    redact,
)

CONNECT_TIMEOUT_S = 2.0
SOCKET_TIMEOUT_S = 2.0
AT_FIELD = b"@at"


def key(model: str, *parts: str) -> str:
    return ":".join(("tritonkit", "{" + model + "}", *parts))


def failure(url: str, action: str, error: Exception) -> StoreError:
    """A redis-py error as the kit's: unreachable or slow is StoreUnavailableError, anything else StoreError."""
    unavailable = isinstance(error, (redis.ConnectionError, redis.TimeoutError, OSError))
    kind = StoreUnavailableError if unavailable else StoreError
    return kind(f"prediction store {url} failed to {action}: {error}", url=url)


def queue_writes(pipe, entries: list[Entry], features: list[FeatureRow], ttl_s: dict, features_ttl_s: float) -> None:
    """Queues the writes of entries and feature rows on a MULTI pipeline; everything is encoded before
    anything is queued for sending, so a value that cannot be stored raises before the transaction exists."""
    now = time.time()
    models = set()
    payloads = [(entry, _entry_payload(entry)) for entry in entries]
    encoded = [(row, row.encoded()) for row in features]
    for entry, payload in payloads:
        model = check_model_name(entry.model)
        models.add(model)
        entity = str(entry.entity_id)
        expires_ms = int((float(entry.predicted_at) + ttl_s[entry.source]) * 1000)
        pipe.set(key(model, "p", entity), payload, pxat=max(expires_ms, 1))
        pipe.zadd(key(model, "fresh", entry.source), {entity: float(entry.predicted_at)})
        for other in SOURCES:
            if other != entry.source:
                pipe.zrem(key(model, "fresh", other), entity)
    for row, values in encoded:
        name = key(check_model_name(row.model), "f", str(row.entity_id))
        pipe.hset(name, mapping={**values, AT_FIELD: repr(float(row.updated_at))})
        pipe.pexpireat(name, max(int((float(row.updated_at) + features_ttl_s) * 1000), 1))
    for model in models:
        for source in SOURCES:
            pipe.zremrangebyscore(key(model, "fresh", source), "-inf", now - ttl_s[source])


def _entry_payload(entry: Entry) -> str:
    meta = json.dumps(
        {"model_version": str(entry.model_version), "predicted_at": float(entry.predicted_at), "source": entry.source}
    )
    return '{"outputs":' + entry.outputs_json() + "," + meta[1:]


# KEYS: the entries' keys, then the feature hashes' keys (the same entities, in the same order).
LOOKUP_SCRIPT = """
local n = #KEYS / 2
local out = {}
for i = 1, n do out[i] = redis.call('GET', KEYS[i]) end
for i = n + 1, 2 * n do out[i] = redis.call('HGETALL', KEYS[i]) end
return out
"""


def lookup_keys(model: str, entity_ids: list[str], features: bool) -> list[str]:
    """The keys a lookup reads: MGET takes the entries' alone, LOOKUP_SCRIPT both halves."""
    check_model_name(model)
    keys = [key(model, "p", e) for e in entity_ids]
    return keys + [key(model, "f", e) for e in entity_ids] if features else keys


def read_lookup(url: str, model: str, entity_ids: list[str], reply: list, features: bool) -> list[Found]:
    """The reply of MGET (entries) or LOOKUP_SCRIPT (entries, then flat feature hashes) as one Found per entity."""
    n = len(entity_ids)
    hashes = [dict(zip(h[::2], h[1::2])) for h in reply[n:]] if features else [None] * n
    return [
        Found(entity, decode_entry(url, model, entity, raw), decode_features(url, model, entity, fields))
        for entity, raw, fields in zip(entity_ids, reply[:n], hashes)
    ]


def decode_entry(url: str, model: str, entity_id: str, raw) -> Entry | None:
    if raw is None:
        return None
    try:
        value = json_loads(raw)
        return Entry(entity_id, model, value["model_version"], value["outputs"], value["predicted_at"], value["source"])
    except (ValueError, KeyError, TypeError, StoreError) as e:
        raise StoreError(f"entry `{entity_id}` of model `{model}` in {url} is unreadable: {e}", url=url) from e


def decode_features(url: str, model: str, entity_id: str, fields: dict | None) -> FeatureRow | None:
    if not fields:
        return None
    try:
        at = float(fields.get(AT_FIELD, 0.0))
        values = {name.decode(): json_loads(value) for name, value in fields.items() if name != AT_FIELD}
        return FeatureRow(entity_id, model, values, at)
    except (ValueError, TypeError, UnicodeDecodeError) as e:
        raise StoreError(f"features of entity `{entity_id}` (model `{model}`) in {url} are unreadable: {e}") from e


class RedisStore:
    """Predictions and features in Redis; one client (with its connection pool) is safe to share between threads.

    Args:
        url: redis://host:port/db or rediss:// (TLS); redis-py's own URL parameters are passed on.
        ttl_s: seconds an entry lives, per source.
        features_ttl_s: seconds a feature row lives after its last write.
    """

    def __init__(self, url: str, ttl_s: dict[str, float], features_ttl_s: float = 7 * 86400.0):
        self.url = redact(url)
        self.ttl_s = dict(ttl_s)
        self.features_ttl_s = float(features_ttl_s)
        options = {"socket_connect_timeout": CONNECT_TIMEOUT_S, "socket_timeout": SOCKET_TIMEOUT_S}
        try:
            self._client = redis.Redis.from_url(url, **options)
        except ValueError as e:
            raise StoreError(f"store URL {self.url!r} is not a valid Redis URL: {e}", url=self.url) from e
        self._lookup = self._client.register_script(LOOKUP_SCRIPT)

    def _fail(self, action: str, error: redis.RedisError) -> StoreError:
        return failure(self.url, action, error)

    def put_many(
        self, entries: list[Entry], features: list[FeatureRow] | None = None, timeout_s: float | None = None
    ) -> None:
        """One MULTI/EXEC transaction: all entries and feature rows become visible together, or none do.

        `timeout_s` is accepted for the protocol; a Redis call is bounded by the client's socket timeout.
        """
        if not entries and not features:
            return
        pipe = self._client.pipeline(transaction=True)
        queue_writes(pipe, entries, features or [], self.ttl_s, self.features_ttl_s)
        try:
            pipe.execute()
        except redis.RedisError as e:
            raise self._fail("write predictions", e) from e

    def put_features(self, rows: list[FeatureRow], timeout_s: float | None = None) -> None:
        self.put_many([], rows, timeout_s)

    def get(self, model: str, entity_id: str, timeout_s: float | None = None) -> Entry | None:
        try:
            raw = self._client.get(key(check_model_name(model), "p", str(entity_id)))
        except redis.RedisError as e:
            raise self._fail("read a prediction", e) from e
        return decode_entry(self.url, model, str(entity_id), raw)

    def get_many(
        self, model: str, entity_ids: list[str], features: bool = False, timeout_s: float | None = None
    ) -> list[Found]:
        ids = [str(e) for e in entity_ids]
        if not ids:
            return []
        keys = lookup_keys(model, ids, features)
        try:
            reply = self._lookup(keys=keys) if features else self._client.mget(keys)
        except redis.RedisError as e:
            raise self._fail("read a prediction" if len(ids) == 1 else "read predictions", e) from e
        return read_lookup(self.url, model, ids, reply, features)

    def get_features(self, model: str, entity_id: str, timeout_s: float | None = None) -> FeatureRow | None:
        return self.get_many(model, [entity_id], features=True, timeout_s=timeout_s)[0].features

    def record_run(self, model: str, run: dict) -> None:
        summary = normalize_run(check_model_name(model), run)
        pipe = self._client.pipeline(transaction=True)
        pipe.hset(key(model, "runs"), summary["run_id"], json.dumps(summary))
        pipe.zadd(key(model, "run-order"), {summary["run_id"]: summary["finished_at"]})
        try:
            pipe.execute()
        except redis.RedisError as e:
            raise self._fail("record a batch run", e) from e

    def last_run(self, model: str) -> dict | None:
        try:
            latest = self._client.zrevrange(key(check_model_name(model), "run-order"), 0, 0)
            raw = self._client.hget(key(model, "runs"), latest[0]) if latest else None
        except redis.RedisError as e:
            raise self._fail("read the last batch run", e) from e
        return json.loads(raw) if raw else None

    def count_fresh(self, model: str, max_age_s: float, now: float | None = None) -> dict[str, int]:
        now = time.time() if now is None else now
        pipe = self._client.pipeline(transaction=False)
        for source in SOURCES:
            # alive: predicted_at > now - ttl; fresh: predicted_at >= now - max_age
            low = max(now - max_age_s, now - self.ttl_s[source])
            exclusive = now - self.ttl_s[source] >= now - max_age_s
            pipe.zcount(key(check_model_name(model), "fresh", source), f"({low}" if exclusive else low, "+inf")
        try:
            counts = pipe.execute()
        except redis.RedisError as e:
            raise self._fail("count fresh predictions", e) from e
        return dict(zip(SOURCES, (int(c) for c in counts)))

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> RedisStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"RedisStore({self.url!r})"
