"""The Redis prediction store: the production choice, shared by every application replica.

Keys, with the model as a hash tag so one model's keys share a cluster slot (MULTI needs that):
  `tritonkit:{model}:p:<entity>`   the entry as JSON, expiring at predicted_at + the source's TTL (PXAT)
  `tritonkit:{model}:fresh:<source>` sorted set of entity ids by predicted_at, for coverage counts
  `tritonkit:{model}:runs` hash run_id -> summary; `tritonkit:{model}:run-order` sorted set by finished_at
An entity sits in the sorted set of its current entry's source only; members past that source's TTL are
trimmed on each write, so counts are exact as long as every writer uses the same TTLs.
"""

from __future__ import annotations

import json
import time

import redis

from tritonkit.clients.store import (
    SOURCES,
    Entry,
    StoreError,
    StoreUnavailableError,
    check_model_name,
    normalize_run,
    redact,
)

CONNECT_TIMEOUT_S = 2.0
SOCKET_TIMEOUT_S = 2.0


def _key(model: str, *parts: str) -> str:
    return ":".join(("tritonkit", "{" + model + "}", *parts))


class RedisStore:
    """Predictions in Redis; one client (with its connection pool) is safe to share between threads.

    Args:
        url: redis://host:port/db or rediss:// (TLS); redis-py's own URL parameters are passed on.
        ttl_s: seconds an entry lives, per source.
    """

    def __init__(self, url: str, ttl_s: dict[str, float]):
        self.url = redact(url)
        self.ttl_s = dict(ttl_s)
        options = {"socket_connect_timeout": CONNECT_TIMEOUT_S, "socket_timeout": SOCKET_TIMEOUT_S}
        try:
            self._client = redis.Redis.from_url(url, **options)
        except ValueError as e:
            raise StoreError(f"store URL {self.url!r} is not a valid Redis URL: {e}", url=self.url) from e

    def _fail(self, action: str, error: redis.RedisError) -> StoreError:
        kind = StoreUnavailableError if isinstance(error, (redis.ConnectionError, redis.TimeoutError)) else StoreError
        return kind(f"prediction store {self.url} failed to {action}: {error}", url=self.url)

    def put_many(self, entries: list[Entry]) -> None:
        """One MULTI/EXEC transaction: all entries become visible together, or none do."""
        if not entries:
            return
        now = time.time()
        pipe = self._client.pipeline(transaction=True)
        models = set()
        for entry in entries:  # everything is serialised before anything is sent
            model = check_model_name(entry.model)
            models.add(model)
            entity = str(entry.entity_id)
            meta = json.dumps(
                {
                    "model_version": str(entry.model_version),
                    "predicted_at": float(entry.predicted_at),
                    "source": entry.source,
                }
            )
            payload = '{"outputs":' + entry.outputs_json() + "," + meta[1:]
            expires_ms = int((float(entry.predicted_at) + self.ttl_s[entry.source]) * 1000)
            pipe.set(_key(model, "p", entity), payload, pxat=max(expires_ms, 1))
            pipe.zadd(_key(model, "fresh", entry.source), {entity: float(entry.predicted_at)})
            for other in SOURCES:
                if other != entry.source:
                    pipe.zrem(_key(model, "fresh", other), entity)
        for model in models:
            for source in SOURCES:
                pipe.zremrangebyscore(_key(model, "fresh", source), "-inf", now - self.ttl_s[source])
        try:
            pipe.execute()
        except redis.RedisError as e:
            raise self._fail("write predictions", e) from e

    def get(self, model: str, entity_id: str) -> Entry | None:
        try:
            raw = self._client.get(_key(check_model_name(model), "p", str(entity_id)))
        except redis.RedisError as e:
            raise self._fail("read a prediction", e) from e
        if raw is None:
            return None
        try:
            value = json.loads(raw)
            return Entry(
                str(entity_id), model, value["model_version"], value["outputs"], value["predicted_at"], value["source"]
            )
        except (ValueError, KeyError, TypeError) as e:
            raise StoreError(
                f"entry `{entity_id}` of model `{model}` in {self.url} is unreadable: {e}", url=self.url
            ) from e

    def record_run(self, model: str, run: dict) -> None:
        summary = normalize_run(check_model_name(model), run)
        pipe = self._client.pipeline(transaction=True)
        pipe.hset(_key(model, "runs"), summary["run_id"], json.dumps(summary))
        pipe.zadd(_key(model, "run-order"), {summary["run_id"]: summary["finished_at"]})
        try:
            pipe.execute()
        except redis.RedisError as e:
            raise self._fail("record a batch run", e) from e

    def last_run(self, model: str) -> dict | None:
        try:
            latest = self._client.zrevrange(_key(check_model_name(model), "run-order"), 0, 0)
            raw = self._client.hget(_key(model, "runs"), latest[0]) if latest else None
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
            pipe.zcount(_key(check_model_name(model), "fresh", source), f"({low}" if exclusive else low, "+inf")
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
