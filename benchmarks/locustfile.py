"""Locust users for Triton over gRPC and HTTP that measure the server, not themselves.

    TRITONKIT_MODEL=churn TRITONKIT_PROTOCOL=grpc TRITONKIT_BATCH_ROWS=1 \\
        locust -f benchmarks/locustfile.py --host 127.0.0.1:8001 --headless -u 8 -r 8 -t 30s --csv out/churn

Environment:
    TRITONKIT_MODEL       model to call (default: the only model the server serves)
    TRITONKIT_PROTOCOL    grpc (default; --host is the gRPC port, 8001) or http (port 8000)
    TRITONKIT_BATCH_ROWS  rows per request: 1 = single record (default), N > 1 = micro-batch
    TRITONKIT_DATA        optional CSV/Parquet file: rows are sampled from it (columns named like the
                          model's inputs); without it values are random, of each input's dtype and shape
    TRITONKIT_VERSION     model version (default: the server's choice)
    TRITONKIT_SSL, TRITONKIT_ROOT_CERTIFICATES, TRITONKIT_CLIENT_CERT, TRITONKIT_CLIENT_KEY,
    TRITONKIT_HEADER (one NAME=VALUE per line), TRITONKIT_TIMEOUT_MS: as for every tritonkit command;
                          they build the users' `Endpoint` (an `https://` host implies TRITONKIT_SSL)
    TRITONKIT_CLIENT_COST_FILE  where to write the client's own cost as JSON (see client_cost.py)

The lightest call path each protocol allows, so that what Locust reports is the server's time:
- gRPC: the model's metadata is read once; requests are built and serialized once per process
  (`inference.ModelInferRequest`) and sent through the channel's ModelInfer method with neither
  serialization nor parsing (bytes in, bytes out), over a bare channel from `Endpoint.grpc_channel`.
- HTTP: Locust's FastHttpUser (geventhttpclient) posts pre-built bodies of Triton's binary tensor
  extension; responses come back binary too.
Every inference is reported through Locust's request event (request_type "grpc" or "http", name = the
model). Every run logs the client's own CPU per request beside the latency it measured, and says
when the client, not the server, set the numbers (client_cost.py); past one core, run
`locust --processes N` (bench.py does so by itself for a client-bound point).

Locust is closed loop: each user waits for its answer before sending again; at saturation that
under-reports latency (see bench.py's open-loop "server" scenario for latency at a target rate).

Two gevent traps this file defuses (both once hung a run, see tests/integration/test_bench.py):
- a gRPC channel closed by the garbage collector at interpreter exit, under gevent, can block forever:
  each channel is closed exactly once while the hub still runs, on a user's stop, and for any user
  that never started (or was killed before `on_stop`) when the test stops.
- Locust sets `-t/--run-time` with gevent's `spawn_later`, on a loop clock last read when gevent
  started: when importing took longer than the run time, the run ended at once. The clock is
  refreshed when Locust fires `init`.

A user is never stopped in the middle of a request: a gRPC call cut off by the end of a run is a cancellation,
and Triton up to 25.03 (the embedded server's 2.51 included) can crash with SIGSEGV when a cancellation
arrives as the request completes (triton-inference-server/server issue 8034). Without `--stop-timeout`,
each user finishes the request it has in flight (STOP_TIMEOUT_S at most) before it stops.
"""

from __future__ import annotations

import os
import time

import gevent
import grpc.experimental.gevent as _grpc_gevent
from locust import FastHttpUser, User, constant, events, task  # importing locust monkey-patches with gevent

_grpc_gevent.init_gevent()  # after gevent's monkey patching, before any gRPC channel exists

from tritonkit.benchmarks.client_cost import ClientCost
from tritonkit.benchmarks.payloads import GRPC_INFER_METHOD, build_payloads, grpc_request, http_request
from tritonkit.clients.endpoint import PROTOCOLS, Endpoint, parse_headers
from tritonkit.clients.realtime import TritonClient
from tritonkit.errors import UsageError

_open_senders: dict[int, object] = {}  # id -> sender (or client): every channel not closed yet
STOP_TIMEOUT_S = 10.0  # how long a stopping user may take to finish the request in flight


@events.init.add_listener
def _on_init(environment, **_) -> None:
    gevent.get_hub().loop.update_now()  # so that -t counts from now, not from when gevent started
    if not environment.stop_timeout:  # Locust's default kills users mid-request: a cancellation each
        environment.stop_timeout = STOP_TIMEOUT_S
    if environment.runner is not None:
        ClientCost(environment)


@events.test_stop.add_listener
def _close_leftover_channels(**_) -> None:
    close_all_senders()


def close_all_senders() -> None:
    """Closes the channels of users that never ran `on_stop` (killed while spawning or starting)."""
    for sender in list(_open_senders.values()):
        sender.close()


