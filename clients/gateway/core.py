"""The hybrid decisions, independent of HTTP: store first, live model second, each step within the budget.

For a list of entity ids (one for a GET, many for a batchGet) a request costs one store round trip (entries
and features together) and, for the entities that need it, one Triton request; write-backs of live
answers go out after the answer, in one transaction. Every entity ends with one status (`outcome.STATUSES`),
counted per model.
"""

from __future__ import annotations

import asyncio
import logging
import time

from tritonkit.clients.gateway.live import LiveAnswer, LiveModel
from tritonkit.clients.gateway.metrics import Metrics
from tritonkit.clients.gateway.outcome import Outcome, Params
from tritonkit.clients.gateway.settings import GatewaySettings
from tritonkit.clients.store import Entry, FeatureRow, Found, StoreError, newer_version
from tritonkit.clients.store_async import AsyncStore
from tritonkit.errors import DeadlineExceededError, OverloadedError, ServerError, ServerUnavailableError

logger = logging.getLogger(__name__)

RETRY_AFTER_S = 1


class Gateway:
    """One worker's gateway: the store, one LiveModel per model, the metrics."""

    def __init__(self, settings: GatewaySettings, store: AsyncStore, models: dict[str, LiveModel], metrics: Metrics):
        self.settings, self.store, self.models, self.metrics = settings, store, models, metrics
        self._writes: set[asyncio.Task] = set()

    def params(self, max_age_s: float | None = None, fallback: str | None = None, timeout_s: float | None = None):
        s = self.settings
        return Params(
            s.max_age_s if max_age_s is None else max_age_s,
            fallback or s.fallback,
            s.endpoint.timeout_s if timeout_s is None else timeout_s,
        )

    async def lookup(self, model: str, ids: list[str], params: Params, given: dict | None = None) -> list[Outcome]:
        """The answers for `ids`; with `given` (a POST: one id), its features are merged and it is scored live."""
        deadline = time.monotonic() + params.timeout_s
        now = time.time()
        live = self.models[model]
        found, store_error = await self._read(model, ids, params.fallback == "realtime" or given is not None, deadline)
        outcomes: list[Outcome | None] = [None] * len(ids)
        pending: list[tuple[int, Found, str, str | None]] = []
        for i, item in enumerate(found):
            if store_error is not None:
                pending.append((i, item, "store_unavailable", store_error))
                continue
            if given is not None:
                pending.append((i, item, "scored", None))
                continue
            reason = None if item.entry is None else self._stale_reason(item.entry, now, params.max_age_s, live)
            if item.entry is not None and reason is None:
                entry = item.entry
                outcomes[i] = Outcome(
                    item.entity_id, "hit", 200, entry.outputs, entry.source, entry.age_s(now), entry.model_version
                )
            else:
                pending.append((i, item, "miss" if item.entry is None else "stale", reason))
        if pending:
            if params.fallback == "none" and given is None:
                for i, item, status, reason in pending:
                    outcomes[i] = _without_live(item, status, reason, now)
            else:
                budget_ms = params.timeout_s * 1000
                for i, outcome in await self._live(live, pending, given, deadline, now, store_error is None, budget_ms):
                    outcomes[i] = outcome
        for outcome in outcomes:
            self.metrics.lookup(model, outcome.status)
        return outcomes

    async def _read(
        self, model: str, ids: list[str], features: bool, deadline: float
    ) -> tuple[list[Found], str | None]:
        start = time.perf_counter()
        try:
            found = await self.store.lookup(model, ids, features, deadline - time.monotonic())
        except StoreError as e:
            self.metrics.store_error("read")
            logger.warning("store read failed, going live: %s", e)
            return [Found(entity) for entity in ids], str(e)
        self.metrics.store_call("read", time.perf_counter() - start)
        return found, None

    def _stale_reason(self, entry: Entry, now: float, max_age_s: float | None, live: LiveModel) -> str | None:
        age = entry.age_s(now)
        if max_age_s is not None and age > max_age_s:
            return f"the stored entry is {age:.1f} s old; max_age is {max_age_s:g} s"
        if self.settings.stale_on_version and newer_version(live.served_version, entry.model_version):
            return (
                f"the stored entry comes from model version {entry.model_version}; Triton serves {live.served_version}"
            )
        return None

    async def _live(
        self,
        live: LiveModel,
        pending: list,
        given: dict | None,
        deadline: float,
        now: float,
        store_up: bool,
        budget_ms: float,
    ) -> list[tuple[int, Outcome]]:
        """Scores the pending entities in one request; their outcomes, with write-backs scheduled."""
        try:
            await live.ensure(max(0.001, deadline - time.monotonic()))
        except ServerError as e:
            return [(i, self._failed(live.name, item, status, reason, e, now)) for i, item, status, reason in pending]
        records, scorable, done = [], [], []
        for i, item, status, reason in pending:
            stored = item.features.values if item.features is not None else None
            record = live.record(stored, given, now)
            missing = [t.name for t in live.meta.inputs if t.name not in record]
            if missing and stored is None and given is None:
                done.append((i, _no_features(item, status, reason, missing, now)))
                continue
            records.append(record)
            scorable.append((i, item, status, reason))
        if not records:
            return done
        start = time.perf_counter()
        try:
            answers = await live.score(records, deadline - time.monotonic())
        except ServerError as e:
            if isinstance(e, DeadlineExceededError):  # say the request's budget, not what was left of it
                e = DeadlineExceededError(live.name, budget_ms, budget_ms - (deadline - time.monotonic()) * 1000)
            return done + [(i, self._failed(live.name, item, st, rs, e, now)) for i, item, st, rs in scorable]
        self.metrics.live_call(live.name, time.perf_counter() - start)
        results = [(i, self._answered(live.name, item, st, rs, a)) for (i, item, st, rs), a in zip(scorable, answers)]
        if self.settings.write_back and store_up and not await self._write_back(live, scorable, answers, given):
            results = [(i, _note(o, "the store did not take the write-back")) for i, o in results]
        return done + results

    def _answered(self, model: str, item: Found, status: str, reason: str | None, answer: LiveAnswer) -> Outcome:
        if answer.error is None:
            if item.features is not None:
                self.metrics.feature_age(model, item.features.age_s(time.time()))
            return Outcome(item.entity_id, status, 200, answer.outputs, "live", 0.0, answer.model_version, reason)
        error = answer.error
        if isinstance(error, ServerError):
            self.metrics.live_error(model, "invalid_row")
            return Outcome(item.entity_id, "live_failed", 502, detail=f"the model refused this entity: {error}")
        field = getattr(error, "field", None)
        return Outcome(item.entity_id, "invalid", 422, detail=str(error), field=field)

    def _failed(self, model: str, item: Found, status: str, reason: str | None, error: ServerError, now: float):
        """The outcome when the live call failed: the stale entry when there is one, else 503/504/502."""
        kind, code = _failure_kind(error)
        self.metrics.live_error(model, kind)
        why = f"live call failed: {error}" + (f" ({reason})" if reason else "")
        entry = item.entry
        if entry is not None:
            outputs, source, age = entry.outputs, entry.source, entry.age_s(now)
            return Outcome(item.entity_id, "live_failed", 200, outputs, source, age, entry.model_version, why)
        retry = RETRY_AFTER_S if code == 503 else None
        return Outcome(item.entity_id, "live_failed", code, detail=why, retry_after_s=retry)

    async def _write_back(self, live: LiveModel, scorable: list, answers: list[LiveAnswer], given: dict | None) -> bool:
        """Live answers (source realtime) and a POST's features, in one transaction: awaited for a POST (False
        when it failed), in the background for lookups (the answer does not wait for it)."""
        now = time.time()
        entries = [
            Entry(item.entity_id, live.name, answer.model_version, answer.outputs, now, "realtime")
            for (_, item, _, _), answer in zip(scorable, answers)
            if answer.error is None
        ]
        features = []
        if given is not None and entries:
            computed = set(live.request_features.features) if live.request_features else set()
            kept = {k: v for k, v in given.items() if k not in computed}
            features = [FeatureRow(scorable[0][1].entity_id, live.name, kept, now)] if kept else []
        if not entries:
            return True
        task = asyncio.create_task(self._write(entries, features))
        if given is not None:
            return await asyncio.shield(task)
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)
        return True

    async def _write(self, entries: list[Entry], features: list[FeatureRow]) -> bool:
        start = time.perf_counter()
        try:
            await self.store.write(entries, features, self.settings.write_timeout_s)
        except StoreError as e:
            self.metrics.store_error("write")
            logger.warning("write-back of %d live answer(s) failed: %s", len(entries), e)
            return False
        self.metrics.store_call("write", time.perf_counter() - start)
        return True

    async def drain(self, timeout_s: float = 5.0) -> None:
        """Waits for the write-backs still in flight (at shutdown)."""
        if self._writes:
            await asyncio.wait(set(self._writes), timeout=timeout_s)


