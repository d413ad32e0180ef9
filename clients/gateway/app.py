"""The gateway's HTTP interface: a plain ASGI application, routed by hand, served by Granian.

Chosen by measurement (see README, "Hybrid serving"): at 16 concurrent clients on the store-hit path,
a plain ASGI callable spent the least CPU per request of the candidates measured (FastAPI, Starlette,
this), on Granian less than on uvicorn; the JSON is orjson's. The routes:

    GET  /v1/models/{model}/predictions/{entity_id}?max_age=12h&fallback=realtime|none&timeout_ms=200
    POST /v1/models/{model}/predictions/{entity_id}      body: {"input": value, ...}, scored live
    POST /v1/models/{model}/predictions:batchGet         body: {"ids": ["a", "b", ...]}
    GET  /healthz, /readyz, /metrics, /docs (OpenAPI at /openapi.json)

Bad requests get a 4xx whose JSON names the field (`{"error": ..., "field": ...}`).
"""

from __future__ import annotations

import logging
import re
from urllib.parse import parse_qsl, unquote

import orjson

from tritonkit.clients.gateway import openapi
from tritonkit.clients.gateway.outcome import Outcome
from tritonkit.clients.gateway.runtime import Runtime
from tritonkit.clients.gateway.settings import FALLBACKS, GatewaySettings
from tritonkit.clients.store import parse_duration
from tritonkit.errors import TritonKitError, UsageError

logger = logging.getLogger(__name__)

PREFIX = "/v1/models/"
MAX_BODY_BYTES = 1 << 20
MAX_TIMEOUT_MS = 60_000.0
QUERY_KEYS = ("max_age", "fallback", "timeout_ms")
ENTITY_ID = re.compile(r"^[^\s\x00-\x1f\x7f]{1,256}$")
JSON = [(b"content-type", b"application/json")]
ROUTE_PATHS = ("/healthz", "/readyz", "/metrics", "/openapi.json", "/docs")


class HttpError(Exception):
    """A request the gateway refuses: its HTTP status, the message, and the field at fault."""

    def __init__(self, status: int, message: str, field: str | None = None, headers: list | None = None):
        super().__init__(message)
        self.status, self.message, self.field, self.headers = status, message, field, headers or []


