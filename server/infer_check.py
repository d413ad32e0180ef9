"""Checks one HTTP inference request against the model's config before Triton allocates anything for it.

Triton 2.51's HTTP endpoint trusts the shape in a request's JSON: `[4611686018427387904, 1]` ends in
SIGSEGV, `[8589934592, 1]` in `std::bad_alloc`, `[18446744073709551615, 1]` in SIGABRT, and a batch of
2^33 with binary data is silently cut to an empty batch. The guard (`server/guard.py`) runs this check
first: the JSON header (or the binary extension's JSON part) is parsed strictly (UTF-8, no duplicate
keys, so the guard and Triton cannot read one body two ways), then every input's name, datatype and
shape is compared with the model's config, the element count times the datatype size is bounded, and
the data (JSON values, binary bytes, shared-memory size) must match the shape exactly.

Pure functions over bytes and dicts: no socket, no asyncio, unit-tested on their own.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass, field

DTYPE_BYTES = {
    "BOOL": 1,
    "UINT8": 1,
    "UINT16": 2,
    "UINT32": 4,
    "UINT64": 8,
    "INT8": 1,
    "INT16": 2,
    "INT32": 4,
    "INT64": 8,
    "FP16": 2,
    "FP32": 4,
    "FP64": 8,
    "BF16": 2,
    "BYTES": 4,  # the smallest element: a 4-byte length prefix (binary) and no content
}


class Rejection(Exception):
    """A request the guard answers itself; `reason` labels tritonkit_guard_rejected_total."""

    def __init__(self, reason: str, message: str, status: int = 400):
        self.reason, self.message, self.status = reason, message, status
        super().__init__(message)


@dataclass(frozen=True)
class GuardLimits:
    """What one HTTP request may cost before Triton sees it.

    Attributes:
        max_body_bytes: a request body (after decompression); larger ones get 413 before being read.
        max_json_bytes: the JSON part of an inference request (send bigger tensors as binary data).
        max_tensor_bytes: all inputs of one inference request, element count x datatype size.
        max_header_bytes: the request line and headers together.
        read_timeout_s: time a client gets to send a request once it has started one.
        idle_timeout_s: a keep-alive connection with no request for this long is closed.
        spec_ttl_s: how long a model's config is trusted before it is fetched again.
        max_connections: client connections served at once; more are refused.
        max_buffered_bytes: request bodies held at once (reserved by Content-Length before reading, the body
            limit when chunked or compressed); a request beyond it gets 503, which clients retry.
    """

    max_body_bytes: int = 64 * 2**20
    max_json_bytes: int = 8 * 2**20
    max_tensor_bytes: int = 64 * 2**20
    max_header_bytes: int = 64 * 2**10
    read_timeout_s: float = 30.0
    idle_timeout_s: float = 300.0
    spec_ttl_s: float = 10.0
    max_connections: int = 1024
    max_buffered_bytes: int = 512 * 2**20


@dataclass(frozen=True)
class TensorSpec:
    name: str
    datatype: str
    dims: tuple[int, ...]  # without the batch dimension; -1 is variable
    optional: bool = False


@dataclass(frozen=True)
class ModelSpec:
    """What a model accepts: from Triton's model config (or, when that API is closed, its metadata)."""

    name: str
    max_batch_size: int
    inputs: dict[str, TensorSpec] = field(default_factory=dict)
    outputs: frozenset[str] = frozenset()

    @classmethod
    def from_config(cls, config: dict) -> ModelSpec:
        def tensor(t: dict) -> TensorSpec:
            datatype = str(t.get("data_type", "")).removeprefix("TYPE_")
            datatype = "BYTES" if datatype == "STRING" else datatype
            return TensorSpec(t["name"], datatype, tuple(int(d) for d in t.get("dims", [])), bool(t.get("optional")))

        inputs = {t["name"]: tensor(t) for t in config.get("input", [])}
        outputs = frozenset(t["name"] for t in config.get("output", []))
        return cls(config.get("name", ""), int(config.get("max_batch_size", 0)), inputs, outputs)

    @classmethod
    def from_metadata(cls, metadata: dict) -> ModelSpec:
        """Metadata shapes include the batch dimension (-1) and do not say max_batch_size: no batch limit."""
        inputs = {
            t["name"]: TensorSpec(t["name"], t["datatype"], tuple(int(d) for d in t.get("shape", [])))
            for t in metadata.get("inputs", [])
        }
        return cls(metadata.get("name", ""), 0, inputs, frozenset(t["name"] for t in metadata.get("outputs", [])))

    def expected(self, tensor: TensorSpec) -> str:
        batch = [f"-1 (at most {self.max_batch_size})"] if self.max_batch_size > 0 else []
        return f"[{', '.join(batch + [str(d) for d in tensor.dims])}] ({tensor.datatype})"


