"""A Locust user for `tritonkit gateway`: predictions by entity id, store hits and misses mixed by ratio.

    TRITONKIT_HIT_RATIO=0.9 locust -f benchmarks/gateway_locust.py --host http://127.0.0.1:8080 \\
        --headless -u 16 -r 16 -t 30s --csv out/gateway

Environment:
    TRITONKIT_GATEWAY_MODEL  model to ask for (default churn)
    TRITONKIT_HIT_RATIO      share of requests for entities that have a stored prediction (default 0.9)
    TRITONKIT_HIT_IDS        those entities: a file with one id per line, or PREFIX:COUNT for PREFIX0 ..
                             PREFIX<COUNT-1> (default h:5000, the ids `tritonkit bench --scenarios hybrid` seeds)
    TRITONKIT_MISS_IDS       entities with features but no prediction, the same way (default m:5000)
    TRITONKIT_QUERY          query string added to every request, e.g. max_age=12h&timeout_ms=200

The mix is exact, not random: each user sends hits and misses spread evenly at the ratio (run the gateway
with --no-write-back, or a miss becomes a hit the second time). Each request is reported by Locust's HTTP
client under the name "<model> hit" or "<model> miss" (what the mix intended); a non-200 answer is a failure
that names the gateway's status and detail. The gateway's own /metrics says what actually happened
(tritonkit_gateway_lookups_total by status, tritonkit_gateway_hit_ratio). Locust is closed loop and costs
more CPU per request than a store hit costs the gateway: on a small machine it measures itself (see
benchmarks/http_load.py, which the bench uses).
"""

from __future__ import annotations

import itertools
import os
from pathlib import Path

from locust import FastHttpUser, constant, task


def entity_ids(spec: str) -> list[str]:
    """Ids from a file (one per line) or PREFIX:COUNT."""
    if Path(spec).is_file():
        return [line.strip() for line in Path(spec).read_text().splitlines() if line.strip()]
    prefix, _, count = spec.rpartition(":")
    if not count.isdigit() or int(count) < 1:
        raise ValueError(f"entity ids {spec!r}: expected a file of ids or PREFIX:COUNT, like h:5000")
    return [f"{prefix}{i}" for i in range(int(count))]


class GatewayUser(FastHttpUser):
    """GETs /v1/models/{model}/predictions/{id}, hits and misses at TRITONKIT_HIT_RATIO."""

    wait_time = constant(0)
    model = os.environ.get("TRITONKIT_GATEWAY_MODEL", "churn")
    ratio = float(os.environ.get("TRITONKIT_HIT_RATIO", "0.9"))
    query = os.environ.get("TRITONKIT_QUERY", "")
    _ids: dict[str, list[str]] = {}
    _users = itertools.count()

    def __init__(self, environment):
        super().__init__(environment)
        if not 0.0 <= self.ratio <= 1.0:
            raise ValueError(f"TRITONKIT_HIT_RATIO is {self.ratio}; expected a fraction from 0 to 1")
        if not GatewayUser._ids:
            GatewayUser._ids = {
                "hit": entity_ids(os.environ.get("TRITONKIT_HIT_IDS", "h:5000")),
                "miss": entity_ids(os.environ.get("TRITONKIT_MISS_IDS", "m:5000")),
            }
        offset = next(GatewayUser._users) * 7919  # users start at different ids
        self._next = {
            kind: itertools.cycle(ids[offset % len(ids) :] + ids[: offset % len(ids)])
            for kind, ids in self._ids.items()
        }
        self._sent = 0

    def kind(self) -> str:
        """hit or miss for the next request: hits spread evenly at the ratio."""
        n = self._sent
        self._sent += 1
        return "hit" if int((n + 1) * self.ratio) > int(n * self.ratio) else "miss"

    @task
    def lookup(self) -> None:
        kind = self.kind()
        path = f"/v1/models/{self.model}/predictions/{next(self._next[kind])}" + (
            f"?{self.query}" if self.query else ""
        )
        with self.client.get(path, name=f"{self.model} {kind}", catch_response=True) as response:
            if response.status_code != 200:
                try:
                    body = response.json()
                    why = f"{body.get('status')}: {body.get('detail') or body.get('error')}"
                except ValueError:
                    why = response.text[:200]
                response.failure(f"HTTP {response.status_code} {why}")
