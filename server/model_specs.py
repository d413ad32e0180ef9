"""What each model accepts, as the guard learns it from Triton: model configs fetched and cached per model/version.

The config comes from Triton's own HTTP endpoint (`GET /v2/models/M[/versions/V]/config`, with the admin
header when the guard has the key); when that API is closed to the guard it falls back to the model's
metadata (no max_batch_size there, so only the byte budget bounds the batch). Entries live `ttl_s`
seconds and are dropped at once when a load or unload of the model passes through the guard; an
unknown model is remembered for a second, so a flood of made-up names costs Triton one lookup each.
The model name is sent exactly as it appeared in the inference path, so Triton resolves both alike.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time

from tritonkit.server.infer_check import ModelSpec, Rejection

logger = logging.getLogger(__name__)

_NEGATIVE_TTL_S = 1.0


class UpstreamUnavailable(Exception):
    """Triton's HTTP endpoint could not be reached or did not answer."""


class SpecCache:
    """Model specs by (model, version), fetched from Triton on a miss; one fetch at a time per key."""

    def __init__(
        self,
        upstream: tuple[str, int],
        headers: dict[str, str] | None = None,
        ttl_s: float = 10.0,
        max_entries: int = 1024,
        timeout_s: float = 10.0,
    ):
        self.upstream, self.headers, self.ttl_s = upstream, dict(headers or {}), ttl_s
        self.max_entries, self.timeout_s = max_entries, timeout_s
        self._entries: dict[tuple[str, str], tuple[float, ModelSpec | Rejection]] = {}
        self._pending: dict[tuple[str, str], asyncio.Future] = {}
        self.fetches = 0  # config requests sent to Triton (for tests and diagnostics)

    async def get(self, model: str, version: str | None) -> ModelSpec:
        """The spec, or raises Rejection (unknown model or version) or UpstreamUnavailable."""
        key = (model, version or "")
        entry = self._entries.get(key)
        if entry is not None and time.monotonic() < entry[0]:
            return _unwrap(entry[1])
        pending = self._pending.get(key)
        if pending is not None:
            return _unwrap(await asyncio.shield(pending))
        pending = asyncio.get_running_loop().create_future()
        self._pending[key] = pending
        try:
            found = await self._fetch(model, version)
        except asyncio.CancelledError:
            _fail(pending, UpstreamUnavailable("the config fetch was cancelled"))
            raise
        except Exception as e:  # noqa: BLE001 - a config Triton should not send: handed to the waiters too
            failure = e if isinstance(e, UpstreamUnavailable) else UpstreamUnavailable(f"{type(e).__name__}: {e}")
            _fail(pending, failure)
            raise failure from None
        finally:
            self._pending.pop(key, None)
        ttl = self.ttl_s if isinstance(found, ModelSpec) else _NEGATIVE_TTL_S
        if len(self._entries) >= self.max_entries:
            self._entries.clear()
        self._entries[key] = (time.monotonic() + ttl, found)
        pending.set_result(found)
        return _unwrap(found)

    def clear(self) -> None:
        """Forget every model (Triton was restarted: its models were loaded again)."""
        self._entries.clear()

    def invalidate(self, model: str) -> None:
        """Forget every version of `model` (it is being loaded, reloaded or unloaded)."""
        for key in [k for k in self._entries if k[0] == model]:
            del self._entries[key]

    async def _fetch(self, model: str, version: str | None) -> ModelSpec | Rejection:
        base = f"/v2/models/{model}" + (f"/versions/{version}" if version else "")
        self.fetches += 1
        status, body = await self._get(base + "/config")
        if status == 200:
            return ModelSpec.from_config(_json(body))
        if status == 403:  # model-config restricted and the guard has no key: metadata is enough
            status, body = await self._get(base)
            if status == 200:
                return ModelSpec.from_metadata(_json(body))
        message = _error_text(body) or f"Triton answered {status} for model `{model}`'s config"
        if status == 403:
            message = f"the guard cannot read model `{model}`'s config or metadata (restricted; give it the admin key)"
            return Rejection("unknown_model", message, status=503)
        return Rejection("unknown_model", message, status=status if 400 <= status < 500 else 502)

    async def _get(self, path: str) -> tuple[int, bytes]:
        try:
            return await asyncio.wait_for(self._request(path), self.timeout_s)
        except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, ValueError) as e:
            raise UpstreamUnavailable(f"{type(e).__name__}: {e}") from None

    async def _request(self, path: str) -> tuple[int, bytes]:
        host, port = self.upstream
        reader, writer = await asyncio.open_connection(host, port)
        try:
            lines = [f"GET {path} HTTP/1.1", f"Host: {host}:{port}", "Connection: close"]
            lines += [f"{k}: {v}" for k, v in self.headers.items()]
            writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
            head = await reader.readuntil(b"\r\n\r\n")
            status_line, *header_lines = head[:-4].decode("latin-1").split("\r\n")
            status = int(status_line.split(" ")[1])
            length = next(
                (
                    int(v)
                    for n, _, v in (h.partition(":") for h in header_lines)
                    if n.strip().lower() == "content-length"
                ),
                None,
            )
            body = await reader.readexactly(length) if length is not None else await reader.read()
            return status, body
        finally:
            writer.close()


def _fail(pending: asyncio.Future, failure: Exception) -> None:
    pending.set_exception(failure)
    pending.exception()  # marked as retrieved: waiters, if any, raise it themselves


def _unwrap(found: ModelSpec | Rejection) -> ModelSpec:
    if isinstance(found, Rejection):
        raise Rejection(found.reason, found.message, found.status)
    return found


def _json(body: bytes) -> dict:
    try:
        return json.loads(body)
    except ValueError as e:
        raise UpstreamUnavailable(f"Triton's config answer is not JSON: {e}") from None


def _error_text(body: bytes) -> str:
    try:
        error = json.loads(body).get("error")
    except (ValueError, AttributeError):
        return body.decode("utf-8", "replace")[:300]
    return str(error)[:300] if error else ""
