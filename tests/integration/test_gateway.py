"""`tritonkit gateway` over real HTTP, with a real redis-server and the real embedded Triton.

One gateway process (two workers, so /metrics sums processes) serves the module; its Redis and its Triton
are the module's own, because two tests stop them. Those run last, in file order: the new model version,
Redis stopped (and restarted), Triton stopped.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest
from gateway_support import (
    SLOW_SLEEP_S,
    GatewayProcess,
    call,
    gateway_repository,
    metrics,
    value,
    wait_for,
)
from test_store_redis import RedisProcess
from typer.testing import CliRunner

from tritonkit.clients import TritonClient
from tritonkit.clients.store import Entry, FeatureRow, open_store, row_outputs
from tritonkit.export.churn import synthetic_customers
from tritonkit.server import EmbeddedServer, free_port

RECORD = {
    "tenure_months": 3.0,
    "monthly_charges": 95.5,
    "support_calls": 4.0,
    "days_since_login": 21.0,
    "num_products": 1.0,
}
ZONE = "America/New_York"
PLACEHOLDER = {"probability": -1.0, "label": -1, "risk_segment": -1}
SERVED_VERSION = "1"
SERVED_AFTER_BUMP = "2"  # the churn version Triton serves once the version test has added it (tests below it)


@pytest.fixture(scope="module")
def triton(churn_repository, tmp_path_factory):
    repository = gateway_repository(churn_repository, tmp_path_factory.mktemp("gateway-repository"))
    server = EmbeddedServer(
        repository,
        http_port=0,
        grpc_port=0,
        metrics_port=0,
        model_control_mode="poll",
        extra_args=["--repository-poll-secs=1"],
        log_file=tmp_path_factory.mktemp("gateway-logs") / "triton.log",
    )
    with server:
        yield server


@pytest.fixture(scope="module")
def redis_process(tmp_path_factory):
    process = RedisProcess(tmp_path_factory.mktemp("gateway-redis")).start()
    yield process
    process.stop()


@pytest.fixture(scope="module")
def gateway(triton, redis_process, tmp_path_factory):
    folder = tmp_path_factory.mktemp("gateway")
    declarations = folder / "request-features.yaml"
    declarations.write_text(
        f"clock:\n  time_zone: {ZONE}\n  features:\n"
        "    hour_of_day: hour_of_day\n    day_of_week: day_of_week\n    is_weekend: is_weekend\n"
    )
    args = ["-m", "churn", "-m", "clock", "-m", "slow", "--store", redis_process.url, "--url", triton.grpc_url]
    args += ["--request-features", str(declarations), "--version-refresh-s", "1", "--timeout-ms", "5000"]
    args += ["--workers", "2"]
    process = GatewayProcess(args, free_port(), folder / "gateway.log").start()
    wait_for(lambda: call(process.port, "GET", "/readyz")[0] == 200)
    yield process
    process.stop()


@pytest.fixture
def store(redis_process):
    with open_store(redis_process.url) as opened:
        yield opened


@pytest.fixture(scope="module")
def direct(triton):
    with TritonClient(triton.grpc_url) as client:
        yield client


def entry(entity, model="churn", age_s=0.0, version="1", outputs=None):
    return Entry(str(entity), model, version, outputs or PLACEHOLDER, time.time() - age_s, "batch")


def features(entity, values=None, model="churn"):
    return FeatureRow(str(entity), model, values or RECORD, time.time())


def get(gateway, model, entity, query=""):
    return call(gateway.port, "GET", f"/v1/models/{model}/predictions/{entity}{query}")


def live_outputs(direct, record, model="churn"):
    return row_outputs(direct.predict(model, record).outputs)


# --- the hybrid decisions ------------------------------------------------------------------------------


def test_gateway_returns_stored_entry_as_hit_when_fresh(gateway, store):
    store.put_many([entry("hit-1")])
    status, _, body = get(gateway, "churn", "hit-1")
    assert status == 200
    assert body["status"] == "hit" and body["source"] == "batch" and body["outputs"] == PLACEHOLDER
    assert body["model_version"] == "1" and 0 <= body["age_s"] < 60


def test_gateway_scores_live_with_stored_features_and_writes_back_when_missing(gateway, store, direct):
    store.put_features([features("miss-1")])
    before = metrics(gateway.port)
    status, _, body = get(gateway, "churn", "miss-1")
    after = metrics(gateway.port)
    assert status == 200 and body["status"] == "miss" and body["source"] == "live"
    assert body["outputs"] == live_outputs(direct, RECORD)
    for name, labels in (
        ("tritonkit_gateway_store_seconds_count", {"op": "read"}),
        ("tritonkit_gateway_live_call_seconds_count", {"model": "churn"}),
    ):
        assert (
            value(after, name, **labels) - value(before, name, **labels) == 1
        )  # one store round trip, one Triton call
    written = wait_for(lambda: store.get("churn", "miss-1"))
    assert written.source == "realtime" and written.outputs == body["outputs"]
    again = get(gateway, "churn", "miss-1")[2]
    assert again["status"] == "hit" and again["source"] == "realtime"


def test_gateway_rescores_entry_when_older_than_max_age(gateway, store, direct):
    store.put_many([entry("old-1", age_s=7200)], [features("old-1")])
    fresh_enough = get(gateway, "churn", "old-1", "?max_age=3h")[2]
    assert fresh_enough["status"] == "hit" and fresh_enough["outputs"] == PLACEHOLDER
    status, _, body = get(gateway, "churn", "old-1", "?max_age=1h")
    assert status == 200 and body["status"] == "stale" and body["source"] == "live"
    assert body["outputs"] == live_outputs(direct, RECORD) and "max_age is 3600 s" in body["detail"]


def test_gateway_answers_from_store_only_when_fallback_none(gateway, store):
    store.put_many([entry("none-1", age_s=7200)], [features("none-1")])
    status, _, body = get(gateway, "churn", "none-1", "?max_age=1h&fallback=none")
    assert status == 200 and body["status"] == "stale" and body["source"] == "batch" and body["outputs"] == PLACEHOLDER
    status, _, body = get(gateway, "churn", "none-2", "?fallback=none")
    assert status == 404 and body["status"] == "miss" and body["outputs"] is None


def test_gateway_says_not_found_naming_input_when_entity_has_no_features(gateway):
    status, _, body = get(gateway, "churn", "nobody-at-all")
    assert status == 404 and body["status"] == "miss" and body["field"] == "tenure_months"
    assert "no stored features" in body["detail"]


def test_gateway_live_path_matches_batch_row_when_features_pushed(gateway, store, tmp_path):
    """No training/serving skew: features pushed from a file, the same file batch-scored, then an entity
    scored live from the pushed features gets the batch row's outputs."""
    from tritonkit.cli import app

    frame = synthetic_customers(40, seed=11)
    frame["customer_id"] = [f"skew-{i}" for i in range(len(frame))]
    data = tmp_path / "customers.parquet"
    frame.to_parquet(data)
    runner = CliRunner()
    url = store.url
    pushed = runner.invoke(
        app,
        ["features", "push", "-m", "churn", "-i", str(data), "--id-column", "customer_id", "--store", url, "--json"],
    )
    assert pushed.exit_code == 0, pushed.output
    assert json.loads(pushed.output)["rows_written"] == 40
    scored = runner.invoke(
        app,
        ["score", "-m", "churn", "-i", str(data), "-o", str(tmp_path / "out.parquet"), "--id-column", "customer_id"]
        + ["--store", url, "--url", gateway_triton_url(gateway), "--no-progress"],
    )
    assert scored.exit_code == 0, scored.output
    for entity in ("skew-0", "skew-17", "skew-39"):
        batch = store.get("churn", entity)
        assert batch.source == "batch"
        status, _, body = get(gateway, "churn", entity, "?max_age=0.001")
        assert status == 200 and body["status"] == "stale" and body["source"] == "live"
        assert body["outputs"]["label"] == batch.outputs["label"]
        assert body["outputs"]["risk_segment"] == batch.outputs["risk_segment"]
        assert body["outputs"]["probability"] == pytest.approx(batch.outputs["probability"], rel=1e-6, abs=1e-7)


