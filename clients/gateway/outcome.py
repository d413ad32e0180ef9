"""What the gateway answers for one entity, and the parameters of one request: small values shared by the
hybrid logic (`core`), the HTTP layer (`app`) and the metrics."""

from __future__ import annotations

from dataclasses import dataclass

# Every status an entity's lookup can end with (each is a label value of tritonkit_gateway_lookups_total).
STATUSES = (
    "hit",  # a fresh stored entry (source batch or realtime)
    "miss",  # no entry: scored live (source live), or 404 with fallback none or no features to score with
    "stale",  # an entry too old, or from an older model version: scored live, or itself with fallback none
    "scored",  # a POST: the given features merged over the stored ones, scored live
    "store_unavailable",  # the store failed: scored live when the request carries the features, else 503
    "live_failed",  # Triton unavailable, overloaded, too slow or erring: the stale entry if any, else 5xx
    "invalid",  # the entity's features do not fit the model (422, naming the input)
)


@dataclass(frozen=True)
class Params:
    """How one request wants its lookups done."""

    max_age_s: float | None
    fallback: str
    timeout_s: float


@dataclass(frozen=True)
class Outcome:
    """One entity's answer. `http_status` is what a single-entity request returns; `retry_after_s` goes into
    a Retry-After header."""

    entity_id: str
    status: str
    http_status: int = 200
    outputs: dict | None = None
    source: str | None = None
    age_s: float | None = None
    model_version: str | None = None
    detail: str | None = None
    field: str | None = None
    retry_after_s: int | None = None

    def to_dict(self) -> dict:
        body = {
            "entity_id": self.entity_id,
            "status": self.status,
            "source": self.source,
            "outputs": self.outputs,
            "age_s": None if self.age_s is None else round(self.age_s, 3),
            "model_version": self.model_version,
        }
        if self.detail is not None:
            body["detail"] = self.detail
        if self.field is not None:
            body["field"] = self.field
        return body
