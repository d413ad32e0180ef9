"""Hypothesis at the kit's front: generated HTTP inference requests through the guard and gRPC ones straight
to Triton (shapes, datatypes, sizes, names, encodings, truncated bodies, wrong lengths). After every case
Triton is the same process, alive, and answers a churn request exactly as in-process onnxruntime does.

It runs against the session's server (tests/integration/conftest.py), whose HTTP port is the guard's.
The default budget is bounded (a few seconds); `HYPOTHESIS_PROFILE=deep` searches ten times longer with
fresh random seeds, as in tests/property.
"""

from __future__ import annotations

import gzip
import json
import os

import grpc
import pytest
from guard_support import ChurnReference, assert_serving, exchange
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tritonclient.grpc import service_pb2, service_pb2_grpc

DEEP = os.environ.get("HYPOTHESIS_PROFILE") == "deep"
FUZZ = settings(
    max_examples=600 if DEEP else 60,
    deadline=None,
    derandomize=not DEEP,
    database=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture],
)
MODELS = {
    "vector": {"x": "FP32"},
    "churn": dict.fromkeys(
        ("tenure_months", "monthly_charges", "support_calls", "days_since_login", "num_products"), "FP32"
    ),
    "dtypes": {"a": "FP32", "b": "FP16", "c": "INT64", "d": "INT32", "e": "BOOL"},
}
DATATYPES = ["FP32", "FP16", "FP64", "INT64", "INT32", "INT8", "UINT64", "BOOL", "BYTES", "BF16", "FP33", ""]
SIZES = {"FP32": 4, "FP16": 2, "FP64": 8, "INT64": 8, "INT32": 4, "INT8": 1, "UINT64": 8, "BOOL": 1, "BF16": 2}
EDGES = [0, 1, 2, 4, 64, 65, 4096, 2**31 - 1, 2**31, 2**32, 2**32 + 1, 2**33, 2**62, 2**63 - 1, 2**63, 2**64 - 1, 2**64]
# Anything a JSON shape entry can be, huge, negative and non-integers included.
SHAPE_ENTRY = st.one_of(
    st.integers(0, 8),
    st.sampled_from(EDGES),
    st.sampled_from(EDGES),
    st.sampled_from([-1, -(2**63)]),
    st.sampled_from([1.5, "1", None, True]),
)
SCALAR = st.one_of(st.integers(-(2**70), 2**70), st.floats(allow_nan=False), st.booleans(), st.text(max_size=3))


@pytest.fixture(scope="module")
def reference(churn_repository) -> ChurnReference:
    return ChurnReference.compute(churn_repository)


@pytest.fixture(scope="module")
def guarded(server):
    """The session's embedded server (conftest): the guard is on by default."""
    assert server.guard is not None
    return server


@st.composite
def tensor(draw, inputs: dict[str, str]) -> tuple[dict, bytes]:
    """One input object and the binary bytes it brings (b"" for JSON data); mostly a real input name with
    its real datatype, so that the shapes and sizes get past the first checks."""
    shape = draw(st.one_of(st.lists(SHAPE_ENTRY, min_size=1, max_size=4), st.just([]), st.just("1,4"), st.none()))
    name = draw(st.one_of(st.sampled_from(sorted(inputs)), st.sampled_from(sorted(inputs)), st.text(max_size=4)))
    real = inputs.get(name, "FP32")
    datatype = draw(st.one_of(st.just(real), st.just(real), st.sampled_from(DATATYPES)))
    item = {"name": name, "shape": shape, "datatype": datatype}
    count = 1
    for d in shape if isinstance(shape, list) else []:
        count = count * d if isinstance(d, int) and not isinstance(d, bool) and d >= 0 else count
    matching = count if count < 64 else 4
    kind = draw(st.sampled_from(["json", "json", "json", "json_nested", "binary", "binary", "shared_memory", "none"]))
    if kind == "json":
        item["data"] = draw(st.lists(SCALAR, min_size=matching, max_size=matching) | st.lists(SCALAR, max_size=8))
    elif kind == "json_nested":
        item["data"] = draw(st.recursive(SCALAR, lambda inner: st.lists(inner, max_size=3), max_leaves=8))
    elif kind == "binary":
        size = draw(st.sampled_from([matching * SIZES.get(datatype, 4), 0, 3, 2**40]) | st.integers(0, 64))
        item["parameters"] = {"binary_data_size": size}
        return item, draw(st.binary(min_size=min(size, 64), max_size=min(size, 64)))
    elif kind == "shared_memory":
        item["parameters"] = {"shared_memory_region": "nope", "shared_memory_byte_size": draw(st.sampled_from(EDGES))}
    return item, b""


