"""HTTP/1.1 messages as the guard reads, checks and forwards them (asyncio streams, no third-party parser).

Strict on what it takes from clients, so that the guard and Triton cannot frame one byte stream two
ways: CRLF line ends, token header names, no obs-fold, one Content-Length or `Transfer-Encoding:
chunked` (never both), origin-form targets, HTTP/1.0 or 1.1. The body is read whole (bounded before a
byte of it is read), de-chunked and decompressed (gzip/deflate, bounded), and forwarded with one
Content-Length. Triton's answers are streamed back by their own framing.
"""

from __future__ import annotations

import asyncio
import re
import zlib
from dataclasses import dataclass, field

from tritonkit.server.infer_check import GuardLimits

_TOKEN = re.compile(rb"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
_BAD_VALUE = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
_TARGET = re.compile(rb"^/[\x21-\x7e]*$")
HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade", "expect"}
SINGLE = ("content-length", "transfer-encoding", "content-encoding", "inference-header-content-length", "expect")
_COPY = 256 * 1024
_WBITS = {"gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}  # what Triton accepts as Content-Encoding


class HttpError(Exception):
    """A request the guard answers itself and then closes the connection (its framing cannot be trusted)."""

    def __init__(self, status: int, reason: str, message: str):
        self.status, self.reason, self.message = status, reason, message
        super().__init__(message)


class UpstreamError(Exception):
    """Triton's HTTP endpoint failed before any byte of its answer reached the client."""


@dataclass
class Request:
    method: str
    target: str
    version: str
    headers: list[tuple[str, str]]  # (lowercase name, value), in order
    body: bytes = b""
    decoded: bool = field(default=False)  # the body was decompressed here

    @property
    def path(self) -> str:
        return self.target.split("?", 1)[0]

    def get(self, name: str) -> str | None:
        values = [v for k, v in self.headers if k == name]
        if len(values) > 1 and name in SINGLE:
            raise HttpError(400, "http", f"header {name} appears {len(values)} times; expected once")
        return values[0] if values else None

    @property
    def keep_alive(self) -> bool:
        tokens = {t.strip().lower() for v in (v for k, v in self.headers if k == "connection") for t in v.split(",")}
        return "keep-alive" in tokens if self.version == "HTTP/1.0" else "close" not in tokens


async def read_request_head(reader: asyncio.StreamReader, first: bytes) -> Request:
    """The rest of a request's line and headers, after its `first` byte(s)."""
    try:
        head = first + await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        raise HttpError(400, "http", "the connection ended inside a request's headers") from None
    except asyncio.LimitOverrunError:
        raise HttpError(431, "http", "the request line and headers are too large") from None
    return parse_request_head(head)


def parse_request_head(head: bytes) -> Request:
    lines = head[:-4].split(b"\r\n")
    parts = lines[0].split(b" ")
    if len(parts) != 3 or not _TOKEN.match(parts[0]) or not _TARGET.match(parts[1]):
        raise HttpError(400, "http", f"malformed request line {lines[0][:80]!r}; expected METHOD /path HTTP/1.1")
    if parts[2] not in (b"HTTP/1.1", b"HTTP/1.0"):
        raise HttpError(505, "http", f"{parts[2][:20]!r} is not supported; expected HTTP/1.1 or HTTP/1.0")
    headers = []
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        if not colon or not _TOKEN.match(name) or _BAD_VALUE.search(value):
            raise HttpError(400, "http", f"malformed header line {line[:60]!r}")
        headers.append((name.decode("ascii").lower(), value.strip(b" \t").decode("latin-1")))
    return Request(parts[0].decode("ascii"), parts[1].decode("ascii"), parts[2].decode("ascii"), headers)


async def read_body(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: Request, limits: GuardLimits):
    """Reads the body into `request.body`, bounded by `limits.max_body_bytes` before it is read."""
    length, chunked = _framing(request, limits)
    expect = request.get("expect")
    if expect is not None:
        if expect.lower() != "100-continue":
            raise HttpError(417, "http", f"Expect: {expect[:40]!r} is not supported; expected 100-continue")
        if length or chunked:
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    try:
        if chunked:
            body = await _read_chunked(reader, limits.max_body_bytes)
        else:
            body = await reader.readexactly(length) if length else b""
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
        raise HttpError(
            400, "http", "the connection ended inside the request body, or its chunks are malformed"
        ) from None
    request.body = _decoded(request, body, limits.max_body_bytes)


def _framing(request: Request, limits: GuardLimits) -> tuple[int, bool]:
    length, encoding = request.get("content-length"), request.get("transfer-encoding")
    if encoding is not None:
        if encoding.lower() != "chunked" or length is not None:
            raise HttpError(
                400,
                "http",
                f"Transfer-Encoding {encoding[:40]!r} (and Content-Length: {length}); expected chunked alone",
            )
        return 0, True
    if length is None:
        return 0, False
    if not length.isdigit() or len(length) > 18:
        raise HttpError(400, "http", f"Content-Length is {length[:40]!r}; expected a number of bytes")
    if int(length) > limits.max_body_bytes:
        raise HttpError(413, "body_too_large", f"the body is {length} bytes; the limit is {limits.max_body_bytes}")
    return int(length), False


async def _read_chunked(reader: asyncio.StreamReader, limit: int) -> bytes:
    pieces, total = [], 0
    while True:
        line = await reader.readuntil(b"\r\n")
        size_text = line[:-2].split(b";", 1)[0].strip()
        if not size_text or len(size_text) > 16 or not re.fullmatch(rb"[0-9A-Fa-f]+", size_text):
            raise ValueError("bad chunk size")
        size = int(size_text, 16)
        if size == 0:
            while (await reader.readuntil(b"\r\n")) != b"\r\n":  # trailers, dropped
                pass
            return b"".join(pieces)
        total += size
        if total > limit:
            raise HttpError(413, "body_too_large", f"the chunked body exceeds the limit of {limit} bytes")
        chunk = await reader.readexactly(size + 2)
        if chunk[-2:] != b"\r\n":
            raise ValueError("chunk without CRLF")
        pieces.append(chunk[:-2])


def _decoded(request: Request, body: bytes, limit: int) -> bytes:
    encoding = (request.get("content-encoding") or "identity").strip().lower()
    if encoding == "identity":
        return body
    if encoding not in _WBITS:
        raise HttpError(415, "http", f"Content-Encoding {encoding[:40]!r} is not supported; expected gzip or deflate")
    inflater = zlib.decompressobj(_WBITS[encoding])
    try:
        data = inflater.decompress(body, limit + 1)
    except zlib.error as e:
        raise HttpError(400, "http", f"the {encoding} body cannot be decompressed: {e}") from None
    if len(data) > limit or inflater.unconsumed_tail:
        raise HttpError(413, "body_too_large", f"the decompressed body exceeds the limit of {limit} bytes")
    if not inflater.eof or inflater.unused_data:
        raise HttpError(400, "http", f"the {encoding} body is truncated or followed by other bytes")
    request.decoded = True
    return data


def request_bytes(request: Request) -> bytes:
    """The request as forwarded: hop-by-hop headers dropped, the body with one Content-Length."""
    named = {t.strip().lower() for k, v in request.headers if k == "connection" for t in v.split(",")}
    drop = HOP_BY_HOP | named | {"content-length"} | ({"content-encoding"} if request.decoded else set())
    lines = [f"{request.method} {request.target} HTTP/1.1"]
    lines += [f"{k}: {v}" for k, v in request.headers if k not in drop]
    if request.body or request.method in ("POST", "PUT", "PATCH"):
        lines.append(f"Content-Length: {len(request.body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + request.body


def error_response(status: int, message: str, close: bool = False) -> bytes:
    """Triton's error shape: {"error": "..."} as JSON."""
    import json

    body = json.dumps({"error": message}, separators=(",", ":")).encode()
    phrase = {400: "Bad Request", 404: "Not Found", 413: "Payload Too Large", 503: "Service Unavailable"}.get(
        status, "Error"
    )
    head = f"HTTP/1.1 {status} {phrase}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
    return (head + ("Connection: close\r\n" if close else "") + "\r\n").encode() + body


async def relay_response(
    up_reader: asyncio.StreamReader, writer: asyncio.StreamWriter, method: str, close_client: bool
) -> tuple[bool, bool, int]:
    """Streams Triton's answer to the client; returns (upstream reusable, client must close, status)."""
    try:
        while True:
            status, reason, lines = _parse_response_head(await up_reader.readuntil(b"\r\n\r\n"))
            if not 100 <= status < 200:
                break
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError, ValueError) as e:
        raise UpstreamError(
            f"Triton's HTTP endpoint closed the connection without an answer ({type(e).__name__})"
        ) from None
    headers = [(n.lower(), v) for n, v in lines]
    get = {n: v for n, v in headers}
    upstream_close = "close" in get.get("connection", "").lower()
    no_body = method == "HEAD" or status in (204, 304)
    chunked = "chunked" in get.get("transfer-encoding", "").lower()
    until_close = not no_body and not chunked and "content-length" not in get
    close_client = close_client or until_close
    kept = [(n, v) for n, v in lines if n.lower() not in ("connection", "keep-alive", "proxy-connection")]
    head = [f"HTTP/1.1 {status} {reason}".rstrip()] + [f"{n}: {v}" for n, v in kept]
    head += ["Connection: close"] if close_client else []
    encoded = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1")
    length = int(get["content-length"]) if not (no_body or chunked or until_close) else 0
    if not (chunked or until_close) and length <= _COPY:  # the usual small answer: head and body in one write
        try:
            body = await up_reader.readexactly(length) if length else b""
        except asyncio.IncompleteReadError:
            raise ConnectionError("Triton closed the connection inside its answer") from None
        writer.write(encoded + body)
        await writer.drain()
        return not (upstream_close or until_close), close_client, status
    writer.write(encoded)
    if not no_body:
        if chunked:
            await _copy_chunked(up_reader, writer)
        elif until_close:
            while data := await up_reader.read(_COPY):
                writer.write(data)
                await writer.drain()
        else:
            await _copy_exactly(up_reader, writer, int(get["content-length"]))
    await writer.drain()
    return not (upstream_close or until_close), close_client, status


def _parse_response_head(head: bytes) -> tuple[int, str, list[tuple[str, str]]]:
    lines = head[:-4].decode("latin-1").split("\r\n")
    version, _, rest = lines[0].partition(" ")
    code, _, reason = rest.partition(" ")
    if not version.startswith("HTTP/1.") or not code.isdigit():
        raise ValueError(f"bad status line {lines[0][:60]!r}")
    headers = [(n.strip(), v.strip()) for n, _, v in (line.partition(":") for line in lines[1:])]
    return int(code), reason, headers


async def _copy_exactly(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, remaining: int) -> None:
    while remaining > 0:
        data = await reader.read(min(remaining, _COPY))
        if not data:
            raise ConnectionError("Triton closed the connection inside its answer")
        remaining -= len(data)
        writer.write(data)
        await writer.drain()


async def _copy_chunked(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while True:
        line = await reader.readuntil(b"\r\n")
        writer.write(line)
        size = int(line[:-2].split(b";", 1)[0].strip() or b"0", 16)
        if size == 0:
            while (trailer := await reader.readuntil(b"\r\n")) != b"\r\n":
                writer.write(trailer)
            writer.write(b"\r\n")
            return
        await _copy_exactly(reader, writer, size + 2)