def gateway_triton_url(gateway) -> str:
    return gateway.args[gateway.args.index("--url") + 1]


def test_gateway_fills_request_time_features_in_model_time_zone_when_declared(gateway, store):
    store.put_features([features("clock-1", {"x": 5.0}, model="clock")])
    before = datetime.now(ZoneInfo(ZONE))
    status, _, body = get(gateway, "clock", "clock-1")
    after = datetime.now(ZoneInfo(ZONE))
    assert status == 200 and body["status"] == "miss", body
    outputs = body["outputs"]
    assert outputs["x_out"] == 5.0
    expected = {(t.hour, t.weekday(), float(t.weekday() >= 5)) for t in (before, after)}
    assert (outputs["hour"], outputs["dow"], outputs["weekend"]) in expected


def test_gateway_merges_posted_features_over_stored_and_writes_them_back(gateway, store):
    store.put_features([features("clock-2", {"x": 1.0}, model="clock")])
    status, _, body = call(gateway.port, "POST", "/v1/models/clock/predictions/clock-2", {"x": 7.0, "hour_of_day": 13})
    assert status == 200 and body["status"] == "scored" and body["source"] == "live"
    assert body["outputs"]["x_out"] == 7.0 and body["outputs"]["hour"] == 13.0  # a given value wins
    stored = store.get_features("clock", "clock-2")
    assert stored.values == {"x": 7.0}  # request-time features are not stored
    assert store.get("clock", "clock-2").outputs == body["outputs"]  # a POST's write-back is done when it answers