class GatewayApp:
    """The ASGI application; `settings` None reads them from the environment `serve` prepared."""

    def __init__(self, settings: GatewaySettings | None = None):
        self.settings = settings
        self.runtime: Runtime | None = None

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            await self._http(scope, receive, send)
        elif scope["type"] == "lifespan":
            await self._lifespan(receive, send)

    async def _lifespan(self, receive, send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    self.runtime = await Runtime.start(self.settings or GatewaySettings.from_environment())
                except Exception as e:  # the server must hear why start-up failed
                    logger.exception("gateway start-up failed")
                    await send({"type": "lifespan.startup.failed", "message": str(e)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self.runtime is not None:
                    await self.runtime.stop()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _http(self, scope, receive, send) -> None:
        try:
            status, body, headers = await self._route(scope, receive)
        except HttpError as e:
            status, body, headers = e.status, orjson.dumps({"error": e.message, "field": e.field}), e.headers
        except TritonKitError as e:
            status, body, headers = 500, orjson.dumps({"error": str(e), "field": None}), []
        except Exception:  # one request's bug must not take the worker down
            logger.exception("request %s %s failed", scope.get("method"), scope.get("path"))
            status, body, headers = 500, orjson.dumps({"error": "internal error (see the gateway's log)"}), []
        if self.runtime is not None:
            self.runtime.metrics.request(route_of(scope["path"], scope["method"]), status)
        await respond(send, status, body, headers)

    async def _route(self, scope, receive) -> tuple[int, bytes, list]:
        path, method = scope["path"], scope["method"]
        if path.startswith(PREFIX):
            return await self._predictions(scope, receive, method)
        if self.runtime is None:
            raise HttpError(503, "the gateway is starting", headers=[(b"retry-after", b"1")])
        if method != "GET":
            raise HttpError(405, f"{method} {path}: only GET is allowed here", field="method")
        if path == "/healthz":
            return 200, b'{"status":"ok"}', []
        if path == "/readyz":
            ready, report = await self.runtime.readiness()
            return 200 if ready else 503, orjson.dumps(report), []
        if path == "/metrics":
            body = await self.runtime.exposition()
            return 200, body, [(b"content-type", b"text/plain; version=0.0.4; charset=utf-8")]
        if path == "/openapi.json":
            return 200, orjson.dumps(openapi.spec(self.runtime.settings.models)), []
        if path == "/docs":
            return 200, openapi.DOCS_HTML, [(b"content-type", b"text/html; charset=utf-8")]
        raise HttpError(404, f"no route {path}; see /docs", field="path")

    async def _predictions(self, scope, receive, method: str) -> tuple[int, bytes, list]:
        runtime = self.runtime
        if runtime is None:
            raise HttpError(503, "the gateway is starting", headers=[(b"retry-after", b"1")])
        model, entity_id = split_path(scope)
        if model not in runtime.gateway.models:
            served = ", ".join(runtime.settings.models)
            raise HttpError(404, f"model `{model}` is not served by this gateway; it serves: {served}", field="model")
        params = self._params(scope)
        if entity_id == ":batchGet":
            if method != "POST":
                raise HttpError(405, 'predictions:batchGet takes POST with a JSON body {"ids": [...]}', field="method")
            ids = batch_ids(await read_json(receive), runtime.settings.max_batch_ids)
            outcomes = await runtime.gateway.lookup(model, ids, params)
            return 200, batch_body(model, outcomes), []
        check_entity_id(entity_id, "entity_id")
        if method == "GET":
            (outcome,) = await runtime.gateway.lookup(model, [entity_id], params)
            return single(model, outcome)
        if method == "POST":
            given = await read_json(receive)
            if not isinstance(given, dict):
                raise HttpError(400, "the body is a JSON object of feature (input) names to values", field="body")
            (outcome,) = await runtime.gateway.lookup(model, [entity_id], params, given=given)
            return single(model, outcome)
        raise HttpError(405, f"{method} on a prediction: use GET, or POST with features", field="method")

    def _params(self, scope):
        query = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True))
        unknown = sorted(set(query) - set(QUERY_KEYS))
        if unknown:
            raise HttpError(
                400, f"unknown query parameter `{unknown[0]}`; valid ones: {', '.join(QUERY_KEYS)}", unknown[0]
            )
        max_age_s = timeout_s = None
        if "max_age" in query:
            max_age_s = duration(query["max_age"], "max_age")
        fallback = query.get("fallback")
        if fallback is not None and fallback not in FALLBACKS:
            raise HttpError(400, f"fallback is {fallback!r}; expected one of {', '.join(FALLBACKS)}", "fallback")
        if "timeout_ms" in query:
            try:
                timeout_ms = float(query["timeout_ms"])
            except ValueError:
                timeout_ms = float("nan")
            if not 0 < timeout_ms <= MAX_TIMEOUT_MS:
                raise HttpError(
                    400,
                    f"timeout_ms is {query['timeout_ms']!r}; expected milliseconds above 0, at most {MAX_TIMEOUT_MS:g}",
                    "timeout_ms",
                )
            timeout_s = timeout_ms / 1000
        return self.runtime.gateway.params(max_age_s, fallback, timeout_s)


def route_of(path: str, method: str) -> str:
    """The route label of a request in tritonkit_gateway_http_requests_total (bounded: no ids, no models)."""
    if path.startswith(PREFIX):
        if path.endswith(":batchGet"):
            return "predictions.batchGet"
        return "predictions." + (method.lower() if method in ("GET", "POST") else "other")
    return path[1:] if path in ROUTE_PATHS else "other"


def split_path(scope) -> tuple[str, str]:
    """(model, entity id or ":batchGet") from /v1/models/{model}/predictions/{id} or .../predictions:batchGet;
    segments are percent-decoded one by one, so an id may hold an encoded '/'."""
    raw = scope.get("raw_path") or scope["path"].encode()
    parts = raw.split(b"?", 1)[0].split(b"/")
    if len(parts) == 6 and parts[4] == b"predictions":
        return unquote(parts[3].decode("latin-1")), unquote(parts[5].decode("latin-1"))
    if len(parts) == 5 and parts[4] == b"predictions:batchGet":
        return unquote(parts[3].decode("latin-1")), ":batchGet"
    raise HttpError(404, f"no route {scope['path']}; see /docs", field="path")


def check_entity_id(entity_id: str, field: str) -> str:
    if not isinstance(entity_id, str) or not ENTITY_ID.match(entity_id):
        raise HttpError(
            400,
            f"{field} {str(entity_id)[:80]!r} is not a valid entity id: 1 to 256 characters, "
            "no spaces or control characters",
            field,
        )
    return entity_id


def duration(text: str, field: str) -> float:
    """Seconds from `90s`, `30m`, `12h`, `2d` or a bare number of seconds."""
    try:
        seconds = float(text)
    except ValueError:
        try:
            return parse_duration(text, field)
        except UsageError as e:
            raise HttpError(400, str(e), field) from None
    if not seconds > 0:
        raise HttpError(400, f"{field} is {text!r}; expected a positive duration (90s, 30m, 12h, 2d or seconds)", field)
    return seconds


async def read_json(receive):
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise HttpError(400, "the client went away before sending the whole body", field="body")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise HttpError(413, f"the body is larger than {MAX_BODY_BYTES} bytes", field="body")
        chunks.append(chunk)
        if not message.get("more_body"):
            break
    try:
        return orjson.loads(b"".join(chunks))
    except orjson.JSONDecodeError as e:
        raise HttpError(400, f"the body is not valid JSON: {e}", field="body") from None


def batch_ids(body, limit: int) -> list[str]:
    ids = body.get("ids") if isinstance(body, dict) else None
    if not isinstance(ids, list) or not ids:
        raise HttpError(400, 'the body must be {"ids": [...]} with at least one entity id', field="ids")
    unknown = sorted(set(body) - {"ids"})
    if unknown:
        raise HttpError(400, f"unknown key `{unknown[0]}` in the body; it takes: ids", field=unknown[0])
    if len(ids) > limit:
        raise HttpError(400, f"ids holds {len(ids)} entity ids; at most {limit} per batchGet", field="ids")
    checked = []
    for i, entity in enumerate(ids):
        if isinstance(entity, int) and not isinstance(entity, bool):
            entity = str(entity)
        checked.append(check_entity_id(entity, f"ids[{i}]"))
    return checked


def single(model: str, outcome: Outcome) -> tuple[int, bytes, list]:
    headers = []
    if outcome.retry_after_s is not None:
        headers.append((b"retry-after", str(outcome.retry_after_s).encode()))
    return outcome.http_status, orjson.dumps({"model": model, **outcome.to_dict()}), headers


def batch_body(model: str, outcomes: list[Outcome]) -> bytes:
    counts: dict[str, int] = {}
    for outcome in outcomes:
        counts[outcome.status] = counts.get(outcome.status, 0) + 1
    return orjson.dumps({"model": model, "statuses": counts, "results": [o.to_dict() for o in outcomes]})


async def respond(send, status: int, body: bytes, headers: list) -> None:
    names = {name for name, _ in headers}
    base = [] if b"content-type" in names else JSON
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [*base, *headers, (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


def create_app() -> GatewayApp:
    """Granian's factory: one application per worker process, its settings from the environment."""
    return GatewayApp()
