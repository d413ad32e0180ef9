"""One request and one response on the wire: tritonclient tensors built from model metadata, read back.

The real-time client and the bulk inferer share these, for gRPC and HTTP alike (HTTP sends binary
tensors: JSON would cost more than the model for large batches).
"""

from __future__ import annotations

import numpy as np

from tritonkit.clients.metadata import ModelMeta


def build_inputs(module, meta: ModelMeta, arrays: dict[str, np.ndarray], protocol: str) -> list:
    """tritonclient InferInput objects for `arrays` (by input name), in the model's input order."""
    binary = {"binary_data": True} if protocol == "http" else {}
    inputs = []
    for tensor in meta.inputs:
        array = arrays[tensor.name]
        item = module.InferInput(tensor.name, list(array.shape), tensor.datatype)
        item.set_data_from_numpy(array, **binary)
        inputs.append(item)
    return inputs


def requested_outputs(module, meta: ModelMeta, protocol: str) -> list:
    binary = {"binary_data": True} if protocol == "http" else {}
    return [module.InferRequestedOutput(t.name, **binary) for t in meta.outputs]


def read_result(result, meta: ModelMeta, protocol: str) -> tuple[dict[str, np.ndarray], str]:
    """(outputs by name, the model version that served the request)."""
    if protocol == "grpc":  # read the field: a JSON copy of the response would base64 every output
        version = result.get_response().model_version
    else:
        version = result.get_response().get("model_version", "")
    return {t.name: result.as_numpy(t.name) for t in meta.outputs}, str(version or "")
