"""The guard's request checks and HTTP parsing on their own, without a socket: server/infer_check.py and
server/http11.py, plus the supervisor's crash report and the admin key file's permission check."""

from __future__ import annotations

import json
import signal
import struct

import pytest

from tritonkit.errors import UsageError
from tritonkit.server.http11 import HttpError, parse_request_head, request_bytes
from tritonkit.server.infer_check import GuardLimits, ModelSpec, Rejection, check_request, split_body
from tritonkit.server.security import read_admin_key
from tritonkit.server.supervisor import RestartPolicy, TritonExit

LIMITS = GuardLimits()
VECTOR = ModelSpec.from_config(
    {
        "name": "vector",
        "max_batch_size": 64,
        "input": [{"name": "x", "data_type": "TYPE_FP32", "dims": ["4"]}],
        "output": [{"name": "y", "data_type": "TYPE_FP32", "dims": [4]}],
    }
)
TEXT = ModelSpec.from_config(
    {
        "name": "text",
        "max_batch_size": 0,
        "input": [
            {"name": "s", "data_type": "TYPE_STRING", "dims": [-1]},
            {"name": "k", "data_type": "TYPE_INT64", "dims": [1], "optional": True},
        ],
        "output": [{"name": "n", "data_type": "TYPE_INT64", "dims": [-1]}],
    }
)
# The shapes that crash Triton 2.51's HTTP endpoint (SIGSEGV, SIGABRT from bad_alloc, a hang, SIGABRT).
CRASH_SHAPES = [[4611686018427387904, 1], [8589934592, 1], [4294967296, 1], [18446744073709551615, 1]]


def infer(*inputs: dict, **extra) -> dict:
    return {"inputs": list(inputs), **extra}


def x(shape, data=None, datatype="FP32", **parameters) -> dict:
    item = {"name": "x", "shape": shape, "datatype": datatype}
    if data is not None:
        item["data"] = data
    if parameters:
        item["parameters"] = parameters
    return item


def rejection(spec: ModelSpec, request: dict, binary: bytes = b"", limits: GuardLimits = LIMITS) -> Rejection:
    with pytest.raises(Rejection) as caught:
        check_request(spec, request, memoryview(binary), limits)
    return caught.value


@pytest.mark.parametrize("shape", CRASH_SHAPES)
def test_check_refuses_the_triton_crash_shapes_when_batch_is_huge(shape):
    refused = rejection(VECTOR, infer(x(shape, [1, 2, 3, 4])))
    assert refused.status == 400 and refused.reason == "shape"
    assert str(shape[0]) in refused.message and "max_batch_size 64" in refused.message and "`x`" in refused.message


@pytest.mark.parametrize("shape", [[2, 4611686018427387904], [1, 2**62, 0]])
def test_check_refuses_huge_variable_dimensions_when_model_is_not_batched(shape):
    spec = ModelSpec.from_config({"name": "m", "input": [{"name": "x", "data_type": "TYPE_FP32", "dims": [-1, -1]}]})
    assert rejection(spec, infer(x(shape, []))).reason in ("too_large", "shape")


@pytest.mark.parametrize(
    ("shape", "why"),
    [
        ([1, -4], "negative"),
        ([1.0, 4], "not a list of integers"),
        ([True, 4], "not a list of integers"),
        ("1,4", "not a list of integers"),
        ([1, 4, 1], "3 dimensions"),
        ([1, 5], "dimension 5 where the model has 4"),
        ([65, 4], "over max_batch_size 64"),
    ],
)
def test_check_names_the_problem_when_shape_is_wrong(shape, why):
    refused = rejection(VECTOR, infer(x(shape, [1, 2, 3, 4])))
    assert (
        refused.reason == "shape"
        and why in refused.message
        and "expected [-1 (at most 64), 4] (FP32)" in refused.message
    )


def test_check_accepts_a_request_when_it_fits_the_model():
    check_request(VECTOR, infer(x([2, 4], [[1, 2, 3, 4], [5, 6, 7, 8]])), memoryview(b""), LIMITS)
    check_request(VECTOR, infer(x([0, 4], [])), memoryview(b""), LIMITS)