@st.composite
def near_valid(draw, inputs: dict[str, str]) -> list[tuple[dict, bytes]]:
    """Every input of the model, real names and datatypes, data as JSON or binary; only the shapes are drawn
    (from small and edge values), which is where Triton's HTTP parser breaks."""
    parts = []
    for name, datatype in inputs.items():
        shape = draw(st.lists(st.one_of(st.integers(0, 4), st.sampled_from(EDGES)), min_size=1, max_size=3))
        item = {"name": name, "shape": shape, "datatype": datatype}
        if draw(st.booleans()):
            item["data"] = draw(st.lists(st.integers(0, 1), min_size=1, max_size=8))
            parts.append((item, b""))
        else:
            data = draw(st.binary(min_size=1, max_size=32))
            item["parameters"] = {"binary_data_size": len(data)}
            parts.append((item, data))
    return parts


@st.composite
def http_request(draw) -> bytes:
    model = draw(st.sampled_from([*MODELS, *MODELS, "nope"]))
    inputs = MODELS.get(model, {"x": "FP32"})
    parts = draw(st.one_of(near_valid(inputs), st.lists(tensor(inputs), max_size=4)))
    header = json.dumps({"inputs": [item for item, _ in parts]}).encode()
    binary = b"".join(data for _, data in parts)
    headers = [f"Inference-Header-Content-Length: {len(header)}"] if binary or draw(st.booleans()) else []
    body = header + binary
    encoding = draw(
        st.sampled_from(["plain", "plain", "plain", "gzip", "chunked", "truncated", "longer", "shorter", "junk_json"])
    )
    length = len(body)
    if encoding == "gzip":
        body = gzip.compress(body)
        headers.append("Content-Encoding: gzip")
        length = len(body)
    elif encoding == "truncated":
        body = body[: draw(st.integers(0, len(body)))]
    elif encoding in ("longer", "shorter"):
        length += draw(st.integers(1, 32)) * (1 if encoding == "longer" else -1)
    elif encoding == "junk_json":
        body = draw(st.binary(max_size=64)) + body[draw(st.integers(0, len(body))) :]
        length = len(body)
    version = draw(st.sampled_from(["", "", "", "/versions/1", "/versions/2", "/versions/99999999999999999999"]))
    path = f"/v2/models/{model}{version}/infer"
    if encoding == "chunked":
        head = [f"POST {path} HTTP/1.1", "Host: fuzz", "Transfer-Encoding: chunked", *headers]
        framed = f"{len(body):x}\r\n".encode() + body + b"\r\n0\r\n\r\n" if body else b"0\r\n\r\n"
        return ("\r\n".join(head) + "\r\n\r\n").encode() + framed
    head = [f"POST {path} HTTP/1.1", "Host: fuzz", f"Content-Length: {max(length, 0)}", *headers]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


@FUZZ
@given(data=http_request())
def test_triton_stays_up_and_correct_when_fuzzed_over_http_through_the_guard(guarded, reference, data):
    pid = guarded.pid
    responses = exchange(guarded.http_port, data, shutdown=True)
    assert all(r.status != 502 for r in responses), "the guard could not reach Triton"
    assert_serving(guarded, reference, pid)


@st.composite
def grpc_request(draw) -> service_pb2.ModelInferRequest:
    """Half near-valid (the model's inputs, real names and datatypes, drawn shapes and contents), half anything."""
    model = draw(st.sampled_from([*MODELS, *MODELS, "nope"]))
    inputs = MODELS.get(model, {"x": "FP32"})
    entry = st.one_of(st.integers(0, 8), st.sampled_from([e for e in EDGES if e < 2**63] + [-1, -(2**63)]))
    request = service_pb2.ModelInferRequest(model_name=model)
    if draw(st.booleans()):
        chosen = list(inputs.items())
    else:
        names = st.sampled_from(sorted(inputs)) | st.text(max_size=3)
        chosen = draw(st.lists(st.tuples(names, st.sampled_from(DATATYPES)), max_size=4))
    for name, datatype in chosen:
        item = request.inputs.add(name=name, datatype=datatype)
        item.shape.extend(draw(st.lists(entry, max_size=4)))
        request.raw_input_contents.append(draw(st.binary(max_size=64)))
    if draw(st.booleans()) and request.raw_input_contents:
        request.raw_input_contents.pop()  # fewer contents than inputs
    return request


@FUZZ
@given(request=grpc_request())
def test_triton_stays_up_and_correct_when_fuzzed_over_grpc(guarded, reference, request):
    pid = guarded.pid
    with grpc.insecure_channel(guarded.grpc_url) as channel:
        try:
            service_pb2_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request, timeout=30)
        except grpc.RpcError as e:
            assert e.code() not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED), e.details()
    assert_serving(guarded, reference, pid)
