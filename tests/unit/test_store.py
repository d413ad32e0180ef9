"""The SQLite prediction store, its URL and run summaries, and `tritonkit freshness` on a real file."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import time

import numpy as np
import pytest
from typer.testing import CliRunner

from tritonkit.clients.hybrid import HybridClient, check_freshness
from tritonkit.clients.store import (
    Entry,
    StoreUnavailableError,
    normalize_run,
    open_store,
    parse_duration,
    redact,
    row_outputs,
)
from tritonkit.errors import NotFreshError, UsageError


@pytest.fixture
def db(tmp_path):
    return tmp_path / "preds.db"


@pytest.fixture
def store(db):
    with open_store(f"sqlite://{db}") as opened:
        yield opened


@pytest.fixture
def cli():
    from tritonkit.cli import app

    return app


def entry(entity_id, age_s=0.0, source="batch", outputs=None, model="churn"):
    return Entry(
        str(entity_id),
        model,
        "1",
        outputs or {"probability": 0.25, "label": 0, "risk_segment": 0},
        time.time() - age_s,
        source,
    )


def run_summary(run_id="r1", age_s=60.0, **extra):
    now = time.time()
    return {
        "run_id": run_id,
        "model": "churn",
        "model_version": "1",
        "started_at": now - age_s - 30,
        "finished_at": now - age_s,
        "rows_scored": 3,
        "rows_rejected": 1,
        **extra,
    }


def test_open_store_raises_usage_error_listing_schemes_when_scheme_unknown():
    with pytest.raises(UsageError, match=r"unknown scheme; expected one of sqlite://, redis://, rediss://"):
        open_store("postgres://db/preds")
    with pytest.raises(UsageError, match="unknown scheme"):
        open_store("/just/a/path.db")


def test_open_store_reads_ttls_from_url_and_rejects_unknown_parameters(db):
    assert open_store(f"sqlite://{db}?batch_ttl=2h&realtime_ttl=90s").ttl_s == {"batch": 7200.0, "realtime": 90.0}
    assert open_store(f"sqlite://{db}").ttl_s == {"batch": 86400.0, "realtime": 3600.0}
    with pytest.raises(UsageError, match="parameter 'ttl' is unknown; valid ones: batch_ttl, realtime_ttl"):
        open_store(f"sqlite://{db}?ttl=1h")


@pytest.mark.parametrize("text, seconds", [("90s", 90), ("30m", 1800), ("12h", 43200), ("2d", 172800), ("1.5h", 5400)])
def test_parse_duration_returns_seconds_when_unit_given(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["12", "12x", "h", "-1h", "0s", ""])
def test_parse_duration_raises_clear_error_when_malformed(text):
    with pytest.raises(UsageError, match="expected a positive number with a unit s, m, h or d, like 90s"):
        parse_duration(text, "--max-age")


def test_redact_hides_password_when_url_has_one():
    assert redact("redis://user:s3cret@host:6379/0") == "redis://user:***@host:6379/0"


def test_row_outputs_gives_scalars_and_text_when_rows_hold_one_value():
    arrays = {
        "probability": np.array([[0.5], [0.75]], np.float32),
        "label": np.array([[0], [1]]),
        "name": np.array([[b"High"], [b"Low"]], dtype=object),
        "embedding": np.ones((2, 3), np.float32),
    }
    assert row_outputs(arrays, 1) == {"probability": 0.75, "label": 1, "name": "Low", "embedding": [1.0, 1.0, 1.0]}


def test_sqlite_get_returns_entry_when_put(store):
    written = entry("42", outputs={"probability": np.float32(0.5), "label": np.int64(1), "segment": "High"})
    store.put_many([written])
    got = store.get("churn", "42")
    assert got.outputs == {"probability": 0.5, "label": 1, "segment": "High"}
    assert (got.model_version, got.source, got.predicted_at) == ("1", "batch", written.predicted_at)
    assert store.get("churn", "43") is None and store.get("other", "42") is None


def test_sqlite_get_returns_newest_write_when_entity_put_twice(store):
    store.put_many([entry("1", outputs={"p": 1})])
    store.put_many([entry("1", source="realtime", outputs={"p": 2})])
    assert store.get("churn", "1").outputs == {"p": 2} and store.get("churn", "1").source == "realtime"


def test_sqlite_get_returns_none_when_entry_expired_per_source(db):
    store = open_store(f"sqlite://{db}?batch_ttl=1h&realtime_ttl=1m")
    store.put_many(
        [
            entry("batch-30m", age_s=1800),
            entry("live-30m", age_s=1800, source="realtime"),
            entry("batch-2h", age_s=7200),
        ]
    )
    assert store.get("churn", "batch-30m") is not None
    assert store.get("churn", "live-30m") is None and store.get("churn", "batch-2h") is None
    reader = sqlite3.connect(db)

    def rows():
        return reader.execute("SELECT entity_id FROM predictions ORDER BY entity_id").fetchall()

    assert rows() == [("batch-30m",)]  # the first write purged expired rows
    store.put_many([entry("batch-3h", age_s=3 * 3600)])  # within the purge interval: the row stays, unseen
    assert rows() == [("batch-30m",), ("batch-3h",)] and store.get("churn", "batch-3h") is None
    assert store.purge_expired() == 1 and rows() == [("batch-30m",)]


def test_sqlite_entry_expires_when_short_ttl_passes(db):
    store = open_store(f"sqlite://{db}?realtime_ttl=1s")
    store.put_many([entry("1", source="realtime")])
    assert store.get("churn", "1") is not None
    time.sleep(1.05)
    assert store.get("churn", "1") is None


def test_sqlite_put_many_leaves_nothing_visible_when_last_entry_fails(store, db):
    store.put_many([entry("kept")])
    batch = [entry(i) for i in range(500)] + [entry("bad", outputs={"probability": object()})]
    with pytest.raises(UsageError, match="outputs of entity `bad` .* are not JSON-serialisable"):
        store.put_many(batch)
    assert store.get("churn", "0") is None and store.get("churn", "499") is None
    count = sqlite3.connect(db).execute("SELECT COUNT(*) FROM predictions").fetchone()[0]
    assert count == 1 and store.get("churn", "kept") is not None
    store.put_many(batch[:-1])  # the store is still usable after the failed call
    assert store.get("churn", "499") is not None


CRASH_MID_PUT = """
import os, sys, time
from tritonkit.clients.store import Entry, open_store

