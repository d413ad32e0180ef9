"""Many large requests in flight from one process: tritonclient's asyncio clients, retries with backoff.

tritonclient's synchronous HTTP client is not thread-safe and throttles its async path, so bulk work
goes through `tritonclient.grpc.aio` (default) or `tritonclient.http.aio`, one client per event loop,
with many requests in flight. `infer_rows` splits rows into requests and isolates the rows a model
refuses, for `score` and the Spark engine alike.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field

import numpy as np

from tritonkit.clients import wire
from tritonkit.clients.endpoint import Endpoint, RetryPolicy, overload_reason, retryable, row_level, translate
from tritonkit.clients.metadata import ModelMeta
from tritonkit.errors import OverloadedError, ServerError, ServerUnavailableError

logger = logging.getLogger(__name__)

BULK_TIMEOUT_S = 120.0  # one large request may queue behind others: the default per-request budget of bulk work
BULK_RETRY = RetryPolicy()


def bulk_endpoint(endpoint: Endpoint) -> Endpoint:
    """The endpoint with the bulk retry policy when it has none (bulk work always retries transient errors)."""
    return endpoint if endpoint.retry is not None else endpoint.with_(retry=BULK_RETRY)


@dataclass
class AsyncInferer:
    """Sends ready numpy batches to one model; one per event loop. Keeps latencies and the retry count."""

    endpoint: Endpoint
    meta: ModelMeta
    version: str = ""
    latencies_ms: list[float] = field(default_factory=list)
    retries: int = 0

    def __post_init__(self):
        self.endpoint = bulk_endpoint(self.endpoint)
        endpoint = self.endpoint
        if endpoint.protocol == "grpc":
            import tritonclient.grpc.aio as module

            self._client = endpoint.grpc_client(module)
        else:
            import tritonclient.http.aio as module

            self._client = module.InferenceServerClient(
                endpoint.url, ssl=endpoint.ssl, ssl_context=endpoint.ssl_context(), conn_timeout=endpoint.timeout_s
            )
        self._module = module
        self._outputs = wire.requested_outputs(module, self.meta, endpoint.protocol)

    async def _once(self, arrays: dict[str, np.ndarray], timeout_s: float):
        inputs = wire.build_inputs(self._module, self.meta, arrays, self.endpoint.protocol)
        # HTTP's `timeout=` is Triton's server-side queue timeout in microseconds, not a client deadline:
        # the aiohttp session's timeout (conn_timeout) bounds an HTTP call instead.
        kwargs = {"client_timeout": timeout_s} if self.endpoint.protocol == "grpc" else {}
        start = time.perf_counter()
        try:
            result = await self._client.infer(
                self.meta.name,
                inputs,
                model_version=self.version,
                outputs=self._outputs,
                headers=self.endpoint.header_dict or None,
                **kwargs,
            )
        except Exception as e:
            raise translate(e, self.meta.name, self.endpoint, timeout_s * 1000) from e
        self.latencies_ms.append((time.perf_counter() - start) * 1000)
        return wire.read_result(result, self.meta, self.endpoint.protocol)

    async def infer(self, arrays: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], str]:
        """(outputs, model version). Retries what `retryable` allows, within the policy's attempts and total
        deadline; then raises OverloadedError when the model's queue kept refusing, else ServerUnavailableError."""
        policy = self.endpoint.retry
        start = time.monotonic()
        attempt = 0
        while True:
            elapsed = time.monotonic() - start
            timeout_s = self.endpoint.timeout_s
            if policy.max_total_s is not None:
                timeout_s = max(0.001, min(timeout_s, policy.max_total_s - elapsed))
            try:
                return await self._once(arrays, timeout_s)
            except ServerError as e:
                if not retryable(e):
                    raise
                elapsed = time.monotonic() - start
                delay = policy.delay(attempt)
                if policy.gives_up(attempt, elapsed, delay):
                    raise self._gave_up(e, attempt, elapsed) from e
                attempt += 1
                self.retries += 1
                logger.warning("transient error (%s); retry %d in %.2f s", str(e)[:160], attempt, delay)
                await asyncio.sleep(delay)

    def _gave_up(self, error: ServerError, attempt: int, elapsed: float) -> ServerError:
        tries = f"after {attempt + 1} attempts in {elapsed:.1f} s"
        name = self.meta.name
        reason = overload_reason(str(error))
        if reason:
            return OverloadedError(f"model `{name}` is overloaded: {reason}; still refused {tries}", model=name)
        return ServerUnavailableError(f"model `{name}`: server still unavailable {tries}: {error}", model=name)

    async def close(self) -> None:
        await self._client.close()


@dataclass(frozen=True)
class Answer:
    """Outputs of consecutive rows, from one request."""

    first_row: int
    outputs: dict[str, np.ndarray]
    model_version: str

    @property
    def rows(self) -> int:
        return len(next(iter(self.outputs.values())))


@dataclass(frozen=True)
class RowFailure:
    """A row the model refused, alone in its request."""

    row: int
    reason: str


@dataclass(frozen=True)
class Inferred:
    """What the server made of some rows: answers in row order, refused rows, requests sent."""

    answers: list[Answer] = field(default_factory=list)
    failures: list[RowFailure] = field(default_factory=list)
    requests: int = 0

    def __add__(self, other: Inferred) -> Inferred:
        return Inferred(self.answers + other.answers, self.failures + other.failures, self.requests + other.requests)


async def infer_isolating(
    inferer: AsyncInferer, sem: asyncio.Semaphore, arrays: dict[str, np.ndarray], start: int
) -> Inferred:
    """Rows [start, start + n) in one request. A request the model rejects is split in halves until the bad
    rows are found, so one bad row does not fail its neighbours; a server still unavailable after the
    retries is not a row's fault: it raises."""
    n = len(next(iter(arrays.values())))
    try:
        async with sem:
            outputs, version = await inferer.infer(arrays)
        return Inferred([Answer(start, outputs, version)], [], 1)
    except ServerError as e:
        if not row_level(e):
            raise
        if n == 1:
            return Inferred([], [RowFailure(start, str(e))], 1)
        half = n // 2
        left = await infer_isolating(inferer, sem, {k: v[:half] for k, v in arrays.items()}, start)
        right = await infer_isolating(inferer, sem, {k: v[half:] for k, v in arrays.items()}, start + half)
        return Inferred(requests=1) + left + right


async def infer_rows(
    inferer: AsyncInferer, sem: asyncio.Semaphore, arrays: dict[str, np.ndarray], rows: int, batch: int
) -> Inferred:
    """All `rows` rows of `arrays` in requests of up to `batch` rows, concurrently (as `sem` allows)."""
    parts = await asyncio.gather(
        *(
            infer_isolating(inferer, sem, {k: v[s : s + batch] for k, v in arrays.items()}, s)
            for s in range(0, rows, batch)
        )
    )
    total = sum(parts, Inferred())
    return Inferred(sorted(total.answers, key=lambda a: a.first_row), total.failures, total.requests)
