"""The guard: a validating HTTP/1.1 front for Triton's HTTP endpoint, so that no request can crash Triton.

Triton 2.51 crashes on one ~200-byte unauthenticated HTTP request whose JSON shape is huge (see
server/infer_check.py); its gRPC endpoint refuses the same shapes. So Triton's HTTP binds loopback on an
internal port and the guard takes the public one (optionally terminating TLS). Every inference request
(`POST /v2/models/M[/versions/V]/infer`) is read whole within the body limit, its JSON (or the binary
extension's JSON part) parsed strictly, and each input checked against the model's config (fetched from
Triton, cached) before a byte reaches Triton; a bad one gets HTTP 400 with Triton's error shape
`{"error": "..."}` naming the input, the value and what was expected. Everything else (health,
metadata, config, statistics, repository and the restricted APIs, which Triton still guards with the
admin key) is forwarded as is. One upstream connection per client connection, requests in order, so
keep-alive and pipelining behave as with Triton itself.
"""

from __future__ import annotations

import asyncio
import logging
import re
import ssl

from tritonkit.server.front import LoopServer, close_writer, within
from tritonkit.server.http11 import (
    HttpError,
    Request,
    UpstreamError,
    error_response,
    read_body,
    read_request_head,
    relay_response,
    request_bytes,
)
from tritonkit.server.infer_check import GuardLimits, Rejection, check_request, split_body
from tritonkit.server.kit_metrics import KitMetrics
from tritonkit.server.model_specs import SpecCache, UpstreamUnavailable

logger = logging.getLogger(__name__)

# Triton's own routes (http_server.cc), matched on the path without its query, exactly as Triton does.
_INFER = re.compile(r"/v2/models/([^/]+)(?:/versions/([0-9]+))?/infer")
_REPOSITORY_CHANGE = re.compile(r"/v2/repository/models/([^/]+)/(?:load|unload)")
_ENDED = (ConnectionError, ssl.SSLError, OSError, asyncio.IncompleteReadError)


