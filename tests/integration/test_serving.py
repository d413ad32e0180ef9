"""The churn example and the onnxruntime backend, served end to end by the real embedded Triton."""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import onnxruntime as ort
import pytest
import torch
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from tritonkit.clients import TritonClient
from tritonkit.errors import InputError, ModelNotFoundError, ServerError
from tritonkit.export.churn import FEATURES, OUTPUTS, train

PROTOCOLS = ["grpc", "http"]
RECORD = {"tenure_months": 3, "monthly_charges": 95.5, "support_calls": 4, "days_since_login": 21, "num_products": 1}


def client_for(server, protocol: str) -> TritonClient:
    return TritonClient(server.grpc_url if protocol == "grpc" else server.http_url, protocol=protocol)


def test_server_ready_when_started(server):
    with urllib.request.urlopen(f"http://{server.http_url}/v2/health/ready") as response:
        assert response.status == 200
    for protocol in PROTOCOLS:
        assert client_for(server, protocol).is_ready()


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_churn_outputs_equal_onnxruntime_and_torch_when_served(server, churn_repository, churn_rows, protocol):
    client = client_for(server, protocol)
    served, version, _ = client.infer_arrays("churn", churn_rows)
    assert version == "1"
    session = ort.InferenceSession(str(churn_repository / "churn" / "1" / "model.onnx"))
    in_process = dict(zip(OUTPUTS, session.run(OUTPUTS, churn_rows)))
    model = train()
    with torch.no_grad():
        source = model(*(torch.from_numpy(churn_rows[f]) for f in FEATURES))
    assert served["probability"].shape == (256, 1)
    # Same onnxruntime, same rows: only thread and batch layout may move the last bits.
    np.testing.assert_allclose(served["probability"], in_process["probability"], rtol=0, atol=1e-6)
    np.testing.assert_allclose(served["probability"], source[0].numpy(), rtol=0, atol=1e-5)
    np.testing.assert_array_equal(served["label"], in_process["label"])
    np.testing.assert_array_equal(served["risk_segment"], in_process["risk_segment"])
    assert served["probability"].std() > 0.05, "outputs should vary across customers"


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_predict_returns_outputs_version_and_latency_when_one_record(server, protocol):
    prediction = client_for(server, protocol).predict("churn", RECORD).to_dict()
    assert prediction["model"] == "churn" and prediction["model_version"] == "1"
    probability = prediction["outputs"]["probability"][0]
    assert 0.0 < probability < 1.0
    assert prediction["outputs"]["label"] == [int(probability >= 0.5)]
    assert prediction["outputs"]["risk_segment"] == [int(probability >= 0.3) + int(probability >= 0.6)]
    assert prediction["latency_ms"] > 0


def _stats(client: grpcclient.InferenceServerClient, model: str) -> tuple[int, int]:
    stats = client.get_inference_statistics(model, as_json=True)["model_stats"][0]
    return int(stats.get("inference_count", 0)), int(stats.get("execution_count", 0))


def test_dynamic_batching_merges_requests_when_sent_concurrently(server, churn_rows):
    raw = grpcclient.InferenceServerClient(server.grpc_url)
    client = client_for(server, "grpc")
    one_row = {f: churn_rows[f][:1] for f in FEATURES}
    before = _stats(raw, "churn")
    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(lambda _: client.infer_arrays("churn", one_row)[0], range(256)))
    deadline = time.monotonic() + 10  # Triton counts a request just after its response has left
    while (after := _stats(raw, "churn"))[0] - before[0] < 256 and time.monotonic() < deadline:
        time.sleep(0.05)
    requests, executions = after[0] - before[0], after[1] - before[1]
    assert requests == 256
    assert executions < requests, f"{executions} executions for {requests} requests: nothing was batched"
    assert all(np.array_equal(r["probability"], results[0]["probability"]) for r in results)


