"""The online feature store with the real embedded Triton: `score --features` writes what the batch sent,
the hybrid client (and `tritonkit lookup`) scores misses from it, and a locked SQLite file costs a lookup
its budget, not SQLite's 10 s."""

from __future__ import annotations

import json
import sqlite3
import time

import numpy as np
import pytest
from test_store_redis import redis_server, redis_url  # noqa: F401  (shared Redis fixtures)
from typer.testing import CliRunner

from tritonkit.clients import TritonClient
from tritonkit.clients.hybrid import HybridClient
from tritonkit.clients.store import FeatureRow, open_store, row_outputs
from tritonkit.clients.store_sqlite import LOCK_WAIT_S
from tritonkit.export.churn import FEATURES, synthetic_customers

RECORD = {
    "tenure_months": 3.0,
    "monthly_charges": 95.5,
    "support_calls": 4.0,
    "days_since_login": 21.0,
    "num_products": 1.0,
}


@pytest.fixture(params=["sqlite", "redis"])
def store_url(request, tmp_path) -> str:
    if request.param == "sqlite":
        return f"sqlite://{tmp_path / 'preds.db'}"
    return request.getfixturevalue("redis_url")


@pytest.fixture(scope="module")
def triton(server):
    with TritonClient(server.grpc_url) as client:
        yield client


@pytest.fixture
def cli():
    from tritonkit.cli import app

    return app


def test_score_writes_model_inputs_beside_predictions_when_features_asked(cli, server, triton, store_url, tmp_path):
    frame = synthetic_customers(30, seed=5)
    data = tmp_path / "customers.parquet"
    frame.to_parquet(data)
    args = ["score", "-m", "churn", "-i", str(data), "-o", str(tmp_path / "out.parquet"), "--id-column", "customer_id"]
    result = CliRunner().invoke(
        cli, [*args, "--store", store_url, "--features", "--url", server.grpc_url, "--no-progress"]
    )
    assert result.exit_code == 0, result.output
    with open_store(store_url) as store:
        for i in (0, 13, 29):
            stored = store.get_features("churn", str(i))
            assert stored.values == {f: float(np.float32(frame[f][i])) for f in FEATURES}  # what the model received
        client = HybridClient(store, triton, "churn", max_age_s=1e-6, write_back=False)
        for i in (0, 13, 29):
            batch = store.get("churn", str(i))
            live = client.lookup(str(i))  # stale: scored live from the stored features
            assert live.status == "stale" and live.source == "live"
            assert live.outputs["label"] == batch.outputs["label"]
            assert live.outputs["probability"] == pytest.approx(batch.outputs["probability"], rel=1e-6, abs=1e-7)


def test_score_refuses_features_without_store_naming_the_option(cli, server, tmp_path):
    data = tmp_path / "customers.parquet"
    synthetic_customers(3).to_parquet(data)
    args = ["score", "-m", "churn", "-i", str(data), "-o", str(tmp_path / "o.parquet"), "--features"]
    result = CliRunner().invoke(cli, [*args, "--url", server.grpc_url, "--no-progress"])
    assert result.exit_code == 2 and "--features" in result.output and "--store" in result.output


def test_lookup_command_scores_miss_with_store_features_when_none_given(cli, server, triton, store_url):
    with open_store(store_url) as store:
        store.put_features([FeatureRow("cust-9", "churn", {**RECORD, "unused_column": "x"}, time.time())])
    result = CliRunner().invoke(
        cli, ["lookup", "-m", "churn", "--id", "cust-9", "--store", store_url, "--url", server.grpc_url]
    )
    assert result.exit_code == 0, result.output
    body = json.loads(result.output)
    expected = row_outputs(triton.predict("churn", RECORD).outputs)
    assert body["status"] == "miss" and body["source"] == "live"
    assert body["outputs"] == expected


def test_hybrid_lookup_answers_within_budget_when_sqlite_file_is_write_locked(triton, tmp_path):
    db = tmp_path / "locked.db"
    with open_store(f"sqlite://{db}") as store:
        store.get("churn", "warm")  # creates the file and its tables
        holder = sqlite3.connect(db, isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")  # another writer (a batch run) holds the write lock
        try:
            client = HybridClient(store, triton, "churn", timeout_s=0.5)
            start = time.monotonic()
            result = client.lookup("new-entity", RECORD)
            elapsed = time.monotonic() - start
        finally:
            holder.execute("ROLLBACK")
            holder.close()
    assert result.status == "miss" and result.source == "live" and result.outputs is not None
    assert "write-back failed" in result.detail and "locked" in result.detail
    assert elapsed < LOCK_WAIT_S  # bounded by the lookup's budget, not SQLite's own wait
