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
from tritonkit.errors import ServerError, UsageError

logger = logging.getLogger(__name__)

# Errors worth retrying: the server is restarting, overloaded, or slow; the request itself is fine.
TRANSIENT = ("UNAVAILABLE", "RESOURCE_EXHAUSTED", "DEADLINE_EXCEEDED", "503", "429", "504", "502")
GRPC_LIMITS = [("grpc.max_send_message_length", 2**31 - 1), ("grpc.max_receive_message_length", 2**31 - 1)]


def is_transient(error: Exception) -> bool:
    if isinstance(error, (ConnectionError, asyncio.TimeoutError, OSError)):
        return True
    if isinstance(error, InferenceServerException):
        status = str(error.status() or "")
        message = error.message() or ""
        return any(t in status for t in TRANSIENT) or "failed to connect" in message.lower() or \
            "Socket closed" in message or "Connection reset" in message
    return type(error).__name__ in {"ClientConnectorError", "ServerDisconnectedError", "ClientOSError"}


@dataclass
class RetryPolicy:
    attempts: int = 8
    base_s: float = 0.2
    max_s: float = 10.0

    def delay(self, attempt: int) -> float:
        """Exponential backoff with full jitter."""
        return random.uniform(0, min(self.max_s, self.base_s * 2 ** attempt))


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
    headers: dict[str, str] = field(default_factory=dict)
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    latencies_ms: list[float] = field(default_factory=list)
    retries: int = 0

    def __post_init__(self):
        if self.protocol == "grpc":
            import tritonclient.grpc.aio as module

            self._client = module.InferenceServerClient(
                self.url, ssl=self.ssl, root_certificates=self.root_certificates, channel_args=GRPC_LIMITS
            )
        elif self.protocol == "http":
            import tritonclient.http.aio as module

            self._client = module.InferenceServerClient(self.url, ssl=self.ssl, conn_timeout=self.timeout_s)
        else:
            raise UsageError(f"--protocol is {self.protocol!r}; expected grpc or http")
        self._module = module
        self._binary = {"binary_data": True} if self.protocol == "http" else {}
        self._outputs = [t.name for t in self.meta.outputs]

    async def _once(self, arrays: dict[str, np.ndarray]):
        inputs = []
        for tensor in self.meta.inputs:
            array = arrays[tensor.name]
            item = self._module.InferInput(tensor.name, list(array.shape), tensor.datatype)
            item.set_data_from_numpy(array, **self._binary)
            inputs.append(item)
        outputs = [self._module.InferRequestedOutput(name, **self._binary) for name in self._outputs]
        kwargs = {"client_timeout": self.timeout_s} if self.protocol == "grpc" else {"timeout": int(self.timeout_s)}
        start = time.perf_counter()
        result = await self._client.infer(self.meta.name, inputs, model_version=self.version, outputs=outputs,
                                          headers=self.headers or None, **kwargs)
        self.latencies_ms.append((time.perf_counter() - start) * 1000)
        if self.protocol == "grpc":
            version = result.get_response().model_version
        else:
            version = str(result.get_response().get("model_version", ""))
        return {name: result.as_numpy(name) for name in self._outputs}, version

    async def infer(self, arrays: dict[str, np.ndarray]):
        """Retries transient failures with backoff; raises ServerError for the rest (or when retries run out)."""
        for attempt in range(self.retry.attempts):
            try:
                return await self._once(arrays)
            except Exception as e:  # noqa: BLE001 - classified right below
                if not is_transient(e):
                    message = e.message() if isinstance(e, InferenceServerException) else str(e)
                    raise ServerError(message, model=self.meta.name) from e
                if attempt == self.retry.attempts - 1:
                    raise ServerError(f"model `{self.meta.name}`: server still unavailable after "
                                      f"{self.retry.attempts} attempts: {e}", model=self.meta.name,
                                      status="UNAVAILABLE") from e
                self.retries += 1
                delay = self.retry.delay(attempt)
                logger.warning("transient error (%s); retry %d in %.2f s", str(e)[:120], attempt + 1, delay)
                await asyncio.sleep(delay)

    async def close(self) -> None:
        await self._client.close()
