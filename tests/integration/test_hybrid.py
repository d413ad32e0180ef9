"""The hybrid client with both real stores and the real embedded Triton as its real-time fallback."""

from __future__ import annotations

import json
import logging
import time

import pytest
from test_store_redis import RedisProcess, redis_server, redis_url  # noqa: F401  (shared Redis fixtures)
from typer.testing import CliRunner

from tritonkit.clients import TritonClient
from tritonkit.clients.hybrid import FeatureTable, HybridClient
from tritonkit.clients.store import Entry, open_store, row_outputs
from tritonkit.errors import ServerError, UsageError
from tritonkit.export.churn import FEATURES, synthetic_customers
from tritonkit.server import free_port

RECORD = {"tenure_months": 3, "monthly_charges": 95.5, "support_calls": 4, "days_since_login": 21, "num_products": 1}
PLACEHOLDER = {"probability": -1.0, "label": -1, "risk_segment": -1}


@pytest.fixture(params=["sqlite", "redis"])
def store_url(request, tmp_path) -> str:
    if request.param == "sqlite":
        return f"sqlite://{tmp_path / 'preds.db'}"
    return request.getfixturevalue("redis_url")


@pytest.fixture
def store(store_url):
    with open_store(store_url) as opened:
        yield opened


@pytest.fixture(scope="module")
def triton(server):
    with TritonClient(server.grpc_url) as client:
        yield client


@pytest.fixture(scope="module")
def customers():
    return synthetic_customers(20, seed=3)


@pytest.fixture
def feature_table(tmp_path, customers):
    path = tmp_path / "customers.parquet"
    customers.to_parquet(path)  # carries `churned` too: only the model's inputs are sent
    return path


@pytest.fixture
def cli():
    from tritonkit.cli import app

    return app


def live(triton, features) -> dict:
    return row_outputs(triton.predict("churn", features).outputs)


def stored(entity_id, age_s=0.0, source="batch", outputs=PLACEHOLDER) -> Entry:
    return Entry(str(entity_id), "churn", "1", outputs, time.time() - age_s, source)


def test_hybrid_lookup_returns_stored_value_with_age_when_fresh(store, triton):
    store.put_many([stored("7", age_s=120)])
    client = HybridClient(store, triton, "churn", max_age_s=3600)
    result = client.lookup("7", RECORD)
    assert (result.status, result.source, result.outputs) == ("hit", "batch", PLACEHOLDER)
    assert result.age_s == pytest.approx(120, abs=10)
    assert client.stats.hit == 1 and client.stats.fallback == 0 and client.stats.hit_rate == 1.0


def test_hybrid_lookup_scores_live_and_writes_back_when_miss(store, triton):
    client = HybridClient(store, triton, "churn")
    result = client.lookup("new-customer", RECORD)
    expected = live(triton, RECORD)
    assert (result.status, result.source, result.age_s, result.model_version) == ("miss", "live", 0.0, "1")
    assert result.outputs["probability"] == pytest.approx(expected["probability"])
    assert result.outputs["label"] == expected["label"] and result.outputs["risk_segment"] == expected["risk_segment"]
    written = store.get("churn", "new-customer")
    assert written.source == "realtime" and written.outputs == result.outputs
    again = client.lookup("new-customer")  # no features needed now: it is a hit
    assert (again.status, again.source, again.outputs) == ("hit", "realtime", result.outputs)
    assert client.stats.to_dict() == {
        "lookups": 2,
        "hit": 1,
        "miss": 1,
        "stale": 0,
        "fallback": 1,
        "fallback_errors": 0,
        "store_errors": 0,
        "hit_rate": 0.5,
    }


def test_hybrid_lookup_scores_live_when_entry_older_than_max_age(store, triton):
    store.put_many([stored("7", age_s=2 * 3600)])
    client = HybridClient(store, triton, "churn", max_age_s=3600)
    result = client.lookup("7", RECORD)
    assert (result.status, result.source) == ("stale", "live") and result.outputs != PLACEHOLDER
    assert result.outputs["probability"] == pytest.approx(live(triton, RECORD)["probability"])
    assert store.get("churn", "7").source == "realtime" and store.get("churn", "7").outputs == result.outputs
    assert client.stats.stale == 1 and client.stats.fallback == 1


def test_hybrid_lookup_leaves_store_alone_when_write_back_off(store, triton):
    store.put_many([stored("7", age_s=2 * 3600)])
    client = HybridClient(store, triton, "churn", max_age_s=3600, write_back=False)
    assert client.lookup("7", RECORD).source == "live" and client.lookup("8", RECORD).source == "live"
    assert store.get("churn", "7").outputs == PLACEHOLDER and store.get("churn", "8") is None