@pytest.mark.parametrize(
    ("request_", "reason", "words"),
    [
        (infer({**x([1, 4], [1, 2, 3, 4]), "name": "z"}), "unknown_tensor", 'no input "z"'),
        (infer(x([1, 4], [1, 2, 3, 4]), x([1, 4], [1, 2, 3, 4])), "unknown_tensor", "twice"),
        (infer(x([1, 4], [1, 2, 3, 4], datatype="FP64")), "datatype", "expected FP32"),
        (infer(x([1, 4], [1, 2, 3])), "data_size", "holds 3 values"),
        (infer(x([1, 4])), "data_size", "none of them"),
        (infer(), "missing_input", "`x` is missing"),
        ({"inputs": "x"}, "json", "expected a list"),
        (infer(x([1, 4], [1, 2, 3, 4]), outputs=[{"name": "nope"}]), "unknown_tensor", "no output"),
    ],
)
def test_check_refuses_with_reason_when_request_is_malformed(request_, reason, words):
    refused = rejection(VECTOR, request_)
    assert refused.reason == reason and words in refused.message


def test_check_bounds_bytes_when_tensor_budget_is_small():
    small = GuardLimits(max_tensor_bytes=32)
    assert rejection(VECTOR, infer(x([3, 4], [0] * 12)), limits=small).reason == "too_large"


def test_check_matches_binary_sizes_when_data_is_binary():
    data = struct.pack("<8f", *range(8))
    check_request(VECTOR, infer(x([2, 4], binary_data_size=32)), memoryview(data), LIMITS)
    assert rejection(VECTOR, infer(x([2, 4], binary_data_size=16)), data[:16]).reason == "data_size"
    assert rejection(VECTOR, infer(x([1, 4], binary_data_size=16)), data).reason == "data_size"  # bytes left over
    assert rejection(VECTOR, infer(x([1, 4], binary_data_size=1 << 40)), data).reason == "data_size"


def test_check_counts_bytes_elements_when_binary_strings_are_sent():
    two = b"".join(struct.pack("<I", len(s)) + s for s in (b"ab", b""))
    s = {"name": "s", "shape": [2], "datatype": "BYTES", "parameters": {"binary_data_size": len(two)}}
    check_request(TEXT, infer(s), memoryview(two), LIMITS)
    assert rejection(TEXT, infer({**s, "shape": [3]}), two).reason == "data_size"
    cut = two[:-1] + struct.pack("<I", 99)
    assert rejection(TEXT, infer(s), cut).reason == "data_size"


def test_split_body_refuses_when_json_is_ambiguous_or_not_utf8():
    with pytest.raises(Rejection, match="twice"):
        split_body(b'{"inputs": [], "inputs": []}', None, LIMITS)
    with pytest.raises(Rejection, match="UTF-8"):
        split_body('{"inputs": []}'.encode("utf-16"), None, LIMITS)
    with pytest.raises(Rejection, match="not valid"):
        split_body(b"[" * 100_000, None, LIMITS)
    with pytest.raises(Rejection, match="Inference-Header-Content-Length"):
        split_body(b'{"inputs": []}', "999", LIMITS)
    header, binary = split_body(b'{"inputs": []}\x00\x01', "14", LIMITS)
    assert header == {"inputs": []} and bytes(binary) == b"\x00\x01"


def test_split_body_refuses_with_413_when_json_is_over_its_limit():
    with pytest.raises(Rejection) as caught:
        split_body(json.dumps({"inputs": [0] * 100}).encode(), None, GuardLimits(max_json_bytes=64))
    assert caught.value.status == 413


