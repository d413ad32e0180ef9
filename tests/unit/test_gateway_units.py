"""The gateway's parts that need no socket: settings, request-time features, request parsing, the OpenAPI
document, the scrape-time metrics, and the hybrid decisions answered from a real SQLite store."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tritonkit.clients.endpoint import Endpoint, RetryPolicy
from tritonkit.clients.gateway import openapi, request_features
from tritonkit.clients.gateway.app import HttpError, batch_ids, duration, route_of, split_path
from tritonkit.clients.gateway.core import Gateway
from tritonkit.clients.gateway.live import LiveModel
from tritonkit.clients.gateway.metrics import Metrics
from tritonkit.clients.gateway.outcome import STATUSES
from tritonkit.clients.gateway.settings import GatewaySettings
from tritonkit.clients.metadata import ModelMeta, TensorMeta
from tritonkit.clients.store import Entry, open_store
from tritonkit.clients.store_async import open_async_store
from tritonkit.errors import UsageError

CLOCK_META = ModelMeta(
    "clock",
    ("1",),
    "onnxruntime_onnx",
    (
        TensorMeta("x", "FP32", (-1, 1)),
        TensorMeta("hour_of_day", "INT32", (-1, 1)),
        TensorMeta("window", "FP32", (-1, 4)),
    ),
    (TensorMeta("y", "FP32", (-1, 1)),),
    64,
)


def settings(tmp_path, **changes) -> GatewaySettings:
    return GatewaySettings(**{"models": ("churn",), "store": f"sqlite://{tmp_path / 'g.db'}", **changes})


# --- settings ------------------------------------------------------------------------------------------


def test_settings_round_trip_through_json_with_header_values_when_written(tmp_path):
    endpoint = Endpoint("triton:8001", headers={"authorization": "Bearer s3cret"}, timeout_s=0.2, retry=RetryPolicy(3))
    original = settings(tmp_path, endpoint=endpoint, max_age_s=60.0, workers=3)
    original.write(tmp_path / "settings.json")
    assert oct((tmp_path / "settings.json").stat().st_mode & 0o777) == "0o600"
    again = GatewaySettings.from_json((tmp_path / "settings.json").read_text())
    assert again == original and again.endpoint.headers["authorization"] == "Bearer s3cret"
    assert "s3cret" not in repr(again)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"models": ()}, "--model is required"),
        ({"models": ("bad:name",)}, "cannot be stored"),
        ({"store": "postgres://x"}, "unknown scheme"),
        ({"fallback": "cache"}, "--fallback is 'cache'"),
        ({"workers": 0}, "--workers is 0"),
        ({"port": 70000}, "--port is 70000"),
        ({"request_features": "/no/such/file.yaml"}, "no such file"),
    ],
)
def test_settings_raise_usage_error_naming_option_when_invalid(tmp_path, changes, message):
    values = {"models": ("churn",), "store": f"sqlite://{tmp_path / 'g.db'}", **changes}
    with pytest.raises(UsageError, match=message):
        GatewaySettings(**values)


# --- request-time features -----------------------------------------------------------------------------


def test_request_features_load_yaml_and_compute_values_in_zone_when_declared(tmp_path):
    path = tmp_path / "rt.yaml"
    path.write_text("clock:\n  time_zone: Asia/Tokyo\n  features:\n    hour_of_day: hour_of_day\n    x: is_weekend\n")
    declared = request_features.load(path, ("clock", "churn"))
    saturday_2330_utc = datetime(2026, 11, 28, 23, 30, tzinfo=ZoneInfo("UTC")).timestamp()  # Sunday 08:30 in Tokyo
    assert declared["clock"].values(saturday_2330_utc) == {"hour_of_day": 8, "x": 1}
    declared["clock"].check(CLOCK_META)


def test_request_features_load_json_when_suffix_is_json(tmp_path):
    path = tmp_path / "rt.json"
    path.write_text(json.dumps({"clock": {"features": {"hour_of_day": "day_of_week"}}}))
    declared = request_features.load(path, ("clock",))
    assert declared["clock"].time_zone == "UTC"
    assert declared["clock"].values(0.0) == {"hour_of_day": 3}  # 1970-01-01 was a Thursday


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("other:\n  features: {}\n", "declares model `other`, which the gateway does not serve"),
        ("clock:\n  zone: UTC\n", r"unknown key\(s\) zone; valid keys: time_zone, features"),
        ("clock:\n  features:\n    x: hour\n", "is 'hour'; expected one of hour_of_day, day_of_week"),
        ("clock:\n  time_zone: Mars/Olympus\n  features: {}\n", "'Mars/Olympus' is not an IANA time zone"),
        ("- just a list\n", "expected a mapping of model names"),
        ("clock: [\n", "is not valid YAML"),
    ],
)
def test_request_features_load_raises_naming_the_problem_when_file_is_wrong(tmp_path, text, message):
    path = tmp_path / "rt.yaml"
    path.write_text(text)
    with pytest.raises(UsageError, match=message):
        request_features.load(path, ("clock",))


def test_request_features_check_names_input_when_model_lacks_it_or_it_is_not_one_number():
    missing = request_features.RequestFeatures("clock", "UTC", {"minute": "minute_of_hour"})
    with pytest.raises(UsageError, match="`minute` is not an input of model `clock`; its inputs: x FP32"):
        missing.check(CLOCK_META)
    vector = request_features.RequestFeatures("clock", "UTC", {"window": "month"})
    with pytest.raises(UsageError, match=r"takes FP32 \[-1, 4\]; a request-time feature is one number per record"):
        vector.check(CLOCK_META)


# --- request parsing -----------------------------------------------------------------------------------


def test_split_path_decodes_each_segment_when_id_holds_an_encoded_slash():
    scope = {"path": "/v1/models/churn/predictions/a/b", "raw_path": b"/v1/models/churn/predictions/a%2Fb"}
    assert split_path(scope) == ("churn", "a/b")
    assert split_path({"path": "/v1/models/m/predictions:batchGet"}) == ("m", ":batchGet")
    with pytest.raises(HttpError, match="no route"):
        split_path({"path": "/v1/models/m/other/x"})


def test_route_of_keeps_label_values_bounded_when_paths_and_methods_vary():
    assert route_of("/v1/models/churn/predictions/123", "GET") == "predictions.get"
    assert route_of("/v1/models/any/predictions:batchGet", "POST") == "predictions.batchGet"
    assert route_of("/v1/models/churn/predictions/1", "BREW") == "predictions.other"
    assert route_of("/metrics", "GET") == "metrics" and route_of("/wp-admin", "GET") == "other"


def test_batch_ids_names_the_bad_entry_when_ids_are_invalid():
    assert batch_ids({"ids": ["a", 7]}, 10) == ["a", "7"]
    for body, field in [({"ids": []}, "ids"), ({"ids": ["a", ""]}, "ids[1]"), ({"ids": ["a"], "x": 1}, "x")]:
        with pytest.raises(HttpError) as caught:
            batch_ids(body, 10)
        assert caught.value.field == field and caught.value.status == 400
    with pytest.raises(HttpError, match="at most 2 per batchGet"):
        batch_ids({"ids": ["a", "b", "c"]}, 2)


def test_duration_takes_units_or_seconds_and_names_the_field_when_malformed():
    assert duration("90s", "max_age") == 90.0 and duration("2.5", "max_age") == 2.5
    for bad in ("0", "-3", "soon"):
        with pytest.raises(HttpError) as caught:
            duration(bad, "max_age")
        assert caught.value.field == "max_age"


def test_openapi_describes_every_route_the_application_answers():
    paths = openapi.spec(("churn",))["paths"]
    described = {(method, path) for path, methods in paths.items() for method in methods}
    assert described == set(openapi.ROUTES)
    statuses = paths["/v1/models/{model}/predictions/{entity_id}"]["get"]["responses"]
    assert {"200", "400", "404", "422", "503", "504"} <= set(statuses)


# --- metrics -------------------------------------------------------------------------------------------


def test_metrics_expose_hit_ratio_and_last_run_when_scraped():
    metrics = Metrics(("churn",))
    for status, n in (("hit", 3), ("miss", 1)):
        metrics.lookup("churn", status, n)
    run = {"run_id": "r", "finished_at": 1000.0, "rows_scored": 90, "rows_rejected": 10}
    text = metrics.exposition({"churn": run}, store_up=True, now=1600.0).decode()
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
    }
    assert samples[("tritonkit_gateway_hit_ratio", (("model", "churn"),))] == 0.75
    assert samples[("tritonkit_batch_rows_rejected", (("model", "churn"),))] == 10
    assert samples[("tritonkit_batch_last_run_age_seconds", (("model", "churn"),))] == 600
    assert (
        samples[("tritonkit_gateway_lookups_total", (("model", "churn"), ("status", "stale")))] == 0
    )  # bound at start
    assert len([k for k in samples if k[0] == "tritonkit_gateway_lookups_total"]) == len(STATUSES)


# --- the hybrid decisions from a real store, without Triton -------------------------------------------


def run_lookup(tmp_path, ids, store_url=None, **params):
    async def scenario():
        s = settings(tmp_path, store=store_url or f"sqlite://{tmp_path / 'g.db'}")
        store = open_async_store(s.store)
        gateway = Gateway(s, store, {"churn": LiveModel("churn", s.endpoint)}, Metrics(s.models))
        try:
            return await gateway.lookup("churn", ids, gateway.params(**params))
        finally:
            await store.close()

    return asyncio.run(scenario())


def test_gateway_answers_hit_stale_and_miss_from_store_when_fallback_none(tmp_path):
    with open_store(f"sqlite://{tmp_path / 'g.db'}") as store:
        now = time.time()
        store.put_many(
            [
                Entry("fresh", "churn", "1", {"p": 0.1}, now, "batch"),
                Entry("old", "churn", "1", {"p": 0.2}, now - 7200, "batch"),
            ]
        )
    fresh, old, missing = run_lookup(tmp_path, ["fresh", "old", "missing"], max_age_s=3600.0, fallback="none")
    assert (fresh.status, fresh.http_status, fresh.outputs, fresh.source) == ("hit", 200, {"p": 0.1}, "batch")
    assert (old.status, old.http_status, old.outputs) == ("stale", 200, {"p": 0.2}) and "max_age" in old.detail
    assert (missing.status, missing.http_status, missing.outputs) == ("miss", 404, None)


def test_gateway_says_store_unavailable_with_retry_after_when_store_fails_and_fallback_none(tmp_path):
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"not a database" * 100)
    (outcome,) = run_lookup(tmp_path, ["a"], store_url=f"sqlite://{garbage}", fallback="none")
    assert (outcome.status, outcome.http_status, outcome.retry_after_s) == ("store_unavailable", 503, 1)
    assert "file is not a database" in outcome.detail
