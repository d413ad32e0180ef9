"""Many large requests in flight from one process: tritonclient's asyncio clients, retries with backoff.

tritonclient's synchronous HTTP client is not thread-safe and throttles its async path, so bulk work
goes through `tritonclient.grpc.aio` (default) or `tritonclient.http.aio`, one client per run, with
`concurrency` requests in flight.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from dataclasses import dataclass, field

import numpy as np
from tritonclient.utils import InferenceServerException

from tritonkit.clients.metadata import ModelMeta
from tritonkit.errors import OverloadedError, ServerError, UsageError

logger = logging.getLogger(__name__)

# Errors worth retrying: the server is restarting, overloaded, or slow; the request itself is fine.
TRANSIENT = ("UNAVAILABLE", "RESOURCE_EXHAUSTED", "DEADLINE_EXCEEDED", "503", "429", "504", "502")
# Channel args replace tritonclient's defaults: repeat its message limits. After a server restart, gRPC
# waits out its own reconnect backoff (up to 120 s by default) before it tries again: cap that at 2 s.
GRPC_LIMITS = [
    ("grpc.max_send_message_length", 2**31 - 1),
    ("grpc.max_receive_message_length", 2**31 - 1),
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.min_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 2000),
]
# What Triton says when a model's queue policy turns a request away, and what that means for people.
OVERLOAD_REASONS = {
    "Exceeds maximum queue size": "its queue is full (max_queue_size)",
    "Request timeout expired": "the request waited longer than its queue allows",
}


def overload_reason(message: str) -> str | None:
    """Why Triton turned a request away for overload (queue full, queue timeout); None for other errors."""
    return next((reason for marker, reason in OVERLOAD_REASONS.items() if marker in message), None)


def is_transient(error: Exception) -> bool:
    if isinstance(error, (ConnectionError, asyncio.TimeoutError, OSError)):
        return True
    if isinstance(error, InferenceServerException):
        status = str(error.status() or "")
        message = error.message() or ""
        return (
            any(t in status for t in TRANSIENT)
            or "failed to connect" in message.lower()
            or "Socket closed" in message
            or "Connection reset" in message
        )
    return type(error).__name__ in {"ClientConnectorError", "ServerDisconnectedError", "ClientOSError"}


@dataclass(frozen=True)
class RetryPolicy:
    """Retries of transient failures (server restarting, overloaded, slow).

    Attributes:
        attempts: most tries of one request, the first included.
        base_s: backoff before the second try; doubles per try, capped at `max_s`, with full jitter.
        max_s: longest single backoff.
        max_total_s: total deadline for one request, tries and backoffs together (None: attempts only).
    """

    attempts: int = 30
    base_s: float = 0.2
    max_s: float = 5.0
    max_total_s: float | None = 120.0

    def __post_init__(self):
        if (
            self.attempts < 1
            or self.base_s < 0
            or self.max_s < 0
            or (self.max_total_s is not None and self.max_total_s <= 0)
        ):
            raise UsageError(f"retry policy {self}: expected attempts >= 1, delays >= 0 and max_total_s > 0")

    def delay(self, attempt: int) -> float:
        """Backoff after try `attempt` (0-based): exponential with full jitter."""
        return random.uniform(0, min(self.max_s, self.base_s * 2**attempt))

    def gives_up(self, attempt: int, elapsed_s: float, delay_s: float) -> bool:
        """Whether to stop after try `attempt` (0-based) rather than sleep `delay_s` and try again."""
        out_of_time = self.max_total_s is not None and elapsed_s + delay_s >= self.max_total_s
        return attempt + 1 >= self.attempts or out_of_time


@dataclass
class AsyncInferer:
    """Sends ready numpy batches; returns outputs by name. One per event loop."""

    url: str
    meta: ModelMeta
    protocol: str = "grpc"
    version: str = ""
    timeout_s: float = 120.0
    ssl: bool = False
    root_certificates: str | None = None
    headers: dict[str, str] = field(default_factory=dict, repr=False)
    private_key: str | None = None
    certificate_chain: str | None = None
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    latencies_ms: list[float] = field(default_factory=list)
    retries: int = 0

    def __post_init__(self):
        if self.protocol == "grpc":
            import tritonclient.grpc.aio as module

            self._client = module.InferenceServerClient(
                self.url,
                ssl=self.ssl,
                root_certificates=self.root_certificates,
                channel_args=GRPC_LIMITS,
                private_key=self.private_key,
                certificate_chain=self.certificate_chain,
            )
        elif self.protocol == "http":
            import ssl as tls

            import tritonclient.http.aio as module

            context = None
            if self.ssl:
                context = tls.create_default_context(cafile=self.root_certificates)
                if self.certificate_chain:
                    context.load_cert_chain(self.certificate_chain, self.private_key)
            self._client = module.InferenceServerClient(
                self.url, ssl=self.ssl, ssl_context=context, conn_timeout=self.timeout_s
            )
        else:
            raise UsageError(f"--protocol is {self.protocol!r}; expected grpc or http")
        self._module = module
        self._binary = {"binary_data": True} if self.protocol == "http" else {}
        self._outputs = [t.name for t in self.meta.outputs]

    async def _once(self, arrays: dict[str, np.ndarray], timeout_s: float):
        inputs = []
        for tensor in self.meta.inputs:
            array = arrays[tensor.name]
            item = self._module.InferInput(tensor.name, list(array.shape), tensor.datatype)
            item.set_data_from_numpy(array, **self._binary)
            inputs.append(item)
        outputs = [self._module.InferRequestedOutput(name, **self._binary) for name in self._outputs]
        # HTTP's `timeout=` is Triton's server-side queue timeout in microseconds, not a client deadline:
        # the aiohttp session's timeout (conn_timeout) bounds an HTTP call instead.
        kwargs = {"client_timeout": timeout_s} if self.protocol == "grpc" else {}
        start = time.perf_counter()
        result = await self._client.infer(
            self.meta.name, inputs, model_version=self.version, outputs=outputs, headers=self.headers or None, **kwargs
        )
        self.latencies_ms.append((time.perf_counter() - start) * 1000)
        if self.protocol == "grpc":
            version = result.get_response().model_version
        else:
            version = str(result.get_response().get("model_version", ""))
        return {name: result.as_numpy(name) for name in self._outputs}, version

    async def infer(self, arrays: dict[str, np.ndarray]):
        """Retries transient failures with jittered backoff within the retry policy's attempts and total
        deadline; raises ServerError for the rest, status UNAVAILABLE when retries run out (an
        OverloadedError when the server's last word was that the model's queue is full)."""
        start = time.monotonic()
        attempt = 0
        while True:
            elapsed = time.monotonic() - start
            timeout_s = self.timeout_s
            if self.retry.max_total_s is not None:
                timeout_s = max(0.001, min(timeout_s, self.retry.max_total_s - elapsed))
            try:
                return await self._once(arrays, timeout_s)
            except Exception as e:
                message = e.message() if isinstance(e, InferenceServerException) else str(e)
                if not is_transient(e):
                    raise ServerError(message, model=self.meta.name) from e
                elapsed = time.monotonic() - start
                delay = self.retry.delay(attempt)
                if self.retry.gives_up(attempt, elapsed, delay):
                    reason = overload_reason(message or "")
                    tries = f"after {attempt + 1} attempts in {elapsed:.1f} s"
                    if reason:
                        raise OverloadedError(
                            f"model `{self.meta.name}` is overloaded: {reason}; still refused {tries}",
                            model=self.meta.name,
                        ) from e
                    raise ServerError(
                        f"model `{self.meta.name}`: server still unavailable {tries}: {type(e).__name__}: {message}",
                        model=self.meta.name,
                        status="UNAVAILABLE",
                    ) from e
                attempt += 1
                self.retries += 1
                logger.warning("transient error (%s); retry %d in %.2f s", message[:120], attempt, delay)
                await asyncio.sleep(delay)

    async def close(self) -> None:
        await self._client.close()


async def infer_isolating(inferer: AsyncInferer, sem: asyncio.Semaphore, arrays: dict[str, np.ndarray], start: int):
    """Results for rows [start, start + n) as (done, failed, requests sent).

    done: [(first row, outputs, version)]; failed: [(row, reason)]. A multi-row request the model rejects
    is split in halves until the bad rows are found, so one bad row does not fail its neighbours. Running
    out of retries on an unavailable server is not a row's fault: it raises.
    """
    n = len(next(iter(arrays.values())))
    try:
        async with sem:
            outputs, version = await inferer.infer(arrays)
        return [(start, outputs, str(version))], [], 1
    except ServerError as e:
        if e.status == "UNAVAILABLE":
            raise
        if n == 1:
            return [], [(start, str(e))], 1
        half = n // 2
        left = await infer_isolating(inferer, sem, {k: v[:half] for k, v in arrays.items()}, start)
        right = await infer_isolating(inferer, sem, {k: v[half:] for k, v in arrays.items()}, start + half)
        return left[0] + right[0], left[1] + right[1], 1 + left[2] + right[2]
