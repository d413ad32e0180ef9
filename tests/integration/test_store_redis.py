"""The Redis prediction store against a real redis-server started on a free loopback port."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import pytest

redis = pytest.importorskip("redis", reason="the `redis` client package is not installed (pip install redis)")

from tritonkit.clients.store import Entry, StoreUnavailableError, open_store
from tritonkit.errors import UsageError
from tritonkit.server import free_port

ENSURE_REDIS = Path(__file__).resolve().parents[2] / "scripts" / "ensure-redis.sh"


def redis_binary() -> str:
    """redis-server's path, installing Debian's package via scripts/ensure-redis.sh when missing."""
    found = shutil.which("redis-server")
    if found is None:
        done = subprocess.run(["bash", str(ENSURE_REDIS)], capture_output=True, text=True, timeout=300)
        found = shutil.which("redis-server")
        if found is None:
            pytest.skip(
                f"redis-server is not installed and scripts/ensure-redis.sh could not install it: "
                f"{done.stderr.strip()[-300:]}"
            )
    return found


class RedisProcess:
    """A throwaway redis-server on 127.0.0.1: no persistence, stopped and restarted at will."""

    def __init__(self, log_dir: Path, port: int | None = None):
        self.binary = redis_binary()
        self.port = port or free_port()
        self.log = log_dir / f"redis-{self.port}.log"
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisProcess:
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                [
                    self.binary,
                    "--port",
                    str(self.port),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--daemonize",
                    "no",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        client = redis.Redis(port=self.port, socket_connect_timeout=0.5)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"redis-server did not start on port {self.port}: {self.log.read_text()[-500:]}")
                time.sleep(0.05)
        client.close()
        return self

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    """One redis-server for the session (flushed by `redis_url`)."""
    server = RedisProcess(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server) -> str:
    """The session server's URL, with an empty database."""
    client = redis.Redis.from_url(redis_server.url)
    client.flushdb()
    client.close()
    return redis_server.url


def entry(entity_id, age_s=0.0, source="batch", outputs=None):
    return Entry(
        str(entity_id),
        "churn",
        "1",
        outputs or {"probability": 0.25, "label": 0, "risk_segment": 0},
        time.time() - age_s,
        source,
    )


def keys(url: str) -> list[str]:
    client = redis.Redis.from_url(url, decode_responses=True)
    try:
        return sorted(client.keys("*"))
    finally:
        client.close()


def test_redis_get_returns_entry_when_put(redis_url):
    with open_store(redis_url) as store:
        written = entry("42", outputs={"probability": 0.5, "segment": "High", "embedding": [1.0, 2.0]})
        store.put_many([written])
        got = store.get("churn", "42")
        assert got == written
        assert store.get("churn", "43") is None and store.get("other", "42") is None
        store.put_many([entry("42", source="realtime", outputs={"probability": 0.9})])
        assert store.get("churn", "42").source == "realtime" and store.get("churn", "42").outputs["probability"] == 0.9
        assert store.count_fresh("churn", 3600) == {"batch": 0, "realtime": 1}  # moved between sources


def test_redis_entry_expires_when_short_ttl_passes(redis_url):
    with open_store(f"{redis_url}?realtime_ttl=1s") as store:
        store.put_many([entry("soon", source="realtime"), entry("later")])
        assert store.get("churn", "soon") is not None
        time.sleep(1.1)
        assert store.get("churn", "soon") is None and store.get("churn", "later") is not None
        assert "tritonkit:{churn}:p:soon" not in keys(redis_url)  # Redis itself dropped the key


def test_redis_get_returns_none_when_entry_expired_per_source(redis_url):
    with open_store(f"{redis_url}?batch_ttl=1h&realtime_ttl=1m") as store:
        store.put_many(
            [
                entry("batch-30m", age_s=1800),
                entry("live-30m", age_s=1800, source="realtime"),
                entry("batch-2h", age_s=7200),
            ]
        )
        assert store.get("churn", "batch-30m") is not None
        assert store.get("churn", "live-30m") is None and store.get("churn", "batch-2h") is None
        assert store.count_fresh("churn", 24 * 3600) == {"batch": 1, "realtime": 0}