def split_body(body: bytes, header_length: str | None, limits: GuardLimits) -> tuple[dict, memoryview]:
    """The request's JSON object and its binary part (empty without `Inference-Header-Content-Length`)."""
    if header_length is None:
        json_part, binary = body, memoryview(b"")
    else:
        if not header_length.isdigit() or not 0 < int(header_length) <= len(body):
            raise Rejection(
                "json",
                f"Inference-Header-Content-Length is {header_length[:40]!r}; expected a number of bytes from 1 to "
                f"the body's {len(body)}",
            )
        cut = int(header_length)
        json_part, binary = body[:cut], memoryview(body)[cut:]
    if len(json_part) > limits.max_json_bytes:
        raise Rejection(
            "json",
            f"the request's JSON is {len(json_part)} bytes; the limit is {limits.max_json_bytes} "
            "(send large tensors as binary data)",
            status=413,
        )
    return parse_json(json_part), binary


def parse_json(data: bytes) -> dict:
    """Strict JSON: UTF-8 and no key twice (Triton's parser keeps the first, Python's the last)."""
    try:
        document = json.loads(data.decode("utf-8"), object_pairs_hook=_unique_keys)
    except Rejection:
        raise
    except (ValueError, RecursionError) as e:
        raise Rejection("json", f"the request body is not valid UTF-8 JSON: {str(e)[:200]}") from None
    if not isinstance(document, dict):
        raise Rejection("json", f"the request's JSON is a {type(document).__name__}; expected an object")
    return document


def _unique_keys(pairs: list[tuple[str, object]]) -> dict:
    document = {}
    for key, value in pairs:
        if key in document:
            raise Rejection("json", f"the request's JSON has the key {key[:60]!r} twice")
        document[key] = value
    return document


def check_request(spec: ModelSpec, request: dict, binary: memoryview, limits: GuardLimits) -> None:
    """Raises Rejection unless every input fits `spec`, within `limits`, with data matching its shape."""
    inputs = request.get("inputs")
    if not isinstance(inputs, list):
        raise Rejection("json", f"`inputs` is {_show(inputs)}; expected a list of input objects")
    seen: set[str] = set()
    total_bytes, offset = 0, 0
    for position, item in enumerate(inputs):
        if not isinstance(item, dict):
            raise Rejection("json", f"inputs[{position}] is {_show(item)}; expected an object")
        tensor = _input_spec(spec, item, seen)
        count = _element_count(spec, tensor, item.get("shape"), limits)
        total_bytes += count * DTYPE_BYTES[tensor.datatype]
        if total_bytes > limits.max_tensor_bytes:
            raise Rejection(
                "too_large",
                f"model `{spec.name}`: the inputs up to `{tensor.name}` hold {total_bytes} bytes; the guard allows "
                f"{limits.max_tensor_bytes} per request",
            )
        offset += _check_data(spec, tensor, item, count, binary, offset)
    if offset != len(binary):
        raise Rejection(
            "data_size",
            f"model `{spec.name}`: the body holds {len(binary)} bytes of binary data; the inputs' binary_data_size "
            f"add up to {offset}",
        )
    missing = [t.name for t in spec.inputs.values() if not t.optional and t.name not in seen]
    if missing:
        raise Rejection("missing_input", f"model `{spec.name}`: input `{missing[0]}` is missing")
    _check_outputs(spec, request.get("outputs"))


def _input_spec(spec: ModelSpec, item: dict, seen: set[str]) -> TensorSpec:
    name = item.get("name")
    if not isinstance(name, str) or name not in spec.inputs:
        known = ", ".join(spec.inputs) or "none"
        raise Rejection("unknown_tensor", f"model `{spec.name}` has no input {_show(name)} (its inputs: {known})")
    if name in seen:
        raise Rejection("unknown_tensor", f"model `{spec.name}`: input `{name}` is given twice")
    seen.add(name)
    tensor = spec.inputs[name]
    datatype = item.get("datatype")
    if datatype != tensor.datatype:
        raise Rejection(
            "datatype",
            f"input `{name}` of model `{spec.name}` has datatype {_show(datatype)}; expected {tensor.datatype}",
        )
    return tensor


