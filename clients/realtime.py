"""Real-time calls: one record (or a small micro-batch) per request, over gRPC or HTTP."""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from tritonkit.clients import wire
from tritonkit.clients.endpoint import Endpoint, retryable, translate
from tritonkit.clients.metadata import ModelMeta
from tritonkit.errors import DeadlineExceededError, ModelLoadError, ServerError, UsageError

logger = logging.getLogger(__name__)

BUDGET_CLIENTS = 4  # HTTP clients kept for per-call budgets other than the endpoint's (one per budget)


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


class _Budget:
    """A call's latency budget: what is left of it, and the error that says it ran out."""

    def __init__(self, model: str, budget_ms: float):
        if not budget_ms > 0:
            raise UsageError(f"timeout_ms is {budget_ms!r}; expected a latency budget above 0 ms")
        self.model, self.budget_ms, self.start = model, budget_ms, time.perf_counter()

    @property
    def elapsed_ms(self) -> float:
        return (time.perf_counter() - self.start) * 1000

    def left_s(self) -> float:
        left = (self.budget_ms - self.elapsed_ms) / 1000
        if left <= 0:
            raise self.exceeded()
        return left

    def exceeded(self) -> DeadlineExceededError:
        return DeadlineExceededError(self.model, self.budget_ms, self.elapsed_ms)


def _closed() -> None:
    return None