def test_gateway_names_missing_input_when_posted_features_incomplete(gateway):
    partial = {k: v for k, v in RECORD.items() if k != "num_products"}
    status, _, body = call(gateway.port, "POST", "/v1/models/churn/predictions/partial-1", partial)
    assert status == 422 and body["status"] == "invalid" and body["field"] == "num_products"


@pytest.mark.parametrize(
    ("method", "path", "body", "code", "field"),
    [
        ("GET", "/v1/models/churn/predictions/bad%20id", None, 400, "entity_id"),
        ("GET", "/v1/models/churn/predictions/x?max_age=soon", None, 400, "max_age"),
        ("GET", "/v1/models/churn/predictions/x?fallback=cache", None, 400, "fallback"),
        ("GET", "/v1/models/churn/predictions/x?timeout_ms=0", None, 400, "timeout_ms"),
        ("GET", "/v1/models/churn/predictions/x?colour=red", None, 400, "colour"),
        ("GET", "/v1/models/nope/predictions/x", None, 404, "model"),
        ("POST", "/v1/models/churn/predictions/x", b"{not json", 400, "body"),
        ("POST", "/v1/models/churn/predictions/x", [1, 2], 400, "body"),
        ("POST", "/v1/models/churn/predictions/x", {**RECORD, "tenure_months": "long"}, 422, "tenure_months"),
        ("POST", "/v1/models/churn/predictions/x", {**RECORD, "colour": 1}, 422, "colour"),
        ("POST", "/v1/models/churn/predictions:batchGet", {"keys": ["a"]}, 400, "ids"),
        ("POST", "/v1/models/churn/predictions:batchGet", {"ids": ["a", "b c"]}, 400, "ids[1]"),
        ("POST", "/v1/models/churn/predictions:batchGet", {"ids": ["a"] * 1001}, 400, "ids"),
        ("GET", "/v1/models/churn/predictions:batchGet", None, 405, "method"),
    ],
)
def test_gateway_refuses_bad_request_naming_the_field(gateway, method, path, body, code, field):
    status, _, answer = call(gateway.port, method, path, body)
    assert status == code, answer
    assert answer["field"] == field


