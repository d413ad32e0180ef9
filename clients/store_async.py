"""The prediction and feature store for asyncio code: what the gateway reads on every request.

`open_async_store(url)` gives Redis through `redis.asyncio` with a bounded connection pool (the same keys
and encoding as `store_redis`, which this module shares), or the SQLite store run in worker threads.
Every call takes a `timeout_s`, the part of the request's budget that is left: past it the call raises
StoreUnavailableError, so a slow or locked store costs a request its budget, never more.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Protocol, runtime_checkable

from tritonkit.clients.store import (
    Entry,
    FeatureRow,
    Found,
    StoreError,
    StoreUnavailableError,
    parse_store_url,
    redact,
)

DEFAULT_MAX_CONNECTIONS = 64
POOL_WAIT_S = 5.0  # longest wait for a free pooled connection (the request's own budget usually ends first)


@runtime_checkable
class AsyncStore(Protocol):
    """What the gateway needs from a store; failures to reach it raise StoreUnavailableError."""

    url: str
    ttl_s: dict[str, float]
    features_ttl_s: float

    async def lookup(self, model: str, entity_ids: list[str], features: bool, timeout_s: float) -> list[Found]:
        """Entries (and feature rows, with `features`) of the entities, in order, in one round trip."""

    async def write(self, entries: list[Entry], features: list[FeatureRow], timeout_s: float) -> None:
        """Writes all of them in one transaction, or none."""

    async def last_run(self, model: str, timeout_s: float) -> dict | None:
        """The summary of the model's last batch run (see `PredictionStore.record_run`)."""

    async def ping(self, timeout_s: float) -> None:
        """Returns when the store answers; raises StoreUnavailableError otherwise."""

    async def close(self) -> None:
        """Releases connections."""


async def bounded(awaitable, timeout_s: float, url: str, action: str):
    """`await awaitable`, at most `timeout_s`; past it StoreUnavailableError naming the action and the budget."""
    try:
        if sys.version_info >= (3, 11):
            async with asyncio.timeout(max(timeout_s, 0.0)):
                return await awaitable
        return await asyncio.wait_for(awaitable, max(timeout_s, 0.0))
    except (asyncio.TimeoutError, TimeoutError):
        raise StoreUnavailableError(
            f"prediction store {url} did not {action} within {timeout_s * 1000:.0f} ms", url=url
        ) from None


