"""Real-time calls: one record (or a small micro-batch) per request, over gRPC or HTTP."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
from tritonclient.utils import InferenceServerException

from tritonkit.clients.metadata import ModelMeta
from tritonkit.errors import ModelNotFoundError, ServerError, UsageError

PROTOCOLS = ("grpc", "http")


@dataclass(frozen=True)
class Prediction:
    """What one real-time call returned, and how long the client waited for it."""

    model: str
    model_version: str
    outputs: dict[str, np.ndarray]
    latency_ms: float

    def to_dict(self) -> dict:
        """JSON-ready: a single record's outputs lose their batch dimension of 1."""
        def plain(array: np.ndarray):
            if array.dtype == object:
                array = np.vectorize(lambda b: b.decode() if isinstance(b, bytes) else b, otypes=[object])(array)
            return (array[0] if array.ndim > 0 and array.shape[0] == 1 else array).tolist()

        return {
            "model": self.model,
            "model_version": self.model_version,
            "outputs": {name: plain(value) for name, value in self.outputs.items()},
            "latency_ms": round(self.latency_ms, 3),
        }


def _wrap(error: InferenceServerException, model: str) -> ServerError:
    message = error.message() or str(error)
    status = str(error.status() or "")
    if "unknown model" in message or "NOT_FOUND" in status or status == "404":
        return ModelNotFoundError(f"model `{model}` is not served here: {message}", model=model, status=status)
    return ServerError(f"model `{model}`: {message}", model=model, status=status)


@dataclass
class TritonClient:
    """A tritonclient wrapper that builds requests from the server's model metadata.

    One instance per thread for HTTP (tritonclient's HTTP client is not thread-safe); the gRPC one
    may be shared.

    Args:
        url: HOST:PORT of Triton's gRPC (default 8001) or HTTP (default 8000) endpoint.
        protocol: "grpc" or "http".
        timeout_s: per-call deadline.
        ssl: use TLS (gRPC: a secure channel; HTTP: https).
        headers: extra headers sent with every request (for instance an auth token).
    """

    url: str
    protocol: str = "grpc"
    timeout_s: float = 10.0
    ssl: bool = False
    root_certificates: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    _meta: dict[tuple[str, str], ModelMeta] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self):
        if self.protocol not in PROTOCOLS:
            raise UsageError(f"--protocol is {self.protocol!r}; expected one of {', '.join(PROTOCOLS)}")
        if self.protocol == "grpc":
            import tritonclient.grpc as module

            self._module = module
            self._client = module.InferenceServerClient(
                self.url, ssl=self.ssl, root_certificates=self.root_certificates
            )
        else:
            import tritonclient.http as module

            self._module = module
            self._client = module.InferenceServerClient(
                self.url, ssl=self.ssl, connection_timeout=self.timeout_s, network_timeout=self.timeout_s
            )

    def is_ready(self) -> bool:
        try:
            return bool(self._client.is_server_ready(headers=self.headers))
        except InferenceServerException:
            return False

    def metadata(self, model: str, version: str = "") -> ModelMeta:
        """The model's inputs, outputs and max_batch_size, fetched once and cached."""
        key = (model, version)
        if key not in self._meta:
            try:
                if self.protocol == "grpc":
                    meta = self._client.get_model_metadata(model, version, headers=self.headers, as_json=True)
                    config = self._client.get_model_config(model, version, headers=self.headers, as_json=True)
                else:
                    meta = self._client.get_model_metadata(model, version, headers=self.headers)
                    config = self._client.get_model_config(model, version, headers=self.headers)
            except InferenceServerException as e:
                raise _wrap(e, model) from e
            self._meta[key] = ModelMeta.from_responses(meta, config)
        return self._meta[key]

    def infer_arrays(self, model: str, arrays: dict[str, np.ndarray], version: str = ""):
        """Sends ready arrays; returns (outputs by name, model version, client latency in ms)."""
        meta = self.metadata(model, version)
        binary = {"binary_data": True} if self.protocol == "http" else {}
        inputs = []
        for tensor in meta.inputs:
            array = arrays[tensor.name]
            infer_input = self._module.InferInput(tensor.name, list(array.shape), tensor.datatype)
            infer_input.set_data_from_numpy(array, **binary)
            inputs.append(infer_input)
        outputs = [self._module.InferRequestedOutput(t.name, **binary) for t in meta.outputs]
        timeout = {"client_timeout": self.timeout_s} if self.protocol == "grpc" else {}
        start = time.perf_counter()
        try:
            result = self._client.infer(
                model, inputs, model_version=version, outputs=outputs, headers=self.headers, **timeout
            )
        except InferenceServerException as e:
            raise _wrap(e, model) from e
        latency_ms = (time.perf_counter() - start) * 1000
        response = result.get_response(as_json=True) if self.protocol == "grpc" else result.get_response()
        values = {t.name: result.as_numpy(t.name) for t in meta.outputs}
        return values, str(response.get("model_version", version)), latency_ms

    def predict(self, model: str, features: dict, version: str = "") -> Prediction:
        """One real-time call with `features` as {input name: value}; validated against the metadata."""
        arrays = self.metadata(model, version).record_arrays(features)
        values, served_version, latency_ms = self.infer_arrays(model, arrays, version)
        return Prediction(model, served_version, values, latency_ms)

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> "TritonClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
