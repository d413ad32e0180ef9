"""`tritonkit gateway`: Hybrid serving as an HTTP service.

Applications ask for an entity's prediction by id. The gateway answers from the prediction store when the
batch-precomputed entry is fresh (a hit), and otherwise scores the entity live on Triton with its features
from the online feature store, merged with features that only exist at request time (hour of day, ...),
and writes the answer back. It degrades in steps (store down: live calls; Triton down: the stale entry, or
503 with Retry-After), honours each request's latency budget, and exports the numbers that say whether the
nightly batch is doing its job (hit ratio, age of the last batch run, its rejected rows) on /metrics.

Modules: `settings` (what one gateway serves), `request_features` (features computed per request), `live`
(the Triton path of one model), `core` (the hybrid decisions, independent of HTTP), `metrics`, `app` (the
ASGI application), `openapi` (its documentation), `server` (checks at start, then Granian with N workers).
"""

from tritonkit.clients.gateway.settings import GatewaySettings

__all__ = ["GatewaySettings"]