def test_backend_fails_only_the_bad_request_when_batched_with_good_ones(server):
    client = client_for(server, "grpc")
    good = {"x": np.arange(8, dtype=np.float32).reshape(2, 4)}
    bad = {"x": np.ones((1, 3), dtype=np.float32)}
    raw = grpcclient.InferenceServerClient(server.grpc_url)
    client.metadata("varlen")  # fetched once here, not by five threads at once
    before = _stats(raw, "varlen")
    start = threading.Barrier(5)  # all five within the model's 200 ms batching window, even on a loaded machine

    def send(arrays):
        start.wait(timeout=30)
        try:
            return client.infer_arrays("varlen", arrays)[0]["y"]
        except ServerError as e:
            return e

    with ThreadPoolExecutor(5) as pool:
        results = list(pool.map(send, [good, bad, good, good, bad]))
    after = _stats(raw, "varlen")
    for result in (results[0], results[2], results[3]):
        np.testing.assert_array_equal(result, good["x"] * 2)
    for result in (results[1], results[4]):
        assert isinstance(result, ServerError)
        assert "input 'x' has shape [1, 3], expected [-1, 4]" in str(result)
    assert after[1] - before[1] < 5, "the five requests should have shared executions"


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_every_datatype_round_trips_when_config_is_auto_completed(server, protocol):
    client = client_for(server, protocol)
    meta = client.metadata("dtypes")
    assert {t.name: t.datatype for t in meta.inputs} == {
        "a": "FP32",
        "b": "FP16",
        "c": "INT64",
        "d": "INT32",
        "e": "BOOL",
    }
    assert meta.max_batch_size == 4
    arrays = {
        "a": np.array([[1.5, -2.0], [0.0, 4.0]], np.float32),
        "b": np.array([[1, 2], [3, 4]], np.float16),
        "c": np.array([[7], [-9]], np.int64),
        "d": np.array([[2], [5]], np.int32),
        "e": np.array([[True], [False]]),
    }
    out, _, _ = client.infer_arrays("dtypes", arrays)
    np.testing.assert_array_equal(out["a_out"], arrays["a"] * 3)
    np.testing.assert_array_equal(out["b_out"], arrays["b"] + np.float16(3))
    np.testing.assert_array_equal(out["c_out"], arrays["c"] + 3)
    np.testing.assert_array_equal(out["d_out"], arrays["d"] * 3)
    np.testing.assert_array_equal(out["e_out"], ~arrays["e"])
    assert out["b_out"].dtype == np.float16 and out["e_out"].dtype == np.bool_


def _raw_infer(server, inputs):
    raw = grpcclient.InferenceServerClient(server.grpc_url)
    return raw.infer("churn", inputs)


def _infer_input(name, array, datatype):
    item = grpcclient.InferInput(name, list(array.shape), datatype)
    item.set_data_from_numpy(array)
    return item


def _all_inputs(**override):
    arrays = {f: np.ones((1, 1), np.float32) for f in FEATURES}
    items = {f: _infer_input(f, a, "FP32") for f, a in arrays.items()}
    items.update(override)
    return list(items.values())


def test_server_rejects_wrong_shape_and_keeps_serving(server):
    wrong = _infer_input("tenure_months", np.ones((1, 2), np.float32), "FP32")
    with pytest.raises(InferenceServerException, match="tenure_months"):
        _raw_infer(server, _all_inputs(tenure_months=wrong))
    assert client_for(server, "grpc").predict("churn", RECORD).outputs["probability"].shape == (1, 1)


def test_server_rejects_wrong_dtype_and_keeps_serving(server):
    wrong = _infer_input("tenure_months", np.ones((1, 1), np.int64), "INT64")
    with pytest.raises(InferenceServerException, match="tenure_months"):
        _raw_infer(server, _all_inputs(tenure_months=wrong))
    assert client_for(server, "http").predict("churn", RECORD).model_version == "1"


def test_server_rejects_unknown_input_name_and_keeps_serving(server):
    extra = _infer_input("tenure_years", np.ones((1, 1), np.float32), "FP32")
    with pytest.raises(InferenceServerException, match="tenure_years"):
        _raw_infer(server, _all_inputs(tenure_years=extra))
    assert client_for(server, "grpc").predict("churn", RECORD).model == "churn"


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_client_names_field_value_and_expectation_when_record_is_bad(server, protocol):
    client = client_for(server, protocol)
    with pytest.raises(InputError, match=r"unknown input `tenure_years`.*tenure_months FP32 \[-1, 1\]"):
        client.predict("churn", {**RECORD, "tenure_years": 1})
    with pytest.raises(InputError, match="missing input `num_products`"):
        client.predict("churn", {k: v for k, v in RECORD.items() if k != "num_products"})
    with pytest.raises(InputError, match=r"input `support_calls` got 'many'; model `churn` expects FP32"):
        client.predict("churn", {**RECORD, "support_calls": "many"})
    with pytest.raises(InputError, match=r"input `support_calls` has shape \[1, 2\]; model `churn` expects \[-1, 1\]"):
        client.predict("churn", {**RECORD, "support_calls": [1, 2]})


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_unknown_model_raises_model_not_found_when_requested(server, protocol):
    with pytest.raises(ModelNotFoundError, match="model `nosuchmodel` is not served by"):
        client_for(server, protocol).predict("nosuchmodel", RECORD)
    assert client_for(server, protocol).is_ready()


def test_config_reports_onnxruntime_platform_when_served_by_python_backend(server):
    with urllib.request.urlopen(f"http://{server.http_url}/v2/models/churn/config") as response:
        config = json.load(response)
    assert config["backend"] == "onnxruntime" and config["max_batch_size"] == 4096
    assert "dynamic_batching" in config
