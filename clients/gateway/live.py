"""The live path of one model in one gateway worker: its metadata, the version Triton serves, and calls.

Calls go through the kit's asyncio client (`AsyncInferer`, gRPC by default), one per model per worker,
with the endpoint's retry policy (none unless `--retry-s` is given) inside the request's budget. Several
records (a batchGet's misses) travel in one request; a record the model refuses is isolated by splitting,
as in bulk scoring. The metadata is re-read every `version_refresh_s`, so a newly deployed version is
noticed (and entries of the older one become stale) without a restart.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from dataclasses import dataclass

import numpy as np

from tritonkit.clients.bulk import AsyncInferer, infer_isolating
from tritonkit.clients.endpoint import Endpoint, RetryPolicy
from tritonkit.clients.gateway.request_features import RequestFeatures
from tritonkit.clients.metadata import ModelMeta
from tritonkit.clients.store import newer_version, row_outputs
from tritonkit.errors import DeadlineExceededError, InputError, ServerError, ServerUnavailableError, UsageError

logger = logging.getLogger(__name__)

MAX_BUDGET_S = 60.0  # a request may ask for up to this budget; the Triton channel's own deadline
NO_RETRY = RetryPolicy(attempts=1, max_total_s=None)
IN_FLIGHT = 1024  # requests one model's isolating splits may have in flight


@dataclass(frozen=True)
class LiveAnswer:
    """One record's live result: its outputs and the version that computed them, or the error for it."""

    outputs: dict | None = None
    model_version: str = ""
    error: Exception | None = None