class AsyncRedisStore:
    """Redis through redis.asyncio, one bounded connection pool per event loop (per gateway worker).

    Args:
        url: redis://host:port/db or rediss:// (TLS).
        ttl_s, features_ttl_s: as in `RedisStore`.
        max_connections: pool size; requests beyond it wait for a free connection.
    """

    def __init__(self, url: str, ttl_s: dict, features_ttl_s: float, max_connections: int = DEFAULT_MAX_CONNECTIONS):
        import redis.asyncio as aredis
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff
        from redis.exceptions import ConnectionError as RedisConnectionError

        from tritonkit.clients.store_redis import CONNECT_TIMEOUT_S, LOOKUP_SCRIPT

        self.url, self.ttl_s, self.features_ttl_s = redact(url), dict(ttl_s), float(features_ttl_s)
        try:
            pool = aredis.BlockingConnectionPool.from_url(
                url,
                max_connections=max_connections,
                timeout=POOL_WAIT_S,
                socket_connect_timeout=CONNECT_TIMEOUT_S,
                socket_timeout=None,  # every call is bounded by `bounded` instead: redis-py's own costs a task per send
                # a pooled connection that Redis closed (a restart, a failover, an idle timeout) fails its next call:
                # reconnect and send it once more (every command here is a read or an idempotent write)
                retry=Retry(NoBackoff(), 1),
                retry_on_error=[RedisConnectionError],
            )
        except ValueError as e:
            raise StoreError(f"store URL {self.url!r} is not a valid Redis URL: {e}", url=self.url) from e
        self._client = aredis.Redis(connection_pool=pool)
        self._lookup = self._client.register_script(LOOKUP_SCRIPT)

    async def _run(self, action: str, timeout_s: float, call):
        import redis

        from tritonkit.clients.store_redis import failure

        try:
            return await bounded(call(), timeout_s, self.url, action)
        except (redis.RedisError, OSError) as e:
            raise failure(self.url, action, e) from e

    async def lookup(self, model: str, entity_ids: list[str], features: bool, timeout_s: float) -> list[Found]:
        from tritonkit.clients.store_redis import lookup_keys, read_lookup

        if not entity_ids:
            return []
        keys = lookup_keys(model, entity_ids, features)
        read = (lambda: self._lookup(keys=keys)) if features else (lambda: self._client.mget(keys))
        reply = await self._run("read predictions", timeout_s, read)
        return read_lookup(self.url, model, entity_ids, reply, features)

    async def write(self, entries: list[Entry], features: list[FeatureRow], timeout_s: float) -> None:
        from tritonkit.clients.store_redis import queue_writes

        if not entries and not features:
            return
        pipe = self._client.pipeline(transaction=True)
        queue_writes(pipe, entries, features, self.ttl_s, self.features_ttl_s)  # raises before anything is sent
        await self._run("write predictions", timeout_s, pipe.execute)

    async def last_run(self, model: str, timeout_s: float) -> dict | None:
        from tritonkit.clients.store import check_model_name, json_loads
        from tritonkit.clients.store_redis import key

        async def read():
            latest = await self._client.zrevrange(key(check_model_name(model), "run-order"), 0, 0)
            return await self._client.hget(key(model, "runs"), latest[0]) if latest else None

        raw = await self._run("read the last batch run", timeout_s, read)
        return json_loads(raw) if raw else None

    async def ping(self, timeout_s: float) -> None:
        await self._run("answer a ping", timeout_s, self._client.ping)

    async def close(self) -> None:
        await self._client.aclose()

    def __repr__(self) -> str:
        return f"AsyncRedisStore({self.url!r})"


class AsyncSQLiteStore:
    """The SQLite store with each call in a worker thread; a locked file costs a call its `timeout_s`."""

    def __init__(self, path: str, ttl_s: dict, features_ttl_s: float):
        from tritonkit.clients.store_sqlite import SQLiteStore

        self._store = SQLiteStore(path, ttl_s=ttl_s, features_ttl_s=features_ttl_s)
        self.url, self.ttl_s, self.features_ttl_s = self._store.url, self._store.ttl_s, self._store.features_ttl_s

    async def _run(self, action: str, timeout_s: float, function, *args):
        return await bounded(asyncio.to_thread(function, *args), timeout_s, self.url, action)

    async def lookup(self, model: str, entity_ids: list[str], features: bool, timeout_s: float) -> list[Found]:
        if not entity_ids:
            return []
        return await self._run(
            "read predictions", timeout_s, self._store.get_many, model, entity_ids, features, timeout_s
        )

    async def write(self, entries: list[Entry], features: list[FeatureRow], timeout_s: float) -> None:
        await self._run("write predictions", timeout_s, self._store.put_many, entries, features, timeout_s)

    async def last_run(self, model: str, timeout_s: float) -> dict | None:
        return await self._run("read the last batch run", timeout_s, self._store.last_run, model)

    async def ping(self, timeout_s: float) -> None:
        await self._run("answer a ping", timeout_s, self._store.get_many, "-", ["-"], False, timeout_s)

    async def close(self) -> None:
        self._store.close()

    def __repr__(self) -> str:
        return f"AsyncSQLiteStore({self.url!r})"


def open_async_store(
    url: str, ttl_s: dict[str, float] | None = None, max_connections: int = DEFAULT_MAX_CONNECTIONS
) -> AsyncStore:
    """The asyncio store at `url` (the URLs and TTL parameters of `open_store`); connects on first use."""
    parsed = parse_store_url(url, ttl_s)
    if parsed.kind == "sqlite":
        return AsyncSQLiteStore(parsed.location, parsed.ttl_s, parsed.features_ttl_s)
    return AsyncRedisStore(parsed.location, parsed.ttl_s, parsed.features_ttl_s, max_connections)
