"""The online feature store in SQLite: feature rows beside predictions, their merge and TTL, atomic writes,
writers bounded by the caller's budget, `features push`, and the asyncio form the gateway reads."""

from __future__ import annotations

import asyncio
import sqlite3
import time

import numpy as np
import pytest
from typer.testing import CliRunner

from tritonkit.clients.store import Entry, FeatureRow, StoreUnavailableError, open_store, parse_store_url
from tritonkit.clients.store_async import open_async_store
from tritonkit.clients.store_features import push_features, rows_from_arrays
from tritonkit.clients.store_sqlite import LOCK_WAIT_S
from tritonkit.errors import UsageError


@pytest.fixture
def db(tmp_path):
    return tmp_path / "store.db"


@pytest.fixture
def store(db):
    with open_store(f"sqlite://{db}") as opened:
        yield opened


def entry(entity, outputs=None):
    return Entry(str(entity), "churn", "1", outputs or {"probability": 0.5}, time.time(), "batch")


def row(entity, values, at=None, model="churn"):
    return FeatureRow(str(entity), model, values, time.time() if at is None else at)


def test_feature_row_refuses_reserved_or_empty_names_when_built():
    with pytest.raises(UsageError, match="'@at' .* cannot be stored"):
        row("a", {"@at": 1})
    with pytest.raises(UsageError, match="'' of entity `a`"):
        row("a", {"": 1})


def test_sqlite_get_many_returns_entries_and_features_in_order_when_put_together(store):
    store.put_many([entry("a"), entry("b")], [row("a", {"x": 1.5, "tags": ["p", "q"]})])
    found = store.get_many("churn", ["b", "missing", "a", "b"], features=True)
    assert [f.entity_id for f in found] == ["b", "missing", "a", "b"]
    assert found[0].entry.outputs == {"probability": 0.5} and found[0].features is None
    assert found[1].entry is None and found[1].features is None
    assert found[2].features.values == {"x": 1.5, "tags": ["p", "q"]}
    assert store.get_many("churn", ["a"])[0].features is None  # not asked for


def test_sqlite_put_features_merges_over_stored_values_when_entity_written_again(store):
    store.put_features([row("a", {"x": 1, "y": 2})])
    store.put_features([row("a", {"y": 3, "z": "new"})])
    assert store.get_features("churn", "a").values == {"x": 1, "y": 3, "z": "new"}


def test_sqlite_features_expire_when_features_ttl_passes(db):
    with open_store(f"sqlite://{db}?features_ttl=1s") as short:
        short.put_features([row("old", {"x": 1}, at=time.time() - 5), row("new", {"x": 2})])
        assert short.get_features("churn", "old") is None and short.get_features("churn", "new").values == {"x": 2}
        short.put_features([row("old", {"y": 9})])  # an expired row is replaced, not merged into
        assert short.get_features("churn", "old").values == {"y": 9}


def test_sqlite_put_many_leaves_nothing_when_a_feature_value_cannot_be_stored(store):
    with pytest.raises(UsageError, match="feature `x` of entity `bad`"):
        store.put_many([entry("a")], [row("ok", {"x": 1}), row("bad", {"x": object()})])
    assert store.get("churn", "a") is None and store.get_features("churn", "ok") is None


def test_sqlite_writer_gives_up_within_its_budget_when_another_writer_holds_the_lock(store, db):
    store.put_many([entry("a")])
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        start = time.monotonic()
        with pytest.raises(StoreUnavailableError, match="database is locked"):
            store.put_many([entry("b")], timeout_s=0.2)
        assert time.monotonic() - start < LOCK_WAIT_S  # the budget, not SQLite's default wait
        assert store.get("churn", "a", timeout_s=0.2) is not None  # readers are not blocked (WAL)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    store.put_many([entry("b")], timeout_s=0.2)
    assert store.get("churn", "b") is not None


