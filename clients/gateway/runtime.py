"""One worker's running gateway: built at start-up, refreshed in the background, drained at shutdown.

Start-up does not wait for Triton: a gateway whose Triton is down still answers store hits, and each
model's metadata (inputs, the served version) is fetched as soon as Triton answers, then re-read every
`version_refresh_s`. /readyz reports the store, Triton and each model; /metrics reads the batch runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from tritonkit.clients.gateway import request_features
from tritonkit.clients.gateway.core import Gateway
from tritonkit.clients.gateway.live import LiveModel
from tritonkit.clients.gateway.metrics import Metrics
from tritonkit.clients.gateway.settings import GatewaySettings
from tritonkit.clients.store import StoreError
from tritonkit.clients.store_async import open_async_store
from tritonkit.errors import ServerError

logger = logging.getLogger(__name__)

PROBE_TIMEOUT_S = 2.0  # budget of one readiness or metadata probe
RUNS_CACHE_S = 1.0  # /metrics reads the batch runs at most this often


class Runtime:
    """The gateway, its settings and metrics, and the background task that re-reads model metadata."""

    def __init__(self, settings: GatewaySettings, gateway: Gateway, metrics: Metrics):
        self.settings, self.gateway, self.metrics = settings, gateway, metrics
        self._refresher: asyncio.Task | None = None
        self._runs: tuple[float, dict, bool] = (0.0, {}, False)

    @classmethod
    async def start(cls, settings: GatewaySettings) -> Runtime:
        declared = request_features.load(settings.request_features, settings.models)
        store = open_async_store(settings.store, max_connections=settings.store_connections)
        models = {m: LiveModel(m, settings.endpoint, declared.get(m)) for m in settings.models}
        metrics = Metrics(settings.models)
        runtime = cls(settings, Gateway(settings, store, models, metrics), metrics)
        await runtime.refresh(quiet=False)
        runtime._refresher = asyncio.create_task(runtime._refresh_forever())
        return runtime

    async def refresh(self, quiet: bool = True) -> None:
        """Re-reads every model's metadata; a model Triton cannot describe now keeps what it had."""
        for live in self.gateway.models.values():
            try:
                await live.refresh(PROBE_TIMEOUT_S)
            except (ServerError, asyncio.TimeoutError, TimeoutError, OSError) as e:
                (logger.debug if quiet else logger.warning)("model %s: no metadata from Triton (yet): %s", live.name, e)

    async def _refresh_forever(self) -> None:
        while True:
            await asyncio.sleep(self.settings.version_refresh_s)
            await self.refresh()

    async def readiness(self) -> tuple[bool, dict]:
        """Whether the store answers, and Triton serves every model (metadata read now) with a usable declaration."""
        report: dict = {"store": "ok", "models": {}}
        try:
            await self.gateway.store.ping(PROBE_TIMEOUT_S)
        except StoreError as e:
            report["store"] = str(e)
        for name, live in self.gateway.models.items():
            try:
                await live.refresh(PROBE_TIMEOUT_S)
                report["models"][name] = live.problem or "ready"
            except (ServerError, asyncio.TimeoutError, TimeoutError, OSError) as e:
                report["models"][name] = f"not ready: {e or type(e).__name__}"
        ready = report["store"] == "ok" and all(v == "ready" for v in report["models"].values())
        report["status"] = "ready" if ready else "not ready"
        return ready, report

    async def exposition(self) -> bytes:
        """/metrics: the counters of every worker, with the last batch runs read from the store (cached)."""
        read_at, runs, store_up = self._runs
        if time.monotonic() - read_at > RUNS_CACHE_S:
            runs, store_up = {}, True
            for model in self.settings.models:
                try:
                    runs[model] = await self.gateway.store.last_run(model, PROBE_TIMEOUT_S)
                except StoreError as e:
                    logger.warning("cannot read the last batch run of %s: %s", model, e)
                    store_up = False
                    break
            self._runs = (time.monotonic(), runs, store_up)
        return self.metrics.exposition(runs, store_up)

    async def stop(self) -> None:
        if self._refresher is not None:
            self._refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refresher
        await self.gateway.drain()
        for live in self.gateway.models.values():
            await live.close()
        await self.gateway.store.close()