def endpoint_from_environment(host: str, protocol: str) -> Endpoint:
    """The users' Endpoint: --host, and TLS files, headers and the budget from the TRITONKIT_ variables."""
    env = os.environ.get
    secure = host.startswith("https://") or env("TRITONKIT_SSL", "").lower() in ("1", "true", "yes")
    for scheme in ("grpc://", "http://", "https://"):
        host = host[len(scheme) :] if host.startswith(scheme) else host
    headers = parse_headers([line for line in env("TRITONKIT_HEADER", "").splitlines() if line.strip()])
    return Endpoint(
        url=host.rstrip("/"),
        protocol=protocol,
        ssl=secure,
        root_certificates=env("TRITONKIT_ROOT_CERTIFICATES") or None,
        certificate_chain=env("TRITONKIT_CLIENT_CERT") or None,
        private_key=env("TRITONKIT_CLIENT_KEY") or None,
        headers=headers,
        timeout_s=float(env("TRITONKIT_TIMEOUT_MS") or 10_000) / 1000,
    )


class GrpcSender:
    """One gRPC channel and Triton's ModelInfer method, called with pre-serialized requests (bytes in and out)."""

    def __init__(self, endpoint: Endpoint):
        self.endpoint = endpoint
        self.channel = endpoint.grpc_channel()
        # no (de)serializers: bytes pass through; registered as generated stubs register theirs (a cheaper call)
        self._infer = self.channel.unary_unary(GRPC_INFER_METHOD, _registered_method=True)
        self._metadata = endpoint.grpc_metadata() or None
        _open_senders[id(self)] = self

    def send(self, body: bytes) -> int:
        """Sends one serialized ModelInferRequest; returns the response's size in bytes."""
        return len(self._infer(body, metadata=self._metadata, timeout=self.endpoint.timeout_s))

    def close(self) -> None:
        """Closes the channel once; later calls do nothing."""
        if _open_senders.pop(id(self), None) is not None:
            self.channel.close()


def send_and_report(environment, send, body, model: str, protocol: str, rows: int, started: float | None = None):
    """One inference through `send(body)`, reported through Locust's request event; `started` (perf_counter)
    backdates the clock to a scheduled arrival time, as an open-loop generator needs."""
    start = time.perf_counter() if started is None else started
    exception, length = None, 0
    try:
        length = send(body)
    except Exception as error:  # noqa: BLE001 - every failure is a Locust failure, not a crash
        exception = error
    environment.events.request.fire(
        request_type=protocol,
        name=model,
        response_time=(time.perf_counter() - start) * 1000,
        response_length=length,
        exception=exception,
        context={"rows": rows},
    )


class TritonUser(User):
    """Abstract: one closed-loop Triton caller. Subclasses set `protocol` and how a prepared body is sent.

    Checks in __init__ that it has a host, a known protocol, a served model and inputs it can build, and
    raises UsageError naming what is wrong otherwise. `endpoint` may be set on a subclass (library use);
    otherwise --host and the TRITONKIT_ variables build it.
    """

    abstract = True
    wait_time = constant(0)  # back to back: closed loop
    protocol: str = ""
    endpoint: Endpoint | None = None
    model: str | None = None
    batch_rows: int | None = None
    data: str | None = None
    version: str = ""
    payload_count: int = 64
    _cache: dict = {}  # (url, protocol, model, version, rows, data) -> prepared bodies, per process

    def __init__(self, environment):
        self._configure()  # before Locust's own __init__: FastHttpUser builds its session from what this sets
        super().__init__(environment)
        self.bodies = self._prepared()
        self._next = 0

    def _configure(self) -> None:
        if self.protocol not in PROTOCOLS:
            raise UsageError(f"{type(self).__name__}.protocol is {self.protocol!r}; expected one of {PROTOCOLS}")
        if not self.host and self.endpoint is None:
            raise UsageError("no host: pass --host HOST:PORT (gRPC 8001, HTTP 8000)")
        self.endpoint = self.endpoint or endpoint_from_environment(self.host, self.protocol)
        self.model = self.model or os.environ.get("TRITONKIT_MODEL") or None
        rows = self.batch_rows or os.environ.get("TRITONKIT_BATCH_ROWS") or 1
        try:
            self.batch_rows = int(rows)
        except ValueError:
            raise UsageError(f"TRITONKIT_BATCH_ROWS is {rows!r}; expected a whole number >= 1") from None
        self.data = self.data or os.environ.get("TRITONKIT_DATA") or None
        self.version = self.version or os.environ.get("TRITONKIT_VERSION", "")

    def _prepared(self) -> list:
        """This user's request bodies, built and serialized once per process for the same settings."""
        with TritonClient(self.endpoint) as client:
            self.model = self.model or _only_model(client)
            key = (self.endpoint.url, self.protocol, self.model, self.version, self.batch_rows, self.data)
            if key not in TritonUser._cache:
                meta = client.metadata(self.model, self.version)
                payloads = build_payloads(meta, self.batch_rows, self.data, self.payload_count)
                TritonUser._cache[key] = [self.serialize(meta, arrays) for arrays in payloads]
        return TritonUser._cache[key]

    def serialize(self, meta, arrays):
        raise NotImplementedError

    def send(self, body) -> int:
        raise NotImplementedError

    @task
    def infer(self) -> None:
        body = self.bodies[self._next % len(self.bodies)]
        self._next += 1
        send_and_report(self.environment, self.send, body, self.model, self.protocol, self.batch_rows)