def test_model_spec_reads_metadata_when_config_is_closed():
    spec = ModelSpec.from_metadata(
        {"name": "vector", "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}], "outputs": []}
    )
    check_request(spec, infer(x([3, 4], [0] * 12)), memoryview(b""), LIMITS)
    assert rejection(spec, infer(x([4611686018427387904, 4], [0]))).reason == "too_large"


@pytest.mark.parametrize(
    "head",
    [
        b"GET /v2 HTTP/2.0\r\n\r\n",
        b"GET http://x/v2 HTTP/1.1\r\n\r\n",
        b"GET /v2 HTTP/1.1\r\nBad Header: 1\r\n\r\n",
        b"GET /v2 HTTP/1.1\r\n folded\r\n\r\n",
        b"GET /v2 HTTP/1.1\r\nX: a\x00b\r\n\r\n",
        b"GET  /v2 HTTP/1.1\r\n\r\n",
    ],
)
def test_parse_request_head_refuses_when_framing_is_ambiguous(head):
    with pytest.raises(HttpError):
        parse_request_head(head)


def test_request_bytes_drops_hop_by_hop_headers_when_forwarding():
    request = parse_request_head(
        b"POST /v2/models/m/infer?a=1 HTTP/1.1\r\nHost: h\r\nConnection: close, X-Secret\r\nX-Secret: 1\r\n"
        b"Transfer-Encoding: chunked\r\nExpect: 100-continue\r\nInference-Header-Content-Length: 2\r\n\r\n"
    )
    request.body = b"{}"
    sent = request_bytes(request).decode()
    assert sent.startswith("POST /v2/models/m/infer?a=1 HTTP/1.1\r\n") and request.path == "/v2/models/m/infer"
    assert "host: h" in sent and "inference-header-content-length: 2" in sent and "Content-Length: 2" in sent
    for dropped in ("connection", "x-secret", "transfer-encoding", "expect"):
        assert dropped not in sent.lower().replace("inference-header-content-length", "")
    assert not request.keep_alive


def test_request_refuses_duplicate_framing_headers_when_read():
    request = parse_request_head(b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n")
    with pytest.raises(HttpError, match="twice|2 times"):
        request.get("content-length")


def test_triton_exit_names_the_signal_and_quotes_the_log_when_triton_crashed(tmp_path):
    log = tmp_path / "triton.log"
    log.write_text("I started\nSignal (11) received.\n0# 0x0000 in tritonserver\n1# 0x0001 in libc\n")
    crash = TritonExit.read(-signal.SIGSEGV, log, ran_s=12.3)
    assert crash.signal_name == "SIGSEGV"
    report = crash.report()
    assert "killed by SIGSEGV (signal 11) after 12 s" in report and "Signal (11) received." in report
    assert "0x0000" not in report
    assert crash.error("not restarted").exit_code == 14 and crash.error("").signal_name == "SIGSEGV"
    assert "exited with code 3" in TritonExit.read(3, tmp_path / "missing.log", 1.0).report()


def test_restart_policy_refuses_when_mode_is_unknown():
    with pytest.raises(UsageError, match="on-failure, no"):
        RestartPolicy(mode="always")


def test_read_admin_key_refuses_when_file_is_world_readable(tmp_path):
    key = tmp_path / "admin.key"
    key.write_text("0123456789abcdef0123456789abcdef\n")
    key.chmod(0o644)
    with pytest.raises(UsageError) as caught:
        read_admin_key(key)
    assert "chmod 600" in str(caught.value) and "0123456789abcdef" not in str(caught.value)
    key.chmod(0o600)
    assert read_admin_key(key) == "0123456789abcdef0123456789abcdef"


class _Collected:
    """The two StreamWriter methods relay_response and read_body use, collecting what is written."""

    def __init__(self):
        self.data = bytearray()

    def write(self, data: bytes) -> None:
        self.data += data

    async def drain(self) -> None:
        return None


def _stream(data: bytes, eof: bool = True):
    import asyncio

    reader = asyncio.StreamReader(limit=2**16)
    reader.feed_data(data)
    if eof:
        reader.feed_eof()
    return reader


@pytest.mark.parametrize(
    ("answer", "method", "reusable", "closes"),
    [
        (b"HTTP/1.1 200 OK\r\nContent-Length: 300000\r\n\r\n" + b"x" * 300_000, "POST", True, False),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n", "POST", True, False),
        (b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the end", "POST", False, True),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", "HEAD", True, False),
    ],
)
def test_relay_response_keeps_each_framing_when_streaming_tritons_answer(answer, method, reusable, closes):
    import asyncio

    from tritonkit.server.http11 import relay_response

    client = _Collected()

    async def relay():  # the stream needs the running loop
        return await relay_response(_stream(answer), client, method, close_client=False)

    result = asyncio.run(relay())
    assert result == (reusable, closes, 200)
    head, _, body = bytes(client.data).partition(b"\r\n\r\n")
    assert body == answer.partition(b"\r\n\r\n")[2]
    assert (b"Connection: close" in head) == closes


def test_read_body_dechunks_and_decompresses_when_both_are_used():
    import asyncio
    import gzip

    from tritonkit.server.http11 import read_body

    packed = gzip.compress(b'{"inputs": []}')
    request = parse_request_head(
        b"POST /v2/models/m/infer HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Encoding: gzip\r\n"
        b"Expect: 100-continue\r\n\r\n"
    )
    chunks = f"{len(packed):x}\r\n".encode() + packed + b"\r\n0\r\nX-Trailer: 1\r\n\r\n"
    client = _Collected()

    async def read():
        await read_body(_stream(chunks), client, request, LIMITS)

    asyncio.run(read())
    assert request.body == b'{"inputs": []}' and bytes(client.data) == b"HTTP/1.1 100 Continue\r\n\r\n"
    assert "content-encoding" not in request_bytes(request).decode().lower()