def test_gateway_batch_get_costs_one_store_read_and_one_live_call_when_ids_mixed(gateway, store, direct):
    store.put_many([entry("mix-hit"), entry("mix-stale", age_s=7200)], [features("mix-stale"), features("mix-miss")])
    other = {**RECORD, "support_calls": 0.0}
    store.put_features([features("mix-miss-2", other)])
    before = metrics(gateway.port)
    ids = ["mix-hit", "mix-stale", "mix-miss", "mix-unknown", "mix-miss-2"]
    status, _, body = call(gateway.port, "POST", "/v1/models/churn/predictions:batchGet?max_age=1h", {"ids": ids})
    after = metrics(gateway.port)
    assert status == 200
    results = {r["entity_id"]: r for r in body["results"]}
    assert [r["entity_id"] for r in body["results"]] == ids
    assert results["mix-hit"]["status"] == "hit" and results["mix-hit"]["outputs"] == PLACEHOLDER
    assert results["mix-stale"]["status"] == "stale" and results["mix-stale"]["source"] == "live"
    assert results["mix-miss"]["outputs"] == live_outputs(direct, RECORD)
    assert results["mix-miss-2"]["outputs"] == live_outputs(direct, other)
    assert results["mix-unknown"]["status"] == "miss" and results["mix-unknown"]["outputs"] is None
    assert body["statuses"] == {"hit": 1, "stale": 1, "miss": 3}

    def delta(name, **labels):
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("tritonkit_gateway_store_seconds_count", op="read") == 1
    assert delta("tritonkit_gateway_live_call_seconds_count", model="churn") == 1


def test_gateway_metrics_count_each_lookup_by_status_when_requests_sent(gateway, store):
    store.put_many([entry("count-hit")], [features("count-miss")])
    store.record_run("churn", {"run_id": "nightly", "finished_at": time.time(), "rows_scored": 97, "rows_rejected": 3})
    before = metrics(gateway.port)
    for _ in range(3):
        get(gateway, "churn", "count-hit")
    get(gateway, "churn", "count-miss")
    get(gateway, "churn", "count-nobody")
    get(gateway, "churn", "bad%20id")
    after = wait_for(
        lambda: (m := metrics(gateway.port)) and value(m, "tritonkit_batch_rows_rejected", model="churn") == 3 and m
    )

    def delta(name, **labels):
        return value(after, name, **labels) - value(before, name, **labels)

    lookups = "tritonkit_gateway_lookups_total"
    assert delta(lookups, model="churn", status="hit") == 3
    assert delta(lookups, model="churn", status="miss") == 2
    assert delta("tritonkit_gateway_http_requests_total", route="predictions.get", code="200") == 4
    assert delta("tritonkit_gateway_http_requests_total", route="predictions.get", code="404") == 1
    assert delta("tritonkit_gateway_http_requests_total", route="predictions.get", code="400") == 1
    total = sum(v for (name, labels), v in after.items() if name == lookups and ("model", "churn") in labels)
    assert value(after, "tritonkit_gateway_hit_ratio", model="churn") == pytest.approx(
        value(after, lookups, model="churn", status="hit") / total
    )
    assert value(after, "tritonkit_batch_rows_scored", model="churn") == 97
    assert 0 <= value(after, "tritonkit_batch_last_run_age_seconds", model="churn") < 60
    assert value(after, "tritonkit_gateway_store_up") == 1


