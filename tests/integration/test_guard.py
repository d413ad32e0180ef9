"""The guard in front of the real embedded Triton: the crash requests refused, everything else forwarded.

One server for the module (explicit model control, admin key known), on a private copy of the
repository so that a test may rewrite a model's config and reload it.
"""

from __future__ import annotations

import gzip
import json
import signal
import struct
import subprocess
import sys
import urllib.request

import grpc
import numpy as np
import pytest
import tritonclient.http as httpclient
from guard_support import (
    ADMIN_KEY,
    CRASH_SHAPES,
    ChurnReference,
    assert_serving,
    exchange,
    post,
    private_repository,
)
from tritonclient.grpc import service_pb2, service_pb2_grpc

from tritonkit.server import EmbeddedServer
from tritonkit.server.security import ADMIN_HEADER

TRITONKIT = [sys.executable, "-m", "tritonkit.cli"]
INFER = "/v2/models/vector/infer"
GOOD = json.dumps({"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}).encode()


@pytest.fixture(scope="module")
def repository(churn_repository, tmp_path_factory):
    return private_repository(churn_repository, tmp_path_factory.mktemp("guard-repository"))


@pytest.fixture(scope="module")
def reference(repository) -> ChurnReference:
    return ChurnReference.compute(repository)


@pytest.fixture(scope="module")
def guarded(repository, tmp_path_factory):
    models = ("churn", "vector", "vector_nan", "dtypes")
    with EmbeddedServer(
        repository,
        http_port=0,
        grpc_port=0,
        metrics_port=0,
        kit_metrics_port=0,
        log_file=tmp_path_factory.mktemp("guard-logs") / "triton.log",
        model_control_mode="explicit",
        extra_args=[f"--load-model={m}" for m in models],
        admin_key=ADMIN_KEY,
    ) as server:
        yield server


def infer_body(shape, data=(1, 2, 3, 4), model_input="x", datatype="FP32") -> bytes:
    return json.dumps(
        {"inputs": [{"name": model_input, "shape": shape, "datatype": datatype, "data": list(data)}]}
    ).encode()


def kit_metrics(server) -> dict[str, float]:
    text = urllib.request.urlopen(server.kit_metrics_url, timeout=10).read().decode()
    return {k: float(v) for k, _, v in (line.rpartition(" ") for line in text.splitlines() if not line.startswith("#"))}


@pytest.mark.parametrize("shape", CRASH_SHAPES)
def test_guard_answers_400_and_triton_stays_up_when_a_shape_would_crash_triton(guarded, reference, shape):
    pid = guarded.pid
    (response,) = exchange(guarded.http_port, post(INFER, infer_body(shape)))
    assert response.status == 400
    message = json.loads(response.body)["error"]
    assert f"has shape {shape}" in message and "`x`" in message and "expected [-1 (at most 64), 4] (FP32)" in message
    assert_serving(guarded, reference, pid)


@pytest.mark.parametrize("shape", CRASH_SHAPES)
def test_grpc_refuses_the_crash_shapes_when_sent_to_triton_directly(guarded, reference, shape):
    pid = guarded.pid
    request = service_pb2.ModelInferRequest(model_name="vector")
    item = request.inputs.add(name="x", datatype="FP32")
    item.shape.extend([d if d < 2**63 else d - 2**64 for d in shape])  # int64 on the wire
    request.raw_input_contents.append(struct.pack("<4f", 1, 2, 3, 4))
    with grpc.insecure_channel(guarded.grpc_url) as channel:
        with pytest.raises(grpc.RpcError) as caught:
            service_pb2_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request, timeout=30)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert_serving(guarded, reference, pid)


def test_guard_serves_pipelined_keep_alive_requests_in_order_when_some_are_refused(guarded):
    bad = post(INFER, infer_body([4611686018427387904, 1]))
    get = b"GET /v2/models/vector HTTP/1.1\r\nHost: test\r\n\r\n"
    ready = b"GET /v2/health/ready HTTP/1.1\r\nHost: test\r\n\r\n"
    responses = exchange(guarded.http_port, ready + bad + post(INFER, GOOD) + get + post(INFER, GOOD, close=True), 6)
    assert [r.status for r in responses] == [200, 400, 200, 200, 200]
    assert json.loads(responses[2].body)["outputs"][0]["data"] == [2, 4, 6, 8]
    assert json.loads(responses[3].body)["name"] == "vector"
    assert responses[4].headers.get("connection") == "close"


def test_guard_decodes_expect_chunked_and_gzip_bodies_when_clients_send_them(guarded):
    expect = post(INFER, GOOD, "Expect: 100-continue")
    chunked = (
        f"POST {INFER} HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n{len(GOOD[:10]):x}\r\n".encode()
        + GOOD[:10]
        + f"\r\n{len(GOOD[10:]):x};ext=1\r\n".encode()
        + GOOD[10:]
    ) + b"\r\n0\r\n\r\n"
    zipped = post(INFER, gzip.compress(GOOD), "Content-Encoding: gzip")
    responses = exchange(guarded.http_port, expect + chunked + zipped, 3)
    assert [r.status for r in responses] == [200, 200, 200]
    assert all(json.loads(r.body)["outputs"][0]["data"] == [2, 4, 6, 8] for r in responses)
    bomb = post(INFER, gzip.compress(b" " * (guarded.guard.max_body_bytes + 1)), "Content-Encoding: gzip")
    assert exchange(guarded.http_port, bomb)[0].status == 413


def test_guard_answers_413_before_reading_when_content_length_is_over_the_limit(guarded):
    head = f"POST {INFER} HTTP/1.1\r\nHost: t\r\nContent-Length: {10**12}\r\n\r\n".encode()
    (response,) = exchange(guarded.http_port, head)  # no body sent: the answer cannot wait for it
    assert response.status == 413 and "limit" in json.loads(response.body)["error"]


@pytest.mark.parametrize(
    "data",
    [
        post(INFER, GOOD)[:-10],  # body shorter than its Content-Length
        b"POST /v2/models/vector/infer HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"POST /v2/models/vector/infer HTTP/1.1\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\nabcd",
        b"GET /v2/models/vector/infer HTTP/1.1\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03junk\r\n\r\n",
    ],
)
def test_guard_refuses_and_closes_when_framing_is_broken(guarded, reference, data):
    pid = guarded.pid
    responses = exchange(guarded.http_port, data, 2, shutdown=True)
    assert len(responses) == 1 and responses[0].status in (400, 405)
    assert "error" in json.loads(responses[0].body)
    assert_serving(guarded, reference, pid)


def test_guard_passes_binary_and_json_tensors_intact_when_models_take_many_dtypes(guarded):
    rng = np.random.default_rng(5)
    arrays = {
        "a": rng.normal(size=(3, 2)).astype(np.float32),
        "b": rng.normal(size=(3, 2)).astype(np.float16),
        "c": rng.integers(-9, 9, size=(3, 1)).astype(np.int64),
        "d": rng.integers(-9, 9, size=(3, 1)).astype(np.int32),
        "e": rng.integers(0, 2, size=(3, 1)).astype(bool),
    }
    datatypes = {"a": "FP32", "b": "FP16", "c": "INT64", "d": "INT32", "e": "BOOL"}
    client = httpclient.InferenceServerClient(guarded.http_url)
    for binary in (True, False):
        items = []
        for name, array in arrays.items():
            item = httpclient.InferInput(name, list(array.shape), datatypes[name])
            item.set_data_from_numpy(array, binary_data=binary or name == "b")  # FP16: binary only
            items.append(item)
        result = client.infer("dtypes", items)
        np.testing.assert_array_equal(result.as_numpy("a_out"), arrays["a"] * 3)
        np.testing.assert_array_equal(result.as_numpy("c_out"), arrays["c"] + 3)
        np.testing.assert_array_equal(result.as_numpy("e_out"), ~arrays["e"])
    client.close()


def test_restricted_apis_stay_closed_through_the_guard_when_no_key_is_sent(guarded):
    index = post("/v2/repository/index", b"")
    assert exchange(guarded.http_port, index)[0].status == 403
    opened = post("/v2/repository/index", b"", f"{ADMIN_HEADER}: {ADMIN_KEY}")
    (response,) = exchange(guarded.http_port, opened)
    assert response.status == 200 and "vector" in {m["name"] for m in json.loads(response.body)}


def test_guard_checks_against_the_new_config_when_a_model_is_reloaded(guarded, repository):
    batch_of_32 = infer_body([32, 4], [1.0] * 128)
    assert exchange(guarded.http_port, post(INFER, batch_of_32))[0].status == 200  # the config is now cached
    config = repository / "vector" / "config.pbtxt"
    original = config.read_text()
    load = post("/v2/repository/models/vector/load", b"", f"{ADMIN_HEADER}: {ADMIN_KEY}")
    try:
        config.write_text(original.replace("max_batch_size: 64", "max_batch_size: 16"))
        assert exchange(guarded.http_port, load)[0].status == 200
        (refused,) = exchange(guarded.http_port, post(INFER, batch_of_32))
        # The guard's own wording: it read the reloaded config instead of forwarding on the cached one.
        assert refused.status == 400 and "over max_batch_size 16" in json.loads(refused.body)["error"]
    finally:
        config.write_text(original)
        assert exchange(guarded.http_port, load)[0].status == 200
    assert exchange(guarded.http_port, post(INFER, batch_of_32))[0].status == 200


def test_guard_answers_with_tritons_404_when_the_model_is_unknown(guarded):
    (response,) = exchange(guarded.http_port, post("/v2/models/nope/infer", infer_body([4611686018427387904, 1])))
    assert response.status == 404 and "unknown model" in json.loads(response.body)["error"]


@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity"])
def test_backend_refuses_non_finite_inputs_when_a_raw_request_holds_them(guarded, value):
    body = GOOD.replace(b"[1, 2, 3, 4]", f"[1, 2, 3, {value}]".encode())
    (refused,) = exchange(guarded.http_port, post(INFER, body))
    assert refused.status == 400
    assert "non-finite values are refused" in json.loads(refused.body)["error"]
    (allowed,) = exchange(guarded.http_port, post("/v2/models/vector_nan/infer", body))
    assert allowed.status == 200 and json.loads(allowed.body)["outputs"][0]["data"][:3] == [2, 4, 6]


def test_kit_metrics_count_rejections_by_reason_when_the_guard_refuses(guarded):
    before = kit_metrics(guarded)
    exchange(guarded.http_port, post(INFER, infer_body([4611686018427387904, 1])))
    exchange(guarded.http_port, post(INFER, infer_body([1, 4], model_input="nope")))
    exchange(guarded.http_port, post(INFER, GOOD))
    after = kit_metrics(guarded)
    assert (
        after['tritonkit_guard_rejected_total{reason="shape"}']
        == before['tritonkit_guard_rejected_total{reason="shape"}'] + 1
    )
    key = 'tritonkit_guard_rejected_total{reason="unknown_tensor"}'
    assert after[key] == before[key] + 1
    assert after["tritonkit_guard_forwarded_total"] >= before["tritonkit_guard_forwarded_total"] + 1
    assert after["tritonkit_triton_restarts_total"] == 0


def test_predict_exits_with_clear_error_when_http_is_pointed_at_the_metrics_port(guarded):
    url = f"127.0.0.1:{guarded.metrics_port}"
    result = subprocess.run(
        [*TRITONKIT, "predict", "-m", "vector", "--url", url, "--protocol", "http", "-i", '{"x": [1, 2, 3, 4]}'],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 5, result.stderr
    assert "Traceback" not in result.stderr and "metrics port" in result.stderr and url in result.stderr


def test_guard_command_fronts_a_triton_started_elsewhere_when_run_alone(guarded, reference):
    """`tritonkit guard` (the Helm chart's sidecar) before the module server's own Triton HTTP endpoint."""
    from tritonkit.server import free_port

    port, metrics_port = free_port(), free_port()
    process = subprocess.Popen(
        [
            *TRITONKIT,
            "guard",
            f"--upstream={guarded.triton_http_url}",
            f"--listen=127.0.0.1:{port}",
            f"--metrics-listen=127.0.0.1:{metrics_port}",
            "--max-body-bytes=4096",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert "guard on http://127.0.0.1:" in process.stdout.readline()
        (crash,) = exchange(port, post(INFER, infer_body(CRASH_SHAPES[0])))
        assert crash.status == 400 and "max_batch_size 64" in json.loads(crash.body)["error"]
        (good,) = exchange(port, post(INFER, GOOD))
        assert good.status == 200 and json.loads(good.body)["outputs"][0]["data"] == [2, 4, 6, 8]
        assert exchange(port, post(INFER, b" " * 5000))[0].status == 413
        text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).read().decode()
        assert 'tritonkit_guard_rejected_total{reason="shape"} 1' in text
        assert 'tritonkit_guard_rejected_total{reason="body_too_large"} 1' in text
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=30)
    finally:
        process.kill()
    assert process.returncode == 0 and "guard stopped" in out, err
    assert_serving(guarded, reference)


def test_guard_answers_503_when_bodies_in_flight_would_exceed_its_budget(guarded):
    import socket

    from tritonkit.server.guard import Guard
    from tritonkit.server.infer_check import GuardLimits

    host, port = guarded.triton_http_url.split(":")
    guard = Guard("127.0.0.1", 0, (host, int(port)), GuardLimits(max_buffered_bytes=len(GOOD) + 10)).start()
    try:
        with socket.create_connection(("127.0.0.1", guard.port), timeout=10) as slow:
            slow.sendall(post(INFER, GOOD)[: -len(GOOD)])  # headers only: its body's bytes are reserved
            (busy,) = exchange(guard.port, post(INFER, GOOD))
            assert busy.status == 503 and "retry later" in json.loads(busy.body)["error"]
            slow.sendall(GOOD)
            assert b"200 OK" in slow.recv(4096)
        assert exchange(guard.port, post(INFER, GOOD))[0].status == 200  # the reservation was returned
        assert guard.metrics.rejected["busy"] == 1
    finally:
        guard.stop()


def test_guard_checks_against_metadata_when_model_config_is_restricted(churn_repository, tmp_path, reference):
    """With model-config closed, the server's guard reads configs with the (drawn) key; a guard without the
    key falls back to the metadata, where the batch is bounded by the byte budget instead."""
    import shutil

    from tritonkit.server import free_port
    from tritonkit.server.security import DEFAULT_RESTRICTED_APIS

    shutil.copytree(churn_repository / "vector", tmp_path / "repository" / "vector")
    with EmbeddedServer(
        tmp_path / "repository",
        http_port=0,
        grpc_port=0,
        metrics_port=0,
        log_file=tmp_path / "triton.log",
        restricted_apis=(*DEFAULT_RESTRICTED_APIS, "model-config"),
    ) as server:
        assert exchange(server.http_port, b"GET /v2/models/vector/config HTTP/1.1\r\n\r\n")[0].status == 403
        (crash,) = exchange(server.http_port, post(INFER, infer_body(CRASH_SHAPES[0])))
        assert crash.status == 400 and "max_batch_size 64" in json.loads(crash.body)["error"]
        port = free_port()
        command = [*TRITONKIT, "guard", f"--upstream={server.triton_http_url}", f"--listen=127.0.0.1:{port}"]
        process = subprocess.Popen([*command, "--metrics-listen="], stdout=subprocess.PIPE, text=True)
        try:
            assert "guard on" in process.stdout.readline()
            (fixed,) = exchange(port, post(INFER, infer_body(CRASH_SHAPES[0])))
            assert fixed.status == 400 and "dimension 1 where the model has 4" in json.loads(fixed.body)["error"]
            (huge,) = exchange(port, post(INFER, infer_body([4611686018427387904, 4])))
            assert huge.status == 400 and "budget" in json.loads(huge.body)["error"]
            assert exchange(port, post(INFER, GOOD))[0].status == 200
        finally:
            process.terminate()
            process.wait(timeout=30)


@pytest.mark.parametrize(
    "path", ["/v2/models/vector/versions/1/infer", "/v2/models/vector/versions/01/infer", "/v2/models/vector/infer?a=1"]
)
def test_guard_checks_every_path_triton_routes_to_inference_when_spelt_differently(guarded, reference, path):
    pid = guarded.pid
    (response,) = exchange(guarded.http_port, post(path, infer_body(CRASH_SHAPES[0])))
    assert response.status == 400 and "max_batch_size 64" in json.loads(response.body)["error"]
    assert_serving(guarded, reference, pid)
