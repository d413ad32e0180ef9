"""How to reach a Triton server: one frozen value that every client of the kit takes.

`Endpoint` holds the URL, the protocol, the TLS files, the headers, the per-call budget and the retry
policy. `TritonClient` (real time), `AsyncInferer` (bulk), `score`, the Spark engine, the hybrid
lookup, `bench` and the Locust users are all built from one, so a setting given once (a client
certificate, an auth header, a budget) reaches every request. `translate` turns what tritonclient,
gRPC, aiohttp and the socket layer raise into the kit's errors, and `retryable` is the one rule for
what is worth another try.
"""

from __future__ import annotations

import asyncio
import random
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from http.client import HTTPException

from tritonkit.errors import (
    DeadlineExceededError,
    ModelNotFoundError,
    OverloadedError,
    ServerError,
    ServerUnavailableError,
    UsageError,
)

PROTOCOLS = ("grpc", "http")
# gRPC channel args replace tritonclient's defaults, so its message limits are repeated here. After a server
# restart, gRPC waits out its own reconnect backoff (up to 120 s by default) before it tries again: cap it.
# (Not grpc.min_reconnect_backoff_ms: it is also the connect timeout, and a server that accepts but never
# answers must use up the caller's budget, not fail as unavailable after 200 ms.)
GRPC_CHANNEL_ARGS = (
    ("grpc.max_send_message_length", 2**31 - 1),
    ("grpc.max_receive_message_length", 2**31 - 1),
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 2000),
)
# Client-side balancing over every address a name resolves to (a headless Service): new replicas get traffic.
ROUND_ROBIN = ("grpc.service_config", '{"loadBalancingConfig": [{"round_robin": {}}]}')
# What Triton says when a model's queue policy turns a request away, and what that means for people.
OVERLOAD_REASONS = {
    "Exceeds maximum queue size": "its queue is full (max_queue_size)",
    "Request timeout expired": "the request waited longer than its queue allows",
}
# Transport failures that say the server is not there (yet): restarting, starting, unreachable.
_UNAVAILABLE_STATUS = ("UNAVAILABLE", "502", "503", "504")
_UNAVAILABLE_TEXT = ("failed to connect", "socket closed", "connection reset", "connection refused", "broken pipe")
_AIOHTTP_TRANSIENT = {"ClientConnectorError", "ServerDisconnectedError", "ClientOSError", "ClientPayloadError"}
_HOST_PORT = re.compile(r"^(?:dns:///)?(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9_.\-]+):(\d+)$")
_HEADER_NAME = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")


@dataclass(frozen=True)
class RetryPolicy:
    """Retries of transient failures (server starting or restarting, overloaded, slow).

    Attributes:
        attempts: most tries of one request, the first included.
        base_s: backoff before the second try; doubles per try, capped at `max_s`, with full jitter.
        max_s: longest single backoff.
        max_total_s: total deadline for one request, tries and backoffs together (None: attempts only).
    """

    attempts: int = 30
    base_s: float = 0.2
    max_s: float = 5.0
    max_total_s: float | None = 120.0

    def __post_init__(self):
        if (
            self.attempts < 1
            or self.base_s < 0
            or self.max_s < 0
            or (self.max_total_s is not None and self.max_total_s <= 0)
        ):
            raise UsageError(f"retry policy {self}: expected attempts >= 1, delays >= 0 and max_total_s > 0")

    def delay(self, attempt: int) -> float:
        """Backoff after try `attempt` (0-based): exponential with full jitter."""
        return random.uniform(0, min(self.max_s, self.base_s * 2**attempt))

    def gives_up(self, attempt: int, elapsed_s: float, delay_s: float) -> bool:
        """Whether to stop after try `attempt` (0-based) rather than sleep `delay_s` and try again."""
        out_of_time = self.max_total_s is not None and elapsed_s + delay_s >= self.max_total_s
        return attempt + 1 >= self.attempts or out_of_time