def test_gateway_command_exits_2_naming_input_when_declaration_does_not_fit_the_model(triton, tmp_path):
    from tritonkit.cli import app

    declarations = tmp_path / "request-features.yaml"
    declarations.write_text("churn:\n  features:\n    hour: hour_of_day\n")
    args = ["gateway", "-m", "churn", "--store", f"sqlite://{tmp_path / 'p.db'}", "--url", triton.grpc_url]
    result = CliRunner().invoke(app, [*args, "--request-features", str(declarations), "--port", str(free_port())])
    assert result.exit_code == 2
    assert "`hour` is not an input of model `churn`" in result.output


def test_gateway_serves_openapi_and_docs_when_asked(gateway):
    status, _, spec = call(gateway.port, "GET", "/openapi.json")
    assert status == 200 and "/v1/models/{model}/predictions:batchGet" in spec["paths"]
    status, headers, page = call(gateway.port, "GET", "/docs")
    assert status == 200 and headers["content-type"].startswith("text/html") and "/openapi.json" in page


def test_gateway_serves_hits_and_writes_back_when_store_is_sqlite(triton, direct, tmp_path):
    url = f"sqlite://{tmp_path / 'predictions.db'}"
    with open_store(url) as sqlite_store:
        sqlite_store.put_many([entry("sq-hit")], [features("sq-miss")])
    args = ["-m", "churn", "--store", url, "--url", triton.grpc_url, "--timeout-ms", "5000"]
    process = GatewayProcess(args, free_port(), tmp_path / "gateway.log").start()
    try:
        assert get(process, "churn", "sq-hit")[2]["status"] == "hit"
        status, _, body = get(process, "churn", "sq-miss")
        assert status == 200 and body["status"] == "miss" and body["outputs"] == live_outputs(direct, RECORD)
        with open_store(url) as sqlite_store:
            written = wait_for(lambda: sqlite_store.get("churn", "sq-miss"))
        assert written.source == "realtime" and written.outputs == body["outputs"]
    finally:
        process.stop()


def test_gateway_locust_user_sends_hits_and_misses_at_its_ratio(gateway, store, tmp_path):
    import csv
    import subprocess
    import sys
    from pathlib import Path

    ids = {"hit": [f"lh{i}" for i in range(20)], "miss": [f"lm{i}" for i in range(20)]}
    store.put_many([entry(e, version=SERVED_VERSION) for e in ids["hit"]], [features(e) for e in ids["miss"]])
    files = {}
    for kind, values in ids.items():
        files[kind] = tmp_path / f"{kind}.txt"
        files[kind].write_text("\n".join(values))
    locustfile = Path(__file__).resolve().parents[2] / "benchmarks" / "gateway_locust.py"
    command = [sys.executable, "-m", "locust", "-f", str(locustfile), "--headless", "-u", "2", "-r", "2", "-t", "6s"]
    command += ["--host", f"http://127.0.0.1:{gateway.port}", "--csv", str(tmp_path / "run"), "--only-summary"]
    env = {**os.environ, "TRITONKIT_HIT_RATIO": "0.5", "TRITONKIT_HIT_IDS": str(files["hit"])}
    env["TRITONKIT_MISS_IDS"] = str(files["miss"])
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    with open(tmp_path / "run_stats.csv") as handle:
        rows = {row["Name"]: row for row in csv.DictReader(handle)}
    assert {"churn hit", "churn miss"} <= set(rows), (rows.keys(), done.stderr[-1000:])
    hits, misses = int(rows["churn hit"]["Request Count"]), int(rows["churn miss"]["Request Count"])
    assert hits > 0 and abs(hits - misses) <= 2  # exact mix: one each in turn, per user
    assert rows["Aggregated"]["Failure Count"] == "0"


# --- budgets and degradation ---------------------------------------------------------------------------