class TritonClient:
    """A tritonclient wrapper that builds requests from the server's model metadata.

    `TritonClient(Endpoint(...))`, or `TritonClient("127.0.0.1:8001", protocol="grpc", ...)` with the
    endpoint's settings as keywords. One instance per thread for HTTP (tritonclient's HTTP client is
    not thread-safe); the gRPC one may be shared. Every call's budget (the endpoint's `timeout_s`, or
    `timeout_ms` per call) covers connecting and the first metadata fetch too; with the endpoint's
    `retry` policy, unavailable and overloaded answers are retried with jittered backoff while it lasts.
    """

    def __init__(self, endpoint: Endpoint | str | None = None, **settings):
        if endpoint is None or isinstance(endpoint, str):
            endpoint = Endpoint(**({"url": endpoint} if endpoint else {}), **settings)
        elif settings:
            endpoint = endpoint.with_(**settings)
        self.endpoint = endpoint
        self._meta: dict[tuple[str, str], ModelMeta] = {}
        self._budget_clients: OrderedDict = OrderedDict()
        self._closed = False
        if endpoint.protocol == "grpc":
            import tritonclient.grpc as module

            self._module = module
            self._client = endpoint.grpc_client(module)
        else:
            import tritonclient.http as module

            self._module = module
            self._client = self._http_client(endpoint.timeout_s)

    @property
    def url(self) -> str:
        return self.endpoint.url

    @property
    def protocol(self) -> str:
        return self.endpoint.protocol

    def __repr__(self) -> str:
        return f"TritonClient({self.endpoint!r})"

    def _http_client(self, timeout_s: float):
        """A tritonclient HTTP client whose socket waits end after `timeout_s` (its connections' deadline)."""
        return self._module.InferenceServerClient(
            self.endpoint.url,
            ssl=self.endpoint.ssl,
            connection_timeout=timeout_s,
            network_timeout=timeout_s,
            ssl_options=self.endpoint.http_ssl_options(),
        )

    def _raw(self, budget: _Budget):
        """The tritonclient client to use within `budget` (HTTP: one whose socket timeouts fit it)."""
        if self.protocol == "grpc":
            return self._client
        timeout_s = budget.budget_ms / 1000
        if timeout_s == self.endpoint.timeout_s:
            return self._client
        if timeout_s not in self._budget_clients:
            self._budget_clients[timeout_s] = self._http_client(timeout_s)
            if len(self._budget_clients) > BUDGET_CLIENTS:
                self._budget_clients.popitem(last=False)[1].close()
        self._budget_clients.move_to_end(timeout_s)
        return self._budget_clients[timeout_s]

    def _call(self, method: str, budget: _Budget, *args, **kwargs):
        """One tritonclient call within what is left of `budget`, with the endpoint's headers; kit errors out."""
        model = kwargs.pop("_model", "")
        if self.protocol == "grpc":
            kwargs["client_timeout"] = budget.left_s()
        try:
            return getattr(self._raw(budget), method)(*args, headers=self.endpoint.header_dict or None, **kwargs)
        except Exception as e:
            error = translate(e, model, self.endpoint, budget.budget_ms)
            raise (budget.exceeded() if isinstance(error, DeadlineExceededError) else error) from e

    def _with_retries(self, budget: _Budget, action):
        """`action()` again after retryable failures, per the endpoint's policy, within `budget`."""
        policy, attempt = self.endpoint.retry, 0
        while True:
            try:
                return action()
            except ServerError as e:
                elapsed_s = budget.elapsed_ms / 1000
                if policy is None or not retryable(e) or isinstance(e, DeadlineExceededError):
                    raise
                delay = policy.delay(attempt)
                if policy.gives_up(attempt, elapsed_s, delay) or (elapsed_s + delay) * 1000 >= budget.budget_ms:
                    raise
                attempt += 1
                logger.warning("%s; try %d in %.1f s", e, attempt + 1, delay)
                time.sleep(delay)

    def is_ready(self, timeout_ms: float | None = None) -> bool:
        budget = _Budget("", timeout_ms or self.endpoint.timeout_s * 1000)
        try:
            return bool(self._call("is_server_ready", budget))
        except ServerError:
            return False

    def _budget(self, model: str, timeout_ms: float | None) -> _Budget:
        return _Budget(model, self.endpoint.timeout_s * 1000 if timeout_ms is None else float(timeout_ms))

    def metadata(self, model: str, version: str = "", timeout_ms: float | None = None) -> ModelMeta:
        """The model's inputs, outputs and max_batch_size, fetched once and cached (retried as calls are)."""
        return self._metadata(model, version, self._budget(model, timeout_ms))

    def _metadata(self, model: str, version: str, budget: _Budget) -> ModelMeta:
        key = (model, version)
        if key not in self._meta:
            self._meta[key] = self._with_retries(budget, lambda: self._fetch_metadata(model, version, budget))
        return self._meta[key]

    def _fetch_metadata(self, model: str, version: str, budget: _Budget) -> ModelMeta:
        json_form = {"as_json": True} if self.protocol == "grpc" else {}
        meta = self._call("get_model_metadata", budget, model, version, _model=model, **json_form)
        config = self._call("get_model_config", budget, model, version, _model=model, **json_form)
        return ModelMeta.from_responses(meta, config)

    def models(self) -> list[dict]:
        """Triton's repository index: [{"name", "version", "state", "reason"}]; needs the repository API open."""
        budget = _Budget("", self.endpoint.timeout_s * 1000)
        if self.protocol == "grpc":
            return list(self._call("get_model_repository_index", budget, as_json=True).get("models", []))
        return list(self._call("get_model_repository_index", budget))

    def model_config(self, model: str, version: str = "") -> dict:
        """The model's config as Triton reports it (JSON form)."""
        budget = _Budget(model, self.endpoint.timeout_s * 1000)
        json_form = {"as_json": True} if self.protocol == "grpc" else {}
        config = self._call("get_model_config", budget, model, version, _model=model, **json_form)
        return config.get("config", config)

    def load_model(self, model: str) -> None:
        """Asks Triton to load (or reload) `model` (model control mode explicit); ModelLoadError names the reason.

        Triton loads the new version(s) while the old ones keep serving, then retires the old ones.
        """
        budget = _Budget(model, max(self.endpoint.timeout_s, 300.0) * 1000)
        try:
            self._call("load_model", budget, model, _model=model)
        except ServerError as e:
            raise ModelLoadError(model, str(e).split("\n\nAt:")[0].strip()) from e
        finally:
            self._meta = {key: meta for key, meta in self._meta.items() if key[0] != model}

    def infer_arrays(
        self, model: str, arrays: dict[str, np.ndarray], version: str = "", timeout_ms: float | None = None
    ):
        """Sends ready arrays; returns (outputs by name, model version, client latency in ms).

        `timeout_ms` is the call's latency budget (default: the endpoint's `timeout_s`), connecting and
        the first metadata fetch included: when no answer has come by then, or it came later,
        DeadlineExceededError states the budget; a late answer is discarded.
        """
        return self._infer(model, arrays, version, self._budget(model, timeout_ms))

    def _infer(self, model: str, arrays: dict[str, np.ndarray], version: str, budget: _Budget):
        meta = self._metadata(model, version, budget)
        inputs = wire.build_inputs(self._module, meta, arrays, self.protocol)
        outputs = wire.requested_outputs(self._module, meta, self.protocol)
        call = {"model_version": version, "outputs": outputs, "_model": model}
        result = self._with_retries(budget, lambda: self._call("infer", budget, model, inputs, **call))
        if budget.elapsed_ms > budget.budget_ms:
            raise budget.exceeded()
        values, served = wire.read_result(result, meta, self.protocol)
        return values, served or version, budget.elapsed_ms

    def predict(self, model: str, features: dict, version: str = "", timeout_ms: float | None = None) -> Prediction:
        """One real-time call with `features` as {input name: value}; validated against the metadata.

        `timeout_ms`: this call's latency budget (see `infer_arrays`).
        """
        budget = self._budget(model, timeout_ms)
        arrays = self._metadata(model, version, budget).record_arrays(features)
        values, served_version, latency_ms = self._infer(model, arrays, version, budget)
        return Prediction(model, served_version, values, latency_ms)

    def close(self) -> None:
        """Closes every connection once; later calls do nothing."""
        if self._closed:
            return
        self._closed = True
        for raw in [self._client, *self._budget_clients.values()]:
            raw.close()
            # tritonclient's __del__ closes again; at interpreter exit under gevent (Locust) that can block forever
            raw.close = _closed
        self._budget_clients.clear()

    def __enter__(self) -> TritonClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