def _note(outcome: Outcome, note: str) -> Outcome:
    from dataclasses import replace

    return replace(outcome, detail=f"{outcome.detail}; {note}" if outcome.detail else note)


def _failure_kind(error: ServerError) -> tuple[str, int]:
    if isinstance(error, DeadlineExceededError):
        return "deadline", 504
    if isinstance(error, OverloadedError):
        return "overloaded", 503
    if isinstance(error, ServerUnavailableError):
        return "unavailable", 503
    return "model_error", 502


def _without_live(item: Found, status: str, reason: str | None, now: float) -> Outcome:
    """fallback=none: the stale entry as it is, or nothing (404; 503 when the store could not say)."""
    entry = item.entry
    if status == "store_unavailable":
        return Outcome(item.entity_id, status, 503, detail=reason, retry_after_s=RETRY_AFTER_S)
    if entry is None:
        return Outcome(item.entity_id, status, 404, detail="no stored prediction (fallback none: no live call)")
    return Outcome(
        item.entity_id, status, 200, entry.outputs, entry.source, entry.age_s(now), entry.model_version, reason
    )


def _no_features(item: Found, status: str, reason: str | None, missing: list[str], now: float) -> Outcome:
    """Nothing to score with: no stored features and none given."""
    entry = item.entry
    if status == "store_unavailable":
        why = f"{reason}; and the request carries no features to score live with"
        return Outcome(item.entity_id, status, 503, detail=why, retry_after_s=RETRY_AFTER_S)
    if entry is not None:  # stale, and no features to rescore it: the stale entry, said so
        why = f"{reason}; no stored features to score it live (missing {', '.join(missing)})"
        return Outcome(
            item.entity_id, status, 200, entry.outputs, entry.source, entry.age_s(now), entry.model_version, why
        )
    why = f"no stored prediction and no stored features for entity `{item.entity_id}` (missing {', '.join(missing)})"
    return Outcome(item.entity_id, status, 404, detail=why, field=missing[0])
