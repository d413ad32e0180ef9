"""Real-time calls: one record (or a small micro-batch) per request, over gRPC or HTTP."""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np
from tritonclient.utils import InferenceServerException

from tritonkit.clients.bulk import RetryPolicy, overload_reason
from tritonkit.clients.metadata import ModelMeta
from tritonkit.errors import (
    DeadlineExceededError,
    ModelLoadError,
    ModelNotFoundError,
    OverloadedError,
    ServerError,
    UsageError,
)

PROTOCOLS = ("grpc", "http")
BUDGET_CLIENTS = 4  # HTTP clients kept for per-call budgets other than timeout_s (one per budget)


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
        return ModelNotFoundError(
            f"model `{model}` is not served here (not in the repository, or not loaded): {message}",
            model=model,
            status=status,
        )
    reason = overload_reason(message)
    if reason:
        return OverloadedError(
            f"model `{model}` is overloaded: {reason}; retry later with backoff ({message})", model=model, status=status
        )
    return ServerError(f"model `{model}`: {message}", model=model, status=status)


def _retryable(error: ServerError) -> bool:
    return isinstance(error, OverloadedError) or any(s in (error.status or "") for s in ("UNAVAILABLE", "503"))


@dataclass
class TritonClient:
    """A tritonclient wrapper that builds requests from the server's model metadata.

    One instance per thread for HTTP (tritonclient's HTTP client is not thread-safe); the gRPC one
    may be shared.

    Args:
        url: HOST:PORT of Triton's gRPC (default 8001) or HTTP (default 8000) endpoint.
        protocol: "grpc" or "http".
        timeout_s: default latency budget of a call (`timeout_ms` overrides it per call).
        ssl: use TLS (gRPC: a secure channel; HTTP: https).
        root_certificates: PEM file of the CA that signed the server's certificate (default: the system's).
        private_key, certificate_chain: PEM files of a client certificate, for servers that require one.
        headers: extra headers sent with every request (for instance an auth token); never in repr.
        retry: retry unavailable or overloaded answers with jittered backoff, within the call's budget
            and the policy's attempts and total deadline (None: fail at once).
    """

    url: str
    protocol: str = "grpc"
    timeout_s: float = 10.0
    ssl: bool = False
    root_certificates: str | None = None
    headers: dict[str, str] = field(default_factory=dict, repr=False)
    private_key: str | None = None
    certificate_chain: str | None = None
    retry: RetryPolicy | None = None
    _meta: dict[tuple[str, str], ModelMeta] = field(default_factory=dict, init=False, repr=False)
    _budget_clients: OrderedDict = field(default_factory=OrderedDict, init=False, repr=False)

    def __post_init__(self):
        if self.protocol not in PROTOCOLS:
            raise UsageError(f"--protocol is {self.protocol!r}; expected one of {', '.join(PROTOCOLS)}")
        if self.protocol == "grpc":
            import tritonclient.grpc as module

            self._module = module
            self._client = module.InferenceServerClient(
                self.url,
                ssl=self.ssl,
                root_certificates=self.root_certificates,
                private_key=self.private_key,
                certificate_chain=self.certificate_chain,
            )
        else:
            import tritonclient.http as module

            self._module = module
            self._client = self._http_client(self.timeout_s)

    def _http_client(self, timeout_s: float):
        """A tritonclient HTTP client whose socket waits end after `timeout_s` (its connections' deadline)."""
        tls = {"ca_certs": self.root_certificates, "certfile": self.certificate_chain, "keyfile": self.private_key}
        return self._module.InferenceServerClient(
            self.url,
            ssl=self.ssl,
            connection_timeout=timeout_s,
            network_timeout=timeout_s,
            ssl_options={k: v for k, v in tls.items() if v} or None,
        )

    def _http_for_budget(self, timeout_s: float):
        """The HTTP client for a per-call budget: the default one, or one kept per distinct budget."""
        if timeout_s == self.timeout_s:
            return self._client
        if timeout_s not in self._budget_clients:
            self._budget_clients[timeout_s] = self._http_client(timeout_s)
            if len(self._budget_clients) > BUDGET_CLIENTS:
                self._budget_clients.popitem(last=False)[1].close()
        self._budget_clients.move_to_end(timeout_s)
        return self._budget_clients[timeout_s]

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

    def load_model(self, model: str) -> None:
        """Asks Triton to load (or reload) `model` (model control mode explicit); ModelLoadError names the reason.

        Triton loads the new version(s) while the old ones keep serving, then retires the old ones.
        """
        try:
            self._client.load_model(model, headers=self.headers)
        except InferenceServerException as e:
            message = e.message() or str(e)
            raise ModelLoadError(model, message.split("\n\nAt:")[0].strip()) from e
        finally:
            self._meta = {key: meta for key, meta in self._meta.items() if key[0] != model}

    def infer_arrays(
        self, model: str, arrays: dict[str, np.ndarray], version: str = "", timeout_ms: float | None = None
    ):
        """Sends ready arrays; returns (outputs by name, model version, client latency in ms).

        `timeout_ms` is the call's latency budget (default: the client's `timeout_s`): when no answer
        has come by then, or it came later, DeadlineExceededError states the budget; a late answer is
        discarded. The budget covers the inference call (and its retries), not the first metadata fetch.
        """
        budget_ms = self.timeout_s * 1000 if timeout_ms is None else float(timeout_ms)
        if not budget_ms > 0:
            raise UsageError(f"timeout_ms is {timeout_ms!r}; expected a latency budget above 0 ms")
        meta = self.metadata(model, version)
        binary = {"binary_data": True} if self.protocol == "http" else {}
        inputs = []
        for tensor in meta.inputs:
            array = arrays[tensor.name]
            infer_input = self._module.InferInput(tensor.name, list(array.shape), tensor.datatype)
            infer_input.set_data_from_numpy(array, **binary)
            inputs.append(infer_input)
        outputs = [self._module.InferRequestedOutput(t.name, **binary) for t in meta.outputs]
        start = time.perf_counter()
        attempt = 0
        while True:
            try:
                result = self._send(model, inputs, outputs, version, budget_ms, start)
                break
            except ServerError as e:
                elapsed_s = time.perf_counter() - start
                delay = self.retry.delay(attempt) if self.retry is not None and _retryable(e) else None
                if (
                    delay is None
                    or self.retry.gives_up(attempt, elapsed_s, delay)
                    or (elapsed_s + delay) * 1000 >= budget_ms
                ):
                    raise
                attempt += 1
                time.sleep(delay)
        latency_ms = (time.perf_counter() - start) * 1000
        if latency_ms > budget_ms:
            raise DeadlineExceededError(model, budget_ms, latency_ms)
        if self.protocol == "grpc":  # read the field: a JSON copy of the response would base64 every output
            served = result.get_response().model_version
        else:
            served = result.get_response().get("model_version", "")
        values = {t.name: result.as_numpy(t.name) for t in meta.outputs}
        return values, str(served or version), latency_ms

    def _send(self, model: str, inputs, outputs, version: str, budget_ms: float, start: float):
        """One try, bounded by what is left of the budget (gRPC) or by the budget per socket wait (HTTP)."""
        left_s = budget_ms / 1000 - (time.perf_counter() - start)
        if left_s <= 0:
            raise DeadlineExceededError(model, budget_ms, (time.perf_counter() - start) * 1000)
        try:
            if self.protocol == "grpc":
                return self._client.infer(
                    model, inputs, model_version=version, outputs=outputs, headers=self.headers, client_timeout=left_s
                )
            return self._http_for_budget(budget_ms / 1000).infer(
                model, inputs, model_version=version, outputs=outputs, headers=self.headers
            )
        except InferenceServerException as e:
            if "DEADLINE_EXCEEDED" in str(e.status() or ""):
                raise DeadlineExceededError(model, budget_ms, (time.perf_counter() - start) * 1000) from e
            raise _wrap(e, model) from e
        except TimeoutError as e:  # an HTTP socket wait ran past the budget
            raise DeadlineExceededError(model, budget_ms, (time.perf_counter() - start) * 1000) from e

    def predict(self, model: str, features: dict, version: str = "", timeout_ms: float | None = None) -> Prediction:
        """One real-time call with `features` as {input name: value}; validated against the metadata.

        `timeout_ms`: this call's latency budget (see `infer_arrays`).
        """
        arrays = self.metadata(model, version).record_arrays(features)
        values, served_version, latency_ms = self.infer_arrays(model, arrays, version, timeout_ms)
        return Prediction(model, served_version, values, latency_ms)

    def close(self) -> None:
        for client in self._budget_clients.values():
            client.close()
        self._budget_clients.clear()
        self._client.close()

    def __enter__(self) -> TritonClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