@dataclass(frozen=True)
class Endpoint:
    """A Triton server and how to talk to it.

    Args:
        url: HOST:PORT of Triton's gRPC (8001) or HTTP (8000) endpoint; `dns:///NAME:PORT` (gRPC) spreads
            calls round robin over every address NAME resolves to (a Kubernetes headless Service).
        protocol: "grpc" or "http".
        ssl: TLS (gRPC over TLS, or HTTPS).
        root_certificates: PEM file of the CA that signed the server's certificate (default: the system's).
        certificate_chain, private_key: PEM files of a client certificate, for servers that require one.
        headers: sent with every request (an auth token, say); never printed, never in repr.
        timeout_s: budget of one call, connecting and reading the model's metadata included.
        retry: how unavailable, overloaded and slow answers are retried (None: not at all).
    """

    url: str = "127.0.0.1:8001"
    protocol: str = "grpc"
    ssl: bool = False
    root_certificates: str | None = None
    certificate_chain: str | None = None
    private_key: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)
    timeout_s: float = 10.0
    retry: RetryPolicy | None = None

    def __post_init__(self):
        if self.protocol not in PROTOCOLS:
            raise UsageError(f"--protocol is {self.protocol!r}; expected one of {', '.join(PROTOCOLS)}")
        match = _HOST_PORT.match(self.url or "")
        if match is None or not 0 < int(match.group(2)) < 65536:
            raise UsageError(
                f"--url is {self.url!r}; expected HOST:PORT with a port from 1 to 65535 (e.g. 127.0.0.1:8001)"
            )
        if self.url.startswith("dns:///") and self.protocol != "grpc":
            raise UsageError(f"--url {self.url}: dns:/// (client-side balancing) is for gRPC only")
        if (self.certificate_chain is None) != (self.private_key is None):
            raise UsageError("--client-cert and --client-key go together")
        if not self.ssl and (self.root_certificates or self.certificate_chain):
            raise UsageError("--root-certificates, --client-cert and --client-key need --ssl")
        if not self.timeout_s > 0:
            raise UsageError(f"timeout is {self.timeout_s!r} s; expected a budget above 0")
        object.__setattr__(self, "headers", _checked_headers(self.headers))

    @property
    def header_dict(self) -> dict[str, str]:
        return dict(self.headers)

    def with_(self, **changes) -> Endpoint:
        """A copy with some settings changed (validated again)."""
        return replace(self, **changes)

    def describe(self) -> str:
        """For messages: where, how and whether with TLS; never a header value."""
        return f"Triton at {self.url} over {self.protocol}{' with TLS' if self.ssl else ''}"

    def grpc_client(self, module):
        """A tritonclient gRPC client (`tritonclient.grpc` or `tritonclient.grpc.aio` as `module`) for this endpoint."""
        return module.InferenceServerClient(
            self.url,
            ssl=self.ssl,
            root_certificates=self.root_certificates,
            private_key=self.private_key,
            certificate_chain=self.certificate_chain,
            channel_args=self.grpc_channel_args(),
        )

    def grpc_channel_args(self) -> list[tuple[str, object]]:
        args = list(GRPC_CHANNEL_ARGS)
        return [*args, ROUND_ROBIN] if self.url.startswith("dns:///") else args

    def grpc_channel(self):
        """A bare `grpc.Channel` to this endpoint (TLS from its files when `ssl`), with the kit's channel args:
        for callers that send pre-serialized messages (the Locust users) rather than through tritonclient."""
        import grpc

        if not self.ssl:
            return grpc.insecure_channel(self.url, options=self.grpc_channel_args())
        from pathlib import Path

        files = [self.root_certificates, self.private_key, self.certificate_chain]
        root, key, chain = (Path(f).read_bytes() if f else None for f in files)
        credentials = grpc.ssl_channel_credentials(root_certificates=root, private_key=key, certificate_chain=chain)
        return grpc.secure_channel(self.url, credentials, options=self.grpc_channel_args())

    def grpc_metadata(self) -> tuple[tuple[str, str], ...]:
        """The headers as gRPC call metadata (lowercase names)."""
        return tuple(self.headers.items())

    def http_base_url(self) -> str:
        """`http://HOST:PORT` or `https://HOST:PORT`."""
        return f"{'https' if self.ssl else 'http'}://{self.url}"

    def http_ssl_options(self) -> dict | None:
        """tritonclient.http's ssl_options: the CA and client certificate files that are set."""
        files = {"ca_certs": self.root_certificates, "certfile": self.certificate_chain, "keyfile": self.private_key}
        return {k: v for k, v in files.items() if v} or None

    def ssl_context(self):
        """An SSL context for aiohttp (tritonclient.http.aio), or None without TLS."""
        if not self.ssl:
            return None
        import ssl

        context = ssl.create_default_context(cafile=self.root_certificates)
        if self.certificate_chain:
            context.load_cert_chain(self.certificate_chain, self.private_key)
        return context


def parse_headers(items: list[str] | tuple[str, ...]) -> dict[str, str]:
    """`NAME=VALUE` or `NAME: VALUE` items as a dict; errors name the position, never the text (it may be a secret)."""
    headers = {}
    for position, item in enumerate(items, start=1):
        colon, equals = item.find(":"), item.find("=")
        cut = colon if colon >= 0 and (equals < 0 or colon < equals) else equals
        name, value = (item[:cut].strip(), item[cut + 1 :].strip()) if cut >= 0 else ("", "")
        if not name or not _HEADER_NAME.match(name):
            raise UsageError(
                f"--header number {position} is not 'NAME=VALUE' or 'NAME: VALUE' "
                "(its text is not shown: it may hold a secret)"
            )
        headers[name.lower()] = value  # gRPC (HTTP/2) needs lowercase names; HTTP/1.1 ignores case
    return _checked_headers(headers)