def _element_count(spec: ModelSpec, tensor: TensorSpec, shape, limits: GuardLimits) -> int:
    """The shape's element count, after checking each entry; stops multiplying once over the budget."""

    def refuse(why: str, reason: str = "shape") -> Rejection:
        return Rejection(
            reason,
            f"input `{tensor.name}` of model `{spec.name}` has shape {_show(shape)}: {why}; "
            f"expected {spec.expected(tensor)}",
        )

    batched = spec.max_batch_size > 0
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) for d in shape):
        raise refuse("not a list of integers")
    if len(shape) != len(tensor.dims) + batched:
        raise refuse(f"{len(shape)} dimensions")
    if any(d < 0 for d in shape):
        raise refuse("a negative dimension")
    if batched and shape[0] > spec.max_batch_size:
        raise refuse(f"batch size {shape[0]} is over max_batch_size {spec.max_batch_size}")
    for got, want in zip(shape[batched:], tensor.dims):
        if want >= 0 and got != want:
            raise refuse(f"dimension {got} where the model has {want}")
    ceiling = limits.max_tensor_bytes // DTYPE_BYTES[tensor.datatype]
    if any(d > ceiling for d in shape):  # even beside a 0: no dimension Triton could overflow on
        raise refuse(f"a dimension over {ceiling}, the guard's {limits.max_tensor_bytes}-byte budget", "too_large")
    count = 1
    for d in shape:
        count *= d
        if count > ceiling:
            raise refuse(f"over {ceiling} elements, the guard's {limits.max_tensor_bytes}-byte budget", "too_large")
    return count


def _check_data(spec: ModelSpec, tensor: TensorSpec, item: dict, count: int, binary: memoryview, offset: int) -> int:
    """Checks the input's data against its element count; returns the binary bytes it takes."""
    where = f"input `{tensor.name}` of model `{spec.name}`"
    parameters = item.get("parameters", {})
    if not isinstance(parameters, dict):
        raise Rejection("json", f"{where}: `parameters` is {_show(parameters)}; expected an object")
    sources = [k for k in ("binary_data_size", "shared_memory_region") if k in parameters] + (
        ["data"] if "data" in item else []
    )
    if len(sources) != 1:
        given = " and ".join(sources) or "none of them"
        raise Rejection(
            "data_size", f"{where} has {given}; expected one of data, binary_data_size, shared_memory_region"
        )
    if sources[0] == "data":
        found = _count_leaves(item["data"], count)
        if found != count:
            raise Rejection(
                "data_size",
                f"{where}: `data` holds {'more than ' if found > count else ''}{found} values; its shape holds {count}",
            )
        return 0
    needed = count * DTYPE_BYTES[tensor.datatype]
    if sources[0] == "shared_memory_region":
        size = parameters.get("shared_memory_byte_size")
        if not _is_size(size) or (tensor.datatype != "BYTES" and size != needed):
            raise Rejection(
                "data_size",
                f"{where}: shared_memory_byte_size is {_show(size)}; its shape needs {needed}",
            )
        return 0
    size = parameters["binary_data_size"]
    if not _is_size(size) or offset + size > len(binary):
        raise Rejection(
            "data_size",
            f"{where}: binary_data_size is {_show(size)}; the body has {len(binary) - offset} binary bytes left",
        )
    if tensor.datatype == "BYTES":
        _check_bytes_elements(where, binary[offset : offset + size], count)
    elif size != needed:
        raise Rejection(
            "data_size",
            f"{where}: binary_data_size is {size}; its shape of {tensor.datatype} needs {needed}",
        )
    return size


def _check_bytes_elements(where: str, segment: memoryview, count: int) -> None:
    """BYTES binary data: `count` elements, each a little-endian uint32 length and that many bytes, and nothing else."""
    position, found = 0, 0
    while position < len(segment) and found <= count:
        if position + 4 > len(segment):
            break
        (length,) = struct.unpack_from("<I", segment, position)
        position += 4 + length
        found += 1
    if position != len(segment) or found != count:
        raise Rejection(
            "data_size", f"{where}: the binary data does not hold exactly {count} length-prefixed BYTES elements"
        )


def _count_leaves(data, limit: int) -> int:
    """Scalar values in nested lists, counting no further than limit + 1."""
    found, stack = 0, [data]
    while stack and found <= limit:
        value = stack.pop()
        if isinstance(value, list):
            stack.extend(value)
        else:
            found += 1
    return found


def _check_outputs(spec: ModelSpec, outputs) -> None:
    if outputs is None:
        return
    if not isinstance(outputs, list) or not all(isinstance(o, dict) for o in outputs):
        raise Rejection("json", f"`outputs` is {_show(outputs)}; expected a list of output objects")
    for item in outputs:
        if item.get("name") not in spec.outputs:
            known = ", ".join(sorted(spec.outputs))
            raise Rejection(
                "unknown_tensor", f"model `{spec.name}` has no output {_show(item.get('name'))} (its outputs: {known})"
            )


def _is_size(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _show(value) -> str:
    """A value for a message, cut short: a request may carry megabytes."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    text = json.dumps(value) if isinstance(value, (str, int, float, bool, type(None))) else repr(value)
    if isinstance(value, list):
        text = (
            json.dumps(value[:8])[:-1] + (", ...]" if len(value) > 8 else "]") if _is_flat(value) else "a nested list"
        )
    return text if len(text) <= 120 else text[:117] + "..."


def _is_flat(value: list) -> bool:
    return all(isinstance(v, (str, int, float, bool, type(None))) for v in value[:8])