def test_redis_put_many_leaves_nothing_visible_when_last_entry_fails(redis_url):
    with open_store(redis_url) as store:
        store.put_many([entry("kept")])
        before = keys(redis_url)
        batch = [entry(i) for i in range(500)] + [entry("bad", outputs={"probability": object()})]
        with pytest.raises(UsageError, match="outputs of entity `bad` .* are not JSON-serialisable"):
            store.put_many(batch)
        assert keys(redis_url) == before and store.get("churn", "0") is None
        store.put_many(batch[:-1])
        assert store.get("churn", "499") is not None and store.count_fresh("churn", 60)["batch"] == 501


def test_redis_last_run_returns_latest_finished_when_several_recorded(redis_url):
    now = time.time()
    with open_store(redis_url) as store:
        assert store.last_run("churn") is None
        store.record_run("churn", {"run_id": "new", "finished_at": now - 60, "rows_scored": 2, "entities": ["a", "b"]})
        store.record_run("churn", {"run_id": "old", "finished_at": now - 7200, "rows_scored": 9})
        last = store.last_run("churn")
        assert last["run_id"] == "new" and last["entity_count"] == 2 and last["finished_at"] == now - 60


def test_redis_count_fresh_counts_unexpired_within_max_age_per_source(redis_url):
    with open_store(redis_url) as store:
        store.put_many(
            [
                entry("a", age_s=60),
                entry("b", age_s=3 * 3600),
                entry("c", age_s=25 * 3600),
                entry("d", age_s=60, source="realtime"),
                entry("e", age_s=2 * 3600, source="realtime"),
            ]
        )
        assert store.count_fresh("churn", 3600) == {"batch": 1, "realtime": 1}
        assert store.count_fresh("churn", 12 * 3600) == {"batch": 2, "realtime": 1}


def test_redis_store_raises_unavailable_when_port_closed():
    store = open_store(f"redis://127.0.0.1:{free_port()}/0")
    started = time.monotonic()
    with pytest.raises(StoreUnavailableError, match=r"failed to read a prediction: .*(refused|connect)"):
        store.get("churn", "1")
    with pytest.raises(StoreUnavailableError, match="failed to write predictions"):
        store.put_many([entry("1")])
    assert time.monotonic() - started < 5


def test_redis_store_recovers_when_server_restarts(tmp_path):
    server = RedisProcess(tmp_path).start()
    try:
        store = open_store(server.url)
        store.put_many([entry("1")])
        server.stop()
        with pytest.raises(StoreUnavailableError):
            store.get("churn", "1")
        server.start()  # same port, empty (no persistence)
        assert store.get("churn", "1") is None
        store.put_many([entry("1")])
        assert store.get("churn", "1") is not None
    finally:
        server.stop()


def test_open_store_hides_password_when_url_has_one():
    store = open_store("redis://user:s3cret@127.0.0.1:1/0")
    assert "s3cret" not in repr(store) and store.url == "redis://user:***@127.0.0.1:1/0"
    with pytest.raises(StoreUnavailableError) as raised:
        store.get("churn", "1")
    assert "s3cret" not in str(raised.value)


def test_async_store_reads_at_once_when_redis_restarted_under_its_pooled_connection(tmp_path):
    """A restart (or failover) closes the pooled connection: the next read reconnects instead of failing."""
    import asyncio

    from tritonkit.clients.store_async import AsyncRedisStore

    own = RedisProcess(tmp_path).start()

    async def read_restart_read():
        store = AsyncRedisStore(own.url, {}, 3600)
        await store.lookup("churn", ["a"], True, 2.0)  # the pool now holds an open connection
        own.stop()
        own.start()
        return await store.lookup("churn", ["a"], True, 2.0)

    try:
        (found,) = asyncio.run(read_restart_read())
    finally:
        own.stop()
    assert found.entity_id == "a" and found.entry is None