def test_gateway_answers_within_budget_when_model_is_slower(gateway, store):
    store.put_features([features("slow-1", {"x": 1.0}, model="slow")])
    store.put_many(
        [entry("slow-2", model="slow", age_s=7200, outputs={"y": 2.0})], [features("slow-2", {"x": 2.0}, model="slow")]
    )
    start = time.monotonic()
    status, headers, body = get(gateway, "slow", "slow-1", "?timeout_ms=300")
    assert time.monotonic() - start < SLOW_SLEEP_S  # the answer did not wait for the model
    assert status == 504 and body["status"] == "live_failed" and "300 ms budget" in body["detail"]
    status, _, body = get(gateway, "slow", "slow-2", "?timeout_ms=300&max_age=1h")
    assert status == 200 and body["status"] == "live_failed" and body["outputs"] == {"y": 2.0}
    assert body["source"] == "batch" and "budget" in body["detail"]


def test_gateway_treats_older_version_entries_as_stale_when_triton_serves_newer(gateway, triton, store, direct):
    store.put_many([entry("v-1", version="1")], [features("v-1")])
    assert get(gateway, "churn", "v-1")[2]["status"] == "hit"
    shutil.copytree(triton.model_repository / "churn" / "1", triton.model_repository / "churn" / "2")
    body = wait_for(lambda: (b := get(gateway, "churn", "v-1")[2]).get("model_version") == "2" and b, timeout_s=60)
    assert body["status"] == "stale" and body["source"] == "live"
    assert "model version 1; Triton serves 2" in body["detail"]
    assert body["outputs"] == live_outputs(direct, RECORD)


def test_gateway_degrades_to_live_calls_when_redis_stops(gateway, redis_process, direct):
    with open_store(redis_process.url) as store:
        store.put_many([entry("redis-1", version=SERVED_AFTER_BUMP)])
    before = metrics(gateway.port)
    redis_process.stop()
    try:
        status, _, body = call(gateway.port, "POST", "/v1/models/churn/predictions/redis-1", RECORD)
        assert status == 200 and body["status"] == "store_unavailable" and body["source"] == "live"
        assert body["outputs"] == live_outputs(direct, RECORD)
        status, headers, body = get(gateway, "churn", "redis-1")
        assert status == 503 and headers["retry-after"] == "1" and body["status"] == "store_unavailable"
        status, _, report = call(gateway.port, "GET", "/readyz")
        assert status == 503 and report["store"] != "ok"
        after = metrics(gateway.port)
        assert (
            value(after, "tritonkit_gateway_store_errors_total", op="read")
            - value(before, "tritonkit_gateway_store_errors_total", op="read")
            >= 2
        )
        assert value(after, "tritonkit_gateway_lookups_total", model="churn", status="store_unavailable") >= 2
    finally:
        redis_process.start()
    with open_store(redis_process.url) as store:
        store.put_many([entry("redis-2", version=SERVED_AFTER_BUMP)])
    bodies = []
    wait_for(
        lambda: bodies.append(get(gateway, "churn", "redis-2")[2]) or bodies[-1]["status"] == "hit", message=bodies
    )
    assert bodies[-1]["outputs"] == PLACEHOLDER


def test_gateway_serves_stale_entry_or_503_when_triton_stops(gateway, triton, redis_process):
    with open_store(redis_process.url) as store:
        store.put_many(
            [entry("down-1", age_s=7200, version=SERVED_AFTER_BUMP)], [features("down-1"), features("down-2")]
        )
    triton.stop()
    status, _, body = get(gateway, "churn", "down-1", "?max_age=1h")
    assert status == 200 and body["status"] == "live_failed" and body["outputs"] == PLACEHOLDER, body
    assert body["source"] == "batch" and "live call failed" in body["detail"]
    status, headers, body = get(gateway, "churn", "down-2")
    assert status == 503 and headers["retry-after"] == "1" and body["status"] == "live_failed"
    assert get(gateway, "churn", "down-1")[2]["status"] == "hit"  # hits do not need Triton
    status, _, report = call(gateway.port, "GET", "/readyz")
    assert status == 503 and report["models"]["churn"].startswith("not ready")
    after = metrics(gateway.port)
    assert value(after, "tritonkit_gateway_live_errors_total", model="churn", reason="unavailable") >= 2