def _only_model(client: TritonClient) -> str:
    try:  # Triton can restrict this API (tritonkit serve does by default)
        models = client.models()
    except Exception as e:
        raise UsageError(f"set TRITONKIT_MODEL: the server did not list its models ({e})") from e
    ready = sorted({m["name"] for m in models if m.get("state", "READY") == "READY"})
    if len(ready) != 1:
        raise UsageError(f"set TRITONKIT_MODEL: the server serves {len(ready)} models ({', '.join(ready)})")
    return ready[0]


_PROTOCOL = os.environ.get("TRITONKIT_PROTOCOL", "grpc").lower()
if _PROTOCOL not in (*PROTOCOLS, "both", "tritonclient"):
    raise UsageError(f"TRITONKIT_PROTOCOL is {_PROTOCOL!r}; expected grpc, http or both (or tritonclient)")


class GrpcTritonUser(TritonUser):
    """gRPC; runs under `locust -f` when TRITONKIT_PROTOCOL is grpc (default) or both."""

    abstract = _PROTOCOL not in ("grpc", "both")
    protocol = "grpc"

    def on_start(self) -> None:
        self.sender = GrpcSender(self.endpoint)

    def serialize(self, meta, arrays) -> bytes:
        return grpc_request(meta, arrays, self.version)

    def send(self, body: bytes) -> int:
        return self.sender.send(body)

    def on_stop(self) -> None:
        self.sender.close()


class HttpTritonUser(TritonUser, FastHttpUser):
    """HTTP with binary tensors through Locust's FastHttpUser; runs when TRITONKIT_PROTOCOL is http or both."""

    abstract = _PROTOCOL not in ("http", "both")
    protocol = "http"

    def _configure(self) -> None:
        super()._configure()
        self.host = self.endpoint.http_base_url()  # FastHttpUser's session takes its URL and TLS from these
        if self.endpoint.ssl:
            self.insecure, self.ssl_context_factory = False, self.endpoint.ssl_context

    def on_start(self) -> None:
        version = f"/versions/{self.version}" if self.version else ""
        self._url = f"{self.host}/v2/models/{self.model}{version}/infer"

    def serialize(self, meta, arrays) -> tuple[bytes, dict[str, str]]:
        body, header_length = http_request(meta, arrays)
        headers = {
            **self.endpoint.header_dict,
            "Content-Type": "application/octet-stream",
            "Inference-Header-Content-Length": str(header_length),
        }
        return body, headers

    def send(self, prepared: tuple[bytes, dict[str, str]]) -> int:
        body, headers = prepared
        # the session's user agent directly: the request event is fired once, as "http" named after the model
        response = self.client.client.urlopen(self._url, method="POST", payload=body, headers=headers)
        return len(response.content)


def user_class(
    protocol: str, model: str, batch_rows: int = 1, data: str | None = None, version: str = "", endpoint=None
) -> type:
    """A concrete TritonUser for library use (bench.py), independent of the environment variables."""
    base = GrpcTritonUser if protocol == "grpc" else HttpTritonUser
    return type(
        f"{base.__name__}_{model}_{batch_rows}",
        (base,),
        {
            "abstract": False,
            "model": model,
            "batch_rows": batch_rows,
            "data": data,
            "version": version,
            "endpoint": endpoint,
            "__module__": __name__,
        },
    )


class TritonClientUser(TritonUser):
    """The heavy path, for comparison only (TRITONKIT_PROTOCOL=tritonclient): the kit's TritonClient over gRPC,
    tensors rebuilt from the metadata on every call, as these users did before requests were pre-serialized."""

    abstract = _PROTOCOL != "tritonclient"
    protocol = "grpc"

    def on_start(self) -> None:
        self.client = TritonClient(self.endpoint)
        _open_senders[id(self.client)] = self.client  # closed once, at the latest when the test stops

    def serialize(self, meta, arrays):
        return arrays

    def send(self, arrays) -> int:
        values, _, _ = self.client.infer_arrays(self.model, arrays, self.version)
        return int(sum(v.nbytes for v in values.values() if v.dtype != object))

    def on_stop(self) -> None:
        if _open_senders.pop(id(self.client), None) is not None:
            self.client.close()
