"""What the guard's integration tests share: a private repository, a reference for churn, raw HTTP exchanges."""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
import tritonclient.grpc as grpcclient

from tritonkit.clients import TritonClient
from tritonkit.export.churn import FEATURES, synthetic_customers

ADMIN_KEY = "guard-admin-key-0123456789abcdef"
# Triton 2.51's HTTP endpoint dies on these shapes: SIGSEGV, SIGABRT (std::bad_alloc), ~900 MB and a hang, SIGABRT.
CRASH_SHAPES = [[4611686018427387904, 1], [8589934592, 1], [4294967296, 1], [18446744073709551615, 1]]
ALLOW_NON_FINITE = 'parameters { key: "allow_non_finite_inputs" value: { string_value: "true" } }\n'


def private_repository(churn_repository: Path, dest: Path) -> Path:
    """churn, vector and dtypes copied (tests rewrite configs here), plus `vector_nan` that accepts NaN."""
    import shutil

    for name in ("churn", "vector", "dtypes"):
        shutil.copytree(churn_repository / name, dest / name)
    shutil.copytree(churn_repository / "vector", dest / "vector_nan")
    config = dest / "vector_nan" / "config.pbtxt"
    config.write_text(config.read_text() + ALLOW_NON_FINITE)
    return dest


@dataclass(frozen=True)
class ChurnReference:
    """Eight customers and what in-process onnxruntime answers for them."""

    inputs: dict[str, np.ndarray]
    probability: np.ndarray

    @classmethod
    def compute(cls, repository: Path) -> ChurnReference:
        frame = synthetic_customers(8, seed=3)
        inputs = {f: frame[[f]].to_numpy(np.float32) for f in FEATURES}
        session = ort.InferenceSession(
            str(repository / "churn" / "1" / "model.onnx"), providers=["CPUExecutionProvider"]
        )
        names = [o.name for o in session.get_outputs()]
        return cls(inputs, session.run(None, inputs)[names.index("probability")])


def assert_serving(server, reference: ChurnReference, pid: int | None = None) -> None:
    """Triton is the same process, alive, and answers churn correctly over HTTP (through the guard) and gRPC."""
    assert server.running(), "Triton is not running"
    if pid is not None:
        assert server.pid == pid, "Triton was restarted"
    with TritonClient(server.http_url, protocol="http") as client:
        http = client.infer_arrays("churn", reference.inputs)[0]["probability"]
    grpc = grpcclient.InferenceServerClient(server.grpc_url)
    try:
        items = []
        for name, array in reference.inputs.items():
            item = grpcclient.InferInput(name, list(array.shape), "FP32")
            item.set_data_from_numpy(array)
            items.append(item)
        over_grpc = grpc.infer("churn", items).as_numpy("probability")
    finally:
        grpc.close()
    np.testing.assert_allclose(http, reference.probability, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(over_grpc, reference.probability, rtol=1e-6, atol=1e-7)


@dataclass(frozen=True)
class Response:
    status: int
    headers: dict[str, str]
    body: bytes


def exchange(port: int, data: bytes, responses: int = 1, shutdown: bool = False, timeout_s: float = 10) -> list:
    """Sends raw bytes to 127.0.0.1:port and reads `responses` HTTP responses (fewer if the server closes)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as sock:
        sock.sendall(data)
        if shutdown:
            sock.shutdown(socket.SHUT_WR)
        stream = sock.makefile("rb")
        found = []
        for _ in range(responses):
            response = read_response(stream)
            if response is None:
                break
            found.append(response)
        return found


def read_response(stream) -> Response | None:
    line = stream.readline()
    if not line:
        return None
    status = int(line.split()[1])
    headers = {}
    while (line := stream.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    if status == 100:
        return read_response(stream)
    length = int(headers.get("content-length", 0))
    return Response(status, headers, stream.read(length) if length else b"")


def post(path: str, body: bytes, *headers: str, close: bool = False) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: test", f"Content-Length: {len(body)}", *headers]
    lines += ["Connection: close"] if close else []
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def wait_for(condition, timeout_s: float = 60, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)