def test_rows_from_arrays_keeps_model_input_values_exactly_when_converted():
    x = np.asarray([[0.1], [1 / 3]], dtype=np.float32)
    vec = np.asarray([[1, 2, 3], [4, 5, 6]], dtype=np.int64)
    text = np.asarray([[b"a"], [b"b"]], dtype=object)
    rows = rows_from_arrays("m", ["e1", "e2"], {"x": x, "vec": vec, "text": text}, 10.0)
    assert rows[1].values == {"x": float(np.float32(1 / 3)), "vec": [4, 5, 6], "text": "b"}
    assert np.float32(rows[0].values["x"]) == x[0, 0]  # the stored float is the float32 the model received


def test_push_features_writes_every_row_and_skips_rows_without_id(store, tmp_path):
    data = tmp_path / "features.csv"
    data.write_text("customer_id,tenure,plan,extra\n007,3.5,gold,1\n,1.0,silver,2\n42,,bronze,3\n")
    report = push_features(store, "churn", data, "customer_id", ["tenure", "plan"])
    assert (report.rows_read, report.rows_written, report.rows_skipped) == (3, 2, 1)
    assert store.get_features("churn", "007").values == {"tenure": 3.5, "plan": "gold"}  # ids stay text
    assert store.get_features("churn", "42").values == {"plan": "bronze"}  # a null is not written


def test_push_features_names_missing_id_column_and_lists_columns(store, tmp_path):
    data = tmp_path / "features.csv"
    data.write_text("id,tenure\n1,2\n")
    with pytest.raises(UsageError, match=r"--id-column 'customer_id' is not a column .*: id, tenure"):
        push_features(store, "churn", data, "customer_id")
    with pytest.raises(UsageError, match="feature column.* plan not in"):
        push_features(store, "churn", data, "id", ["plan"])


def test_features_push_command_prints_json_report_when_asked(db, tmp_path):
    from tritonkit.cli import app

    data = tmp_path / "features.parquet"
    import pandas as pd

    pd.DataFrame({"customer_id": [1, 2], "tenure": [3.0, 4.0]}).to_parquet(data)
    result = CliRunner().invoke(
        app,
        [
            "features",
            "push",
            "-m",
            "churn",
            "-i",
            str(data),
            "--id-column",
            "customer_id",
            "--store",
            f"sqlite://{db}",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    assert '"rows_written": 2' in result.output
    with open_store(f"sqlite://{db}") as opened:
        assert opened.get_features("churn", "2").values == {"tenure": 4.0}


def test_store_url_reads_features_ttl_and_lists_it_when_parameter_unknown(db):
    assert parse_store_url(f"sqlite://{db}?features_ttl=2d").features_ttl_s == 172800.0
    with pytest.raises(UsageError, match="valid ones: batch_ttl, realtime_ttl, features_ttl"):
        parse_store_url(f"sqlite://{db}?feature_ttl=2d")


def test_async_sqlite_store_reads_what_it_wrote_when_used_from_asyncio(db):
    async def scenario():
        store = open_async_store(f"sqlite://{db}")
        try:
            await store.write([entry("a")], [row("a", {"x": 1})], timeout_s=1.0)
            found = await store.lookup("churn", ["a", "b"], True, timeout_s=1.0)
            await store.ping(1.0)
            return found
        finally:
            await store.close()

    found = asyncio.run(scenario())
    assert found[0].entry.outputs == {"probability": 0.5} and found[0].features.values == {"x": 1}
    assert found[1].entry is None


def test_async_sqlite_store_raises_unavailable_when_file_is_not_a_database(tmp_path):
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"not a database" * 100)

    async def scenario():
        store = open_async_store(f"sqlite://{garbage}")
        try:
            await store.lookup("churn", ["a"], True, timeout_s=1.0)
        finally:
            await store.close()

    with pytest.raises(StoreUnavailableError, match="file is not a database"):
        asyncio.run(scenario())