class LiveModel:
    """One model's live path; `ensure()` before the first call (metadata may arrive after start)."""

    def __init__(self, name: str, endpoint: Endpoint, request_features: RequestFeatures | None = None):
        self.name = name
        self.endpoint = endpoint.with_(
            timeout_s=max(endpoint.timeout_s, MAX_BUDGET_S), retry=endpoint.retry or NO_RETRY
        )
        self._metadata_endpoint = endpoint.with_(retry=None)
        self.request_features = request_features
        self.meta: ModelMeta | None = None
        self.served_version = ""
        self.problem: str | None = None  # why the live path cannot work (bad declaration), when it cannot
        self._inferer: AsyncInferer | None = None
        self._fetching: asyncio.Lock | None = None
        self._sem: asyncio.Semaphore | None = None

    @property
    def ready(self) -> bool:
        return self.meta is not None and self.problem is None

    def fetch_metadata(self, timeout_s: float) -> ModelMeta:
        """The model's metadata from Triton, read now (blocking; run it in a thread from async code)."""
        from tritonkit.clients.realtime import TritonClient

        with TritonClient(self._metadata_endpoint) as client:
            return client.metadata(self.name, timeout_ms=timeout_s * 1000)

    async def refresh(self, timeout_s: float) -> None:
        """Reads the metadata again: the served version, and a new inferer when the signature changed."""
        if self._fetching is None:
            self._fetching = asyncio.Lock()
        async with self._fetching:
            meta = await asyncio.wait_for(asyncio.to_thread(self.fetch_metadata, timeout_s), timeout_s + 0.5)
            self._adopt(meta)

    def _adopt(self, meta: ModelMeta) -> None:
        served = max(meta.versions, key=lambda v: (v.isdigit(), int(v) if v.isdigit() else 0, v), default="")
        if served and newer_version(served, self.served_version):
            logger.info("model %s: Triton now serves version %s (was %s)", self.name, served, self.served_version)
        self.served_version = served or self.served_version
        if self.meta is not None and (meta.inputs, meta.outputs) == (self.meta.inputs, self.meta.outputs):
            return
        try:
            if self.request_features is not None:
                self.request_features.check(meta)
            self.problem = None
        except UsageError as e:
            self.problem = str(e)
            logger.error("model %s: %s", self.name, e)
        old, self.meta = self._inferer, meta
        self._inferer = AsyncInferer(self.endpoint, meta, latencies_ms=deque(maxlen=1))
        if old is not None:
            asyncio.get_running_loop().call_later(MAX_BUDGET_S, lambda: asyncio.ensure_future(old.close()))

    async def ensure(self, timeout_s: float) -> ModelMeta:
        """The metadata, fetched now when it has not come yet; ServerUnavailableError when Triton cannot say."""
        if self.meta is None:
            try:
                await self.refresh(timeout_s)
            except (ServerError, asyncio.TimeoutError, TimeoutError) as e:
                raise ServerUnavailableError(
                    f"model `{self.name}`: no metadata from Triton yet: {e}", model=self.name
                ) from e
        if self.problem is not None:
            raise ServerError(f"model `{self.name}` cannot be scored live: {self.problem}", model=self.name)
        return self.meta

    def learn_version(self, version: str) -> None:
        """A live answer names the version that computed it: a newer one is the served version from now on."""
        if newer_version(version, self.served_version):
            self.served_version = version

    def record(self, stored: dict | None, given: dict | None, now: float) -> dict:
        """The model's input record: stored features (model inputs only), request-time ones, then `given`."""
        names = {t.name for t in self.meta.inputs}
        record = {k: v for k, v in (stored or {}).items() if k in names}
        if self.request_features is not None:
            record.update(self.request_features.values(now))
        record.update(given or {})
        return record

    async def score(self, records: list[dict], timeout_s: float) -> list[LiveAnswer]:
        """Scores the records in one request (per max_batch_size); an answer per record, in order.

        A record that does not fit the model gets its InputError; a Triton failure of the whole request
        (unavailable, overloaded, too slow for `timeout_s`) raises.
        """
        meta = await self.ensure(timeout_s)
        answers: list[LiveAnswer | None] = [None] * len(records)
        arrays, rows = [], []
        for i, record in enumerate(records):
            try:
                arrays.append(meta.record_arrays(record))
                rows.append(i)
            except InputError as e:
                answers[i] = LiveAnswer(error=e)
        if rows:
            try:
                scored = await asyncio.wait_for(self._send(meta, arrays), timeout_s)
            except (asyncio.TimeoutError, TimeoutError):
                raise DeadlineExceededError(self.name, timeout_s * 1000, timeout_s * 1000) from None
            for i, answer in zip(rows, scored):
                answers[i] = answer
        return answers

    async def _send(self, meta: ModelMeta, arrays: list[dict]) -> list[LiveAnswer]:
        if self._sem is None:
            self._sem = asyncio.Semaphore(IN_FLIGHT)
        if not meta.batching:  # one request per record; outputs get a leading row axis for row_outputs
            results = await asyncio.gather(*(self._inferer.infer(a) for a in arrays))
            return [self._answer({k: v[None] for k, v in out.items()}, version, 0) for out, version in results]
        size = meta.max_batch_size
        parts = [arrays[s : s + size] for s in range(0, len(arrays), size)]
        inferred = await asyncio.gather(
            *(
                infer_isolating(self._inferer, self._sem, {k: np.concatenate([a[k] for a in part]) for k in part[0]}, 0)
                for part in parts
            )
        )
        answers = []
        for part, result in zip(parts, inferred):
            by_row = [LiveAnswer(error=ServerError(f.reason, model=self.name)) for f in result.failures]
            failed = {f.row: answer for f, answer in zip(result.failures, by_row)}
            ok = {a.first_row + r: (a, r) for a in result.answers for r in range(a.rows)}
            for row in range(len(part)):
                answer, r = ok.get(row, (None, 0))
                answers.append(failed[row] if answer is None else self._answer(answer.outputs, answer.model_version, r))
        return answers

    def _answer(self, outputs: dict[str, np.ndarray], version: str, row: int) -> LiveAnswer:
        self.learn_version(version)
        return LiveAnswer(row_outputs(outputs, row), version)

    async def close(self) -> None:
        if self._inferer is not None:
            await self._inferer.close()