serialise = Entry.outputs_json
Entry.outputs_json = lambda self: os._exit(9) if self.entity_id == "crash" else serialise(self)
entries = [Entry(str(i), "churn", "1", {"p": 0.5}, time.time(), "batch") for i in range(1000)]
open_store(sys.argv[1]).put_many(entries + [Entry("crash", "churn", "1", {}, time.time(), "batch")])
"""


def test_sqlite_put_many_leaves_nothing_visible_when_process_dies_mid_call(store, db):
    store.put_many([entry("kept")])
    died = subprocess.run([sys.executable, "-c", CRASH_MID_PUT, f"sqlite://{db}"], capture_output=True, timeout=60)
    assert died.returncode == 9, died.stderr.decode()  # killed inside the transaction: no rollback ran
    with open_store(f"sqlite://{db}") as reopened:
        assert reopened.get("churn", "0") is None and reopened.get("churn", "kept") is not None
    assert sqlite3.connect(db).execute("SELECT COUNT(*) FROM predictions").fetchone()[0] == 1


def test_sqlite_last_run_returns_latest_finished_when_several_recorded(store):
    assert store.last_run("churn") is None
    store.record_run("churn", run_summary("new", age_s=60, entities=["a", "b", "b", 3]))
    store.record_run("churn", run_summary("old", age_s=7200))
    last = store.last_run("churn")
    assert last["run_id"] == "new" and last["entity_count"] == 3 and "entities" not in last
    assert last["rows_scored"] == 3 and last["rows_rejected"] == 1


def test_normalize_run_raises_listing_valid_keys_when_key_unknown():
    with pytest.raises(UsageError, match=r"unknown key\(s\) rows; valid ones: run_id, model, "):
        normalize_run("churn", {**run_summary(), "rows": 3})
    with pytest.raises(UsageError, match="needs finished_at"):
        normalize_run("churn", {"run_id": "x"})
    with pytest.raises(UsageError, match="for model `churn`, recorded under `other`"):
        normalize_run("other", run_summary())
    iso = normalize_run("churn", {"run_id": "x", "finished_at": "2025-01-01T00:00:00+00:00"})
    assert iso["finished_at"] == 1735689600


def test_sqlite_count_fresh_counts_unexpired_within_max_age_per_source(store):
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
    assert store.count_fresh("churn", 12 * 3600) == {"batch": 2, "realtime": 1}  # e expired after 1 h


def test_sqlite_store_raises_unavailable_when_file_is_not_a_database(tmp_path):
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"this is not an SQLite file" * 100)
    with pytest.raises(StoreUnavailableError, match="failed to read a prediction: file is not a database"):
        open_store(f"sqlite://{garbage}").get("churn", "1")
    with pytest.raises(StoreUnavailableError, match="does not exist"):
        open_store(f"sqlite://{tmp_path}/no/such/folder/preds.db").put_many([entry("1")])


def test_hybrid_lookup_degrades_and_counts_when_store_unreadable(tmp_path):
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"\0garbage" * 200)
    client = HybridClient(open_store(f"sqlite://{garbage}"), None, "churn", fallback="none")
    result = client.lookup("1")
    assert result.status == "store_unavailable" and result.outputs is None and "file is not a database" in result.detail
    assert client.stats.store_errors == 1 and client.stats.hit_rate == 0.0


def test_hybrid_lookup_returns_stale_entry_when_fallback_none(store):
    store.put_many([entry("old", age_s=7200), entry("new", age_s=10)])
    client = HybridClient(store, None, "churn", max_age_s=3600, fallback="none")
    stale, hit, miss = client.lookup("old"), client.lookup("new"), client.lookup("nobody")
    assert (stale.status, stale.source, stale.outputs["probability"]) == ("stale", "batch", 0.25)
    assert stale.age_s == pytest.approx(7200, abs=5)
    assert (hit.status, hit.source) == ("hit", "batch") and hit.age_s < 60
    assert (miss.status, miss.outputs, miss.source) == ("miss", None, None)
    assert client.stats.to_dict() == {
        "lookups": 3,
        "hit": 1,
        "miss": 1,
        "stale": 1,
        "fallback": 0,
        "fallback_errors": 0,
        "store_errors": 0,
        "hit_rate": 0.3333,
    }


def test_hybrid_client_raises_when_realtime_fallback_has_no_triton(store):
    with pytest.raises(UsageError, match="needs a Triton client"):
        HybridClient(store, None, "churn")
    with pytest.raises(UsageError, match="expected one of realtime, none"):
        HybridClient(store, None, "churn", fallback="cache")


def test_check_freshness_reports_coverage_over_last_run_entities(store):
    store.put_many([entry(i, age_s=60) for i in range(3)] + [entry(9, age_s=30 * 3600)])
    store.record_run("churn", run_summary(entities=[0, 1, 2, 3]))
    report = check_freshness(store, "churn", 24 * 3600)
    assert report.ok and report.fresh_entities == 3 and report.total_entities == 4 and report.coverage == 0.75
    assert check_freshness(store, "churn", 24 * 3600, total_entities=10, min_coverage=0.5).status == "low_coverage"


def test_freshness_command_exits_zero_with_json_when_run_is_fresh(cli, store, db):
    store.put_many([entry(i) for i in range(4)])
    store.record_run("churn", run_summary(age_s=600))
    result = CliRunner().invoke(
        cli, ["freshness", "--model", "churn", "--store", f"sqlite://{db}", "--json", "--entities", "8"]
    )
    assert result.exit_code == 0, result.output
    body = json.loads(result.stdout)
    assert body["status"] == "fresh" and body["last_run"]["run_id"] == "r1" and body["coverage"] == 0.5
    assert 590 < body["age_s"] < 700 and body["max_age_s"] == 86400


def test_freshness_command_exits_7_when_last_run_is_stale(cli, store, db):
    store.put_many([entry(i, age_s=26 * 3600) for i in range(4)])
    store.record_run("churn", run_summary(age_s=26 * 3600))
    result = CliRunner().invoke(
        cli, ["freshness", "--model", "churn", "--max-age", "1d"], env={"TRITONKIT_STORE": f"sqlite://{db}"}
    )
    assert result.exit_code == NotFreshError.exit_code == 7
    assert "stale" in result.output and "1d 2h ago" in result.output and "0 / 4 (0.0%)" in result.output
    result = CliRunner().invoke(cli, ["freshness", "--model", "churn", "--max-age", "2d", "--store", f"sqlite://{db}"])
    assert result.exit_code == 0 and "fresh" in result.output


def test_freshness_command_exits_7_when_no_run_recorded(cli, db):
    result = CliRunner().invoke(cli, ["freshness", "--model", "churn", "--store", f"sqlite://{db}", "--json"])
    assert result.exit_code == 7 and json.loads(result.stdout)["status"] == "no_run"


def test_freshness_command_raises_clear_error_when_max_age_malformed(cli, db):
    result = CliRunner().invoke(cli, ["freshness", "--model", "churn", "--store", f"sqlite://{db}", "--max-age", "1w"])
    assert result.exit_code == UsageError.exit_code == 2
    assert "--max-age is '1w'; expected a positive number with a unit s, m, h or d" in result.stderr


def test_lookup_command_exits_7_with_json_when_miss_and_no_fallback(cli, store, db):
    store.put_many([entry("7")])
    args = ["lookup", "--model", "churn", "--store", f"sqlite://{db}", "--fallback", "none"]
    hit = CliRunner().invoke(cli, [*args, "--id", "7"])
    assert hit.exit_code == 0 and json.loads(hit.stdout)["status"] == "hit"
    miss = CliRunner().invoke(cli, [*args, "--id", "8"])
    assert miss.exit_code == 7 and json.loads(miss.stdout) == {
        "model": "churn",
        "entity_id": "8",
        "outputs": None,
        "source": None,
        "age_s": None,
        "status": "miss",
        "model_version": None,
        "detail": None,
    }