def _checked_headers(headers: Mapping[str, str]) -> _FrozenHeaders:
    items = headers.items() if isinstance(headers, Mapping) else headers
    checked = {}
    for position, (name, value) in enumerate(items, start=1):
        if not isinstance(name, str) or not _HEADER_NAME.match(name):
            raise UsageError(f"header number {position} has an invalid name (letters, digits and -_.!#$%&'*+^`|~)")
        if not isinstance(value, str) or any(c in value for c in "\r\n\0"):
            raise UsageError(
                f"header `{name}` has a value with a line break or NUL, which would split the request "
                "(the value is not shown: it may hold a secret)"
            )
        checked[name.lower()] = value
    return _FrozenHeaders(checked)


class _FrozenHeaders(dict):
    """Headers that cannot change after the endpoint is built, and never show their values."""

    def __setitem__(self, *_):
        raise TypeError("an Endpoint's headers are read-only; use Endpoint.with_(headers=...)")

    __delitem__ = update = pop = popitem = clear = setdefault = __setitem__  # type: ignore[assignment]

    def __repr__(self) -> str:
        return "{" + ", ".join(f"{k!r}: '***'" for k in self) + "}"

    def __hash__(self) -> int:
        return hash(tuple(sorted(self.items())))

    def __reduce__(self):  # pickled into Spark executors: rebuild from a plain dict
        return _FrozenHeaders, (dict(self),)


def overload_reason(message: str) -> str | None:
    """Why Triton turned a request away for overload (queue full, queue timeout); None for other errors."""
    return next((reason for marker, reason in OVERLOAD_REASONS.items() if marker in message), None)


def retryable(error: BaseException) -> bool:
    """The one rule: an unavailable server, an overloaded model or a slow answer may succeed on another try."""
    return isinstance(error, (ServerUnavailableError, OverloadedError, DeadlineExceededError))


def row_level(error: BaseException) -> bool:
    """Whether a failure may come from the request's rows (so splitting the request can isolate them): not
    an outage, an overload, a missing model or a refused credential, which no split would change."""
    return (
        isinstance(error, ServerError)
        and not retryable(error)
        and not isinstance(error, ModelNotFoundError)
        and error.status != "PERMISSION_DENIED"
    )


def translate(error: BaseException, model: str, endpoint: Endpoint, budget_ms: float | None = None) -> ServerError:
    """What tritonclient, gRPC, aiohttp or the socket layer raised, as the kit's error (raise it `from error`)."""
    from tritonclient.utils import InferenceServerException

    where = endpoint.describe()
    if isinstance(error, InferenceServerException):
        message = error.message() or str(error)
        status = str(error.status() or "")
        if "DEADLINE_EXCEEDED" in status and budget_ms is not None:
            return DeadlineExceededError(model, budget_ms, budget_ms)
        if "restricted" in message.lower() and "header" in message.lower():
            # Triton answers a restricted API with UNAVAILABLE over gRPC: it is a refusal, not an outage.
            return ServerError(f"{where}: {message}", model=model, status="PERMISSION_DENIED")
        if "unknown model" in message or "NOT_FOUND" in status or status == "404":
            return ModelNotFoundError(
                f"model `{model}` is not served by {where} (not in the repository, or not loaded): {message}",
                model=model,
                status=status,
            )
        reason = overload_reason(message)
        if reason:
            return OverloadedError(
                f"model `{model}` is overloaded: {reason}; retry later with backoff ({message})",
                model=model,
                status=status,
            )
        lowered = message.lower()
        if any(s in status for s in _UNAVAILABLE_STATUS) or any(t in lowered for t in _UNAVAILABLE_TEXT):
            return ServerUnavailableError(
                f"{where} is unavailable: {message}", model=model, status=status or "UNAVAILABLE"
            )
        if "DEADLINE_EXCEEDED" in status:
            return DeadlineExceededError(model, budget_ms or 0.0, budget_ms or 0.0)
        return ServerError(f"model `{model}`: {message}", model=model, status=status)
    if isinstance(error, (TimeoutError, asyncio.TimeoutError)):
        return DeadlineExceededError(model, budget_ms or 0.0, budget_ms or 0.0)
    name = type(error).__name__
    if name == "JSONDecodeError" or isinstance(error, UnicodeDecodeError):  # json's or rapidjson's
        return ServerError(
            f"{where} answered with something that is not Triton's JSON ({error}); is {endpoint.url} Triton's "
            f"{endpoint.protocol.upper()} port? (the metrics port, 8002 by default, answers all paths in plain text)",
            model=model,
            status="BAD_RESPONSE",
        )
    if isinstance(error, (OSError, HTTPException)) or name in _AIOHTTP_TRANSIENT:
        return ServerUnavailableError(f"cannot talk to {where}: {name}: {error}", model=model, status="UNAVAILABLE")
    return ServerError(f"{where}: {name}: {error}", model=model)
