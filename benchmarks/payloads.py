"""Requests built once and reused: random or sampled rows from a model's metadata, serialized for the wire.

`build_payloads` makes ready numpy inputs (random values of each input's dtype and shape, or rows
sampled from a CSV/Parquet file); `grpc_request` and `http_request` serialize one payload once, as a
`ModelInferRequest` (gRPC) or a binary-tensor-extension body (HTTP), so that a load generator's own
cost per request is a send and a receive, not a rebuild. No gevent here: the offline worker and
perf_analyzer's input file use it too.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from tritonkit.benchmarks.workloads import random_texts
from tritonkit.clients.metadata import ModelMeta
from tritonkit.errors import UsageError

VARIABLE_DIM = 8  # size given to a -1 dimension (other than the batch one) in random inputs
GRPC_INFER_METHOD = "/inference.GRPCInferenceService/ModelInfer"


def _random_array(tensor, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    if tensor.datatype == "BYTES":
        return random_texts(shape, rng)
    dtype = tensor.numpy_dtype
    if dtype == np.bool_:
        return rng.integers(0, 2, shape).astype(bool)
    if np.issubdtype(dtype, np.integer):
        return rng.integers(0, 100, shape).astype(dtype)
    return rng.standard_normal(shape).astype(dtype)


def _column_array(tensor, column, inner: tuple[int, ...]) -> np.ndarray:
    values = list(column)
    if tensor.datatype == "BYTES":
        missing = [v is None or (isinstance(v, float) and v != v) for v in values]  # sent as empty text
        array = np.array(
            [b"" if gone else v if isinstance(v, bytes) else str(v).encode() for v, gone in zip(values, missing)],
            dtype=object,
        )
    else:
        array = np.stack([np.asarray(v) for v in values]).astype(tensor.numpy_dtype)
    return array.reshape((len(values), *[d if d > 0 else -1 for d in inner]) if inner else (len(values),))


def build_payloads(
    meta: ModelMeta, batch_rows: int = 1, data: str | os.PathLike | None = None, count: int = 64, seed: int = 0
) -> list[dict[str, np.ndarray]]:
    """`count` ready requests of `batch_rows` rows each: random values, or rows sampled from `data`."""
    if batch_rows < 1:
        raise UsageError(f"TRITONKIT_BATCH_ROWS is {batch_rows}; expected >= 1")
    if not meta.batching and batch_rows != 1:
        raise UsageError(
            f"model `{meta.name}` has max_batch_size 0 (no batch dimension): TRITONKIT_BATCH_ROWS "
            f"must be 1, got {batch_rows}"
        )
    if meta.batching and batch_rows > meta.max_batch_size:
        raise UsageError(
            f"TRITONKIT_BATCH_ROWS {batch_rows} exceeds model `{meta.name}`'s max_batch_size {meta.max_batch_size}"
        )
    rng = np.random.default_rng(seed)
    frame = None
    if data:
        import pandas as pd

        path = Path(data)
        if not path.exists():
            raise UsageError(f"TRITONKIT_DATA {path} does not exist")
        frame = pd.read_parquet(path) if path.suffix in (".parquet", ".pq") else pd.read_csv(path)
        missing = [t.name for t in meta.inputs if t.name not in frame.columns]
        if missing:
            raise UsageError(
                f"TRITONKIT_DATA {path} lacks column(s) {', '.join(missing)} for model `{meta.name}` "
                f"(it takes: {meta.signature()}); its columns: {', '.join(map(str, frame.columns))}"
            )
    payloads = []
    for _ in range(count):
        rows = rng.integers(0, len(frame), batch_rows) if frame is not None else None
        arrays = {}
        for tensor in meta.inputs:
            inner = tensor.shape[1:] if meta.batching else tensor.shape
            if frame is not None:
                array = _column_array(tensor, frame[tensor.name].iloc[rows], inner)
                if not meta.batching:
                    array = array.reshape([d if d > 0 else -1 for d in inner] or [1])
            else:
                concrete = tuple(d if d > 0 else VARIABLE_DIM for d in inner)
                array = _random_array(tensor, (batch_rows, *concrete) if meta.batching else concrete, rng)
            arrays[tensor.name] = array
        payloads.append(arrays)
    return payloads


def _raw(array: np.ndarray, datatype: str) -> bytes:
    """A tensor's bytes as Triton reads them: little-endian values, or length-prefixed strings for BYTES."""
    if datatype == "BYTES":
        from tritonclient.utils import serialize_byte_tensor

        serialized = serialize_byte_tensor(np.asarray(array, dtype=object))
        return serialized.item() if serialized.size else b""
    return np.ascontiguousarray(array).tobytes()


def grpc_request(meta: ModelMeta, arrays: dict[str, np.ndarray], version: str = "") -> bytes:
    """One serialized `inference.ModelInferRequest` (raw input contents; every output requested)."""
    from tritonclient.grpc import service_pb2

    request = service_pb2.ModelInferRequest(model_name=meta.name, model_version=version)
    for tensor in meta.inputs:
        array = arrays[tensor.name]
        request.inputs.add(name=tensor.name, datatype=tensor.datatype, shape=list(array.shape))
        request.raw_input_contents.append(_raw(array, tensor.datatype))
    for tensor in meta.outputs:
        request.outputs.add(name=tensor.name)
    return request.SerializeToString()


def http_request(meta: ModelMeta, arrays: dict[str, np.ndarray]) -> tuple[bytes, int]:
    """One body of Triton's binary tensor extension: (JSON header + raw tensors, the JSON header's length)."""
    raws, inputs = [], []
    for tensor in meta.inputs:
        array = arrays[tensor.name]
        raw = _raw(array, tensor.datatype)
        raws.append(raw)
        inputs.append(
            {
                "name": tensor.name,
                "shape": list(array.shape),
                "datatype": tensor.datatype,
                "parameters": {"binary_data_size": len(raw)},
            }
        )
    outputs = [{"name": t.name, "parameters": {"binary_data": True}} for t in meta.outputs]
    header = json.dumps({"inputs": inputs, "outputs": outputs}, separators=(",", ":")).encode()
    return header + b"".join(raws), len(header)
