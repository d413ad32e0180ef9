"""`tritonkit plan --store redis://...`: entry size and read p99 measured from a real redis-server."""

from __future__ import annotations

import time

import pytest

redis = pytest.importorskip("redis", reason="the `redis` client package is not installed (pip install redis)")

from test_store_redis import RedisProcess  # tests/integration is on sys.path under pytest's default import mode

from tritonkit.benchmarks.plan_inputs import store_inputs
from tritonkit.benchmarks.plan_modes import MEASURED
from tritonkit.clients.store import Entry, open_store
from tritonkit.errors import UsageError


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory):
    server = RedisProcess(tmp_path_factory.mktemp("plan-redis")).start()
    yield server.url
    server.stop()


def test_store_inputs_measure_redis_memory_usage_when_the_store_holds_the_model(redis_url):
    outputs = {"probability": [0.25], "label": [0], "risk_segment": [0]}
    with open_store(redis_url) as store:
        store.put_many([Entry(str(i), "churn", "1", outputs, time.time(), "batch") for i in range(300)])
    client = redis.Redis.from_url(redis_url)
    sizes = [client.memory_usage(key) for key in client.scan_iter(match="tritonkit:{churn}:p:*")]
    client.close()
    measured = store_inputs(redis_url + "?batch_ttl=2d", "churn", sample=1000)
    assert measured["bytes_per_prediction"].value == pytest.approx(sum(sizes) / len(sizes))
    assert measured["bytes_per_prediction"].basis == MEASURED
    assert "average of 300 entries" in measured["bytes_per_prediction"].source
    assert measured["store_p99_ms"].value > 0
    with pytest.raises(UsageError, match="no unexpired predictions of model `minilm`"):
        store_inputs(redis_url, "minilm")
