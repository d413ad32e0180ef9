"""The gateway's OpenAPI 3.1 description (served at /openapi.json) and Swagger UI (at /docs).

Written by hand beside the hand-routed application; tests/unit/test_gateway.py checks that every route the
application answers is described here and the other way round.
"""

from __future__ import annotations

from tritonkit.clients.gateway.outcome import STATUSES

ROUTES = (
    ("get", "/v1/models/{model}/predictions/{entity_id}"),
    ("post", "/v1/models/{model}/predictions/{entity_id}"),
    ("post", "/v1/models/{model}/predictions:batchGet"),
    ("get", "/healthz"),
    ("get", "/readyz"),
    ("get", "/metrics"),
    ("get", "/openapi.json"),
    ("get", "/docs"),
)

_QUERY = [
    {
        "name": "max_age",
        "in": "query",
        "required": False,
        "description": "Entries older than this are stale: 90s, 30m, 12h, 2d or seconds (default: the gateway's "
        "--max-age, else any unexpired entry is fresh).",
        "schema": {"type": "string"},
    },
    {
        "name": "fallback",
        "in": "query",
        "required": False,
        "description": "On a miss or a stale entry: realtime (score live) or none (answer from the store only).",
        "schema": {"type": "string", "enum": ["realtime", "none"]},
    },
    {
        "name": "timeout_ms",
        "in": "query",
        "required": False,
        "description": "This request's latency budget in ms (default: the gateway's --timeout-ms; at most 60000).",
        "schema": {"type": "number", "exclusiveMinimum": 0, "maximum": 60000},
    },
]
_PATH = [
    {"name": "model", "in": "path", "required": True, "schema": {"type": "string"}},
    {
        "name": "entity_id",
        "in": "path",
        "required": True,
        "description": "1 to 256 characters, no spaces or control characters; percent-encode '/'.",
        "schema": {"type": "string"},
    },
]
_RESULT = {
    "type": "object",
    "properties": {
        "entity_id": {"type": "string"},
        "status": {"type": "string", "enum": list(STATUSES)},
        "source": {"type": ["string", "null"], "enum": ["batch", "realtime", "live", None]},
        "outputs": {"type": ["object", "null"], "description": "Output name -> value (scalar, text or list)."},
        "age_s": {"type": ["number", "null"], "description": "Seconds since the outputs were computed."},
        "model_version": {"type": ["string", "null"]},
        "detail": {"type": "string", "description": "Why the answer is not a plain hit, when it is not."},
        "field": {"type": "string", "description": "The input at fault (status invalid)."},
    },
    "required": ["entity_id", "status", "source", "outputs", "age_s", "model_version"],
}
_ERROR = {
    "type": "object",
    "properties": {"error": {"type": "string"}, "field": {"type": ["string", "null"]}},
    "required": ["error"],
}


def _json(schema: dict, description: str) -> dict:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _prediction_responses() -> dict:
    one = {"allOf": [{"$ref": "#/components/schemas/Result"}, {"properties": {"model": {"type": "string"}}}]}
    error = {"$ref": "#/components/schemas/Error"}
    return {
        "200": _json(one, "The prediction: hit, scored live, or the stale entry when the live call failed."),
        "400": _json(error, "A bad id, parameter or body; `field` names it."),
        "404": _json({"oneOf": [one, error]}, "Unknown model, or no prediction and nothing to score it with."),
        "422": _json(one, "The entity's features do not fit the model; `field` names the input."),
        "502": _json(one, "Triton refused the request."),
        "503": _json(one, "Triton (or the store) unavailable or overloaded, no stale entry: see Retry-After."),
        "504": _json(one, "No live answer within the budget (timeout_ms), no stale entry."),
    }


def spec(models: tuple[str, ...] = ()) -> dict:
    """The OpenAPI document; `models` become the model parameter's enum."""
    path_params = [
        dict(p, schema={"type": "string", "enum": list(models)}) if p["name"] == "model" else p for p in _PATH
    ]
    features = {"type": "object", "additionalProperties": True, "description": "Model input name -> value."}
    ids = {
        "type": "object",
        "properties": {"ids": {"type": "array", "items": {"type": "string"}, "minItems": 1}},
        "required": ["ids"],
        "additionalProperties": False,
    }
    batch = {
        "type": "object",
        "properties": {
            "model": {"type": "string"},
            "statuses": {"type": "object", "additionalProperties": {"type": "integer"}},
            "results": {"type": "array", "items": {"$ref": "#/components/schemas/Result"}},
        },
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "tritonkit gateway",
            "version": "1",
            "description": "Batch-precomputed predictions from the store, with a live Triton fallback.",
        },
        "paths": {
            **_prediction_paths(path_params, features, ids, batch),
            **_service_paths(),
        },
        "components": {"schemas": {"Result": _RESULT, "Error": _ERROR}},
    }


def _prediction_paths(path_params: list, features: dict, ids: dict, batch: dict) -> dict:
    return {
        "/v1/models/{model}/predictions/{entity_id}": {
            "get": {
                "summary": "The entity's prediction: stored when fresh, else live.",
                "parameters": [*path_params, *_QUERY],
                "responses": _prediction_responses(),
            },
            "post": {
                "summary": "Score the entity live with these features merged over its stored ones; written back.",
                "parameters": [*path_params, *_QUERY],
                "requestBody": {"required": True, "content": {"application/json": {"schema": features}}},
                "responses": _prediction_responses(),
            },
        },
        "/v1/models/{model}/predictions:batchGet": {
            "post": {
                "summary": "Many entities: one store round trip, one Triton request for the misses.",
                "parameters": [path_params[0], *_QUERY],
                "requestBody": {"required": True, "content": {"application/json": {"schema": ids}}},
                "responses": {"200": _json(batch, "One result per id, in order.")},
            }
        },
    }


def _service_paths() -> dict:
    text = {"description": "Text", "content": {"text/plain": {"schema": {"type": "string"}}}}
    return {
        "/healthz": {"get": {"summary": "The process answers.", "responses": {"200": {"description": "OK"}}}},
        "/readyz": {
            "get": {
                "summary": "Store and Triton reachable, every model ready.",
                "responses": {"200": {"description": "Ready"}, "503": {"description": "Not ready, and why"}},
            }
        },
        "/metrics": {"get": {"summary": "Prometheus metrics.", "responses": {"200": text}}},
        "/openapi.json": {"get": {"summary": "This document.", "responses": {"200": {"description": "JSON"}}}},
        "/docs": {"get": {"summary": "Swagger UI.", "responses": {"200": {"description": "HTML"}}}},
    }


DOCS_HTML = b"""<!doctype html>
<html><head><meta charset="utf-8"><title>tritonkit gateway</title>
<link rel="stylesheet" href="https://cdn.jsdelivr.net/npm/swagger-ui-dist@5/swagger-ui.css"></head>
<body><div id="ui"></div>
<script src="https://cdn.jsdelivr.net/npm/swagger-ui-dist@5/swagger-ui-bundle.js"></script>
<script>SwaggerUIBundle({url: "/openapi.json", dom_id: "#ui"});</script>
<noscript>The API description is at <a href="/openapi.json">/openapi.json</a>.</noscript>
</body></html>
"""