class Guard(LoopServer):
    """Listens on (host, port) and forwards checked HTTP requests to Triton's HTTP endpoint at `upstream`.

    Args:
        upstream: (host, port) of Triton's own HTTP endpoint, normally on loopback.
        limits: sizes and timeouts (`GuardLimits`).
        context: a server-side TLS context to terminate HTTPS, or None.
        metrics: where rejections and forwards are counted (served by `kit_metrics.MetricsServer`).
        admin_headers: sent with the guard's own config requests, for when model-config is restricted.
    """

    def __init__(
        self,
        host: str,
        port: int,
        upstream: tuple[str, int],
        limits: GuardLimits | None = None,
        context: ssl.SSLContext | None = None,
        metrics: KitMetrics | None = None,
        admin_headers: dict[str, str] | None = None,
    ):
        self.limits = limits or GuardLimits()
        super().__init__(
            host, port, context, max_connections=self.limits.max_connections, stream_limit=self.limits.max_header_bytes
        )
        self.upstream = upstream
        self.metrics = metrics or KitMetrics()
        self.specs = SpecCache(upstream, admin_headers, self.limits.spec_ttl_s)
        self._buffered = 0  # bytes of request bodies reserved by requests in progress (one event loop: no lock)

    @property
    def url(self) -> str:
        return f"{self.host}:{self.port}"

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream = _Upstream(self)
        try:
            while (request := await self._next_request(reader, writer)) is not None:
                if not await self._serve(request, reader, writer, upstream):
                    break
        except _ENDED as e:
            logger.debug("guard: connection ended: %s", e)
        finally:
            await upstream.close()

    async def _next_request(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> Request | None:
        try:
            first = await within(reader.read(1), self.limits.idle_timeout_s)
        except asyncio.TimeoutError:
            return None  # an idle keep-alive connection
        if not first:
            return None
        try:
            return await within(read_request_head(reader, first), self.limits.read_timeout_s)
        except asyncio.TimeoutError:
            await self._refuse(writer, HttpError(408, "timeout", "the request's headers did not arrive in time"))
        except HttpError as e:
            await self._refuse(writer, e)
        return None

    async def _serve(self, request: Request, reader, writer: asyncio.StreamWriter, upstream: _Upstream) -> bool:
        """Answers one request within the guard's budget of buffered bodies; returns whether the connection goes on."""
        reserved = _reservation(request, self.limits.max_body_bytes)
        if self._buffered + reserved > self.limits.max_buffered_bytes:
            message = f"the guard already holds {self._buffered} bytes of request bodies; retry later"
            await self._refuse(writer, HttpError(503, "busy", message))
            return False
        self._buffered += reserved
        try:
            return await self._serve_within_budget(request, reader, writer, upstream)
        finally:
            self._buffered -= reserved

    async def _serve_within_budget(self, request: Request, reader, writer, upstream: _Upstream) -> bool:
        infer = _INFER.fullmatch(request.path)
        try:
            if infer and request.method != "POST":
                raise HttpError(405, "http", f"{request.method} {request.path}: inference takes POST")
            await within(read_body(reader, writer, request, self.limits), self.limits.read_timeout_s)
        except asyncio.TimeoutError:
            await self._refuse(writer, HttpError(408, "timeout", "the request's body did not arrive in time"))
            return False
        except HttpError as e:
            await self._refuse(writer, e)
            return False
        keep = request.keep_alive
        try:
            if infer:
                await self._check(request, *infer.groups())
            keep = await upstream.exchange(request, writer, close_client=not keep)
        except Rejection as r:
            self.metrics.reject(r.reason)
            logger.debug("guard: refused (%s): %s", r.reason, r.message)
            writer.write(error_response(r.status, r.message, close=not keep))
            await writer.drain()
            return keep
        except UpstreamUnavailable as e:
            self.metrics.upstream_error()
            message = f"Triton's HTTP endpoint is unavailable (starting, restarting or stopped): {e}"
            writer.write(error_response(502, message, close=True))
            await writer.drain()
            return False
        changed = _REPOSITORY_CHANGE.fullmatch(request.path)
        if changed:
            self.specs.invalidate(changed.group(1))
        return keep

    async def _check(self, request: Request, model: str, version: str | None) -> None:
        header, binary = split_body(request.body, request.get("inference-header-content-length"), self.limits)
        spec = await self.specs.get(model, version)
        check_request(spec, header, binary, self.limits)

    async def _refuse(self, writer: asyncio.StreamWriter, error: HttpError) -> None:
        self.metrics.reject(error.reason)
        logger.debug("guard: refused (%s): %s", error.reason, error.message)
        writer.write(error_response(error.status, error.message, close=True))
        await writer.drain()


def _reservation(request: Request, max_body_bytes: int) -> int:
    """Bytes a request's body may take once read: its Content-Length, or the body limit when chunked or
    compressed (0 where its framing is invalid: read_body refuses it before reading)."""
    try:
        length, chunked = request.get("content-length"), request.get("transfer-encoding") is not None
        compressed = request.get("content-encoding") not in (None, "identity")
    except HttpError:
        return 0
    if chunked or compressed:
        return max_body_bytes
    return min(int(length), max_body_bytes) if length and length.isdigit() and len(length) <= 18 else 0


class _Upstream:
    """One client connection's connection to Triton, opened on first use and again after Triton closed it."""

    def __init__(self, guard: Guard):
        self.guard = guard
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def exchange(self, request: Request, client: asyncio.StreamWriter, close_client: bool) -> bool:
        """Forwards `request` and relays Triton's answer; returns whether the client connection goes on."""
        if self.writer is None or self.reader.at_eof() or self.writer.is_closing():
            await self.close()
            host, port = self.guard.upstream
            try:
                self.reader, self.writer = await asyncio.open_connection(host, port, limit=2**16)
            except OSError as e:
                raise UpstreamUnavailable(f"cannot connect to {host}:{port}: {e.strerror or e}") from None
            self.guard.track(self.writer)
        try:
            self.writer.write(request_bytes(request))
            await self.writer.drain()
        except (ConnectionError, OSError) as e:
            await self.close()
            raise UpstreamUnavailable(f"Triton's HTTP endpoint closed the connection: {e}") from None
        try:
            reusable, must_close, _ = await relay_response(self.reader, client, request.method, close_client)
        except UpstreamError as e:
            await self.close()
            raise UpstreamUnavailable(str(e)) from None
        except BaseException:
            await self.close()  # part of the answer may have reached the client: the connection ends
            raise
        self.guard.metrics.forward()
        if not reusable:
            await self.close()
        return not must_close

    async def close(self) -> None:
        if self.writer is not None:
            self.guard.untrack(self.writer)
            await close_writer(self.writer)
        self.reader = self.writer = None