def test_hybrid_lookup_reads_features_from_table_when_none_given(store, triton, feature_table, customers):
    client = HybridClient(store, triton, "churn", feature_source=FeatureTable(feature_table, "customer_id"))
    row = customers.iloc[5]
    result = client.lookup("5")
    expected = live(triton, {f: float(row[f]) for f in FEATURES})
    assert result.status == "miss" and result.outputs["probability"] == pytest.approx(expected["probability"])
    with pytest.raises(UsageError, match="entity `999` has no fresh prediction and is not in feature table"):
        client.lookup("999")


def test_hybrid_lookup_raises_when_miss_has_no_features(store, triton):
    with pytest.raises(UsageError, match="pass its features"):
        HybridClient(store, triton, "churn").lookup("unknown")


def test_hybrid_lookup_degrades_to_live_when_redis_stops_mid_test(tmp_path, triton, caplog):
    redis = RedisProcess(tmp_path).start()
    try:
        client = HybridClient(open_store(redis.url), triton, "churn", max_age_s=3600)
        client.store.put_many([stored("7")])
        assert client.lookup("7").status == "hit"
        redis.stop()
        with caplog.at_level(logging.WARNING, logger="tritonkit.clients.hybrid"):
            result = client.lookup("7", RECORD)
        assert (result.status, result.source) == ("store_unavailable", "live")
        assert result.outputs["probability"] == pytest.approx(live(triton, RECORD)["probability"])
        assert "store unavailable" in result.detail and "prediction store unavailable" in caplog.text
        assert client.stats.store_errors == 1 and client.stats.fallback == 1 and client.stats.hit_rate == 0.5
    finally:
        redis.stop()


def test_hybrid_lookup_degrades_to_live_when_sqlite_file_unreadable(tmp_path, triton):
    garbage = tmp_path / "preds.db"
    garbage.write_bytes(b"\0not a database" * 300)
    client = HybridClient(open_store(f"sqlite://{garbage}"), triton, "churn")
    result = client.lookup("7", RECORD)
    assert (result.status, result.source) == ("store_unavailable", "live") and result.outputs["label"] in (0, 1)
    assert "file is not a database" in result.detail and client.stats.store_errors == 1


def test_hybrid_lookup_returns_stale_entry_when_live_call_fails(store):
    with TritonClient(f"127.0.0.1:{free_port()}", timeout_s=2) as down:
        store.put_many([stored("7", age_s=2 * 3600)])
        client = HybridClient(store, down, "churn", max_age_s=3600)
        result = client.lookup("7", RECORD)
        assert (result.status, result.source, result.outputs) == ("stale", "batch", PLACEHOLDER)
        assert result.detail.startswith("live call failed") and client.stats.fallback_errors == 1
        with pytest.raises(ServerError):
            client.lookup("8", RECORD)


def test_lookup_command_scores_live_then_hits_when_features_given(cli, server, store_url):
    env = {"TRITONKIT_STORE": store_url, "TRITONKIT_URL": server.grpc_url}
    args = ["lookup", "--model", "churn", "--id", "c-1", "--max-age", "12h"]
    first = CliRunner().invoke(cli, [*args, "--features", json.dumps(RECORD)], env=env)
    assert first.exit_code == 0, first.output
    body = json.loads(first.stdout)
    assert (body["status"], body["source"], body["model"]) == ("miss", "live", "churn")
    second = CliRunner().invoke(cli, args, env=env)
    assert second.exit_code == 0, second.output
    assert json.loads(second.stdout)["source"] == "realtime" and json.loads(second.stdout)["status"] == "hit"
    assert json.loads(second.stdout)["outputs"] == body["outputs"]


def test_lookup_command_reads_feature_table_when_given(cli, server, store_url, feature_table):
    result = CliRunner().invoke(
        cli,
        [
            "lookup",
            "--model",
            "churn",
            "--id",
            "3",
            "--store",
            store_url,
            "--url",
            server.grpc_url,
            "--feature-table",
            str(feature_table),
            "--id-column",
            "customer_id",
        ],
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["status"] == "miss" and json.loads(result.stdout)["source"] == "live"


def test_lookup_command_says_store_unavailable_when_redis_port_closed(cli, server):
    result = CliRunner().invoke(
        cli,
        [
            "lookup",
            "--model",
            "churn",
            "--id",
            "1",
            "--features",
            json.dumps(RECORD),
            "--store",
            f"redis://127.0.0.1:{free_port()}/0",
            "--url",
            server.grpc_url,
        ],
    )
    assert result.exit_code == 0, result.output
    body = json.loads(result.stdout)
    assert body["status"] == "store_unavailable" and body["source"] == "live" and "Connection refused" in body["detail"]
