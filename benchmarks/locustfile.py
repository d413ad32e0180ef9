"""Locust users for Triton over gRPC and HTTP (tritonclient), with inputs built from the server's model metadata.

    TRITONKIT_MODEL=churn TRITONKIT_PROTOCOL=grpc TRITONKIT_BATCH_ROWS=1 \\
        locust -f benchmarks/locustfile.py --host 127.0.0.1:8001 --headless -u 8 -r 8 -t 30s --csv out/churn

Environment:
    TRITONKIT_MODEL       model to call (default: the only model the server serves)
    TRITONKIT_PROTOCOL    grpc (default; --host is the gRPC port, 8001) or http (port 8000)
    TRITONKIT_BATCH_ROWS  rows per request: 1 = single record (default), N > 1 = micro-batch
    TRITONKIT_DATA        optional CSV/Parquet file: rows are sampled from it (columns named like the
                          model's inputs); without it values are random, of each input's dtype and shape
    TRITONKIT_VERSION     model version (default: the server's choice)

Every inference is reported through Locust's request event (request_type "grpc" or "http", name = the
model), so Locust's stats, CSV and web UI see it. Locust is closed loop: each user waits for its answer
before sending again; at saturation that under-reports latency (see benchmarks/bench.py's open-loop
"server" scenario for latency at a target arrival rate). One Locust process is one core: use
`--processes N` when the client's CPU is the bottleneck.

Two gevent traps this file defuses (both once hung a run, see tests/integration/test_bench.py):
- tritonclient's `__del__` closes its gRPC channel again; when that happens in the garbage collection
  at interpreter exit, under gevent, it can block forever. Each client is closed exactly once, while
  the hub still runs (`close_client`): on a user's stop, and for any user that never started (or was
  killed before `on_stop`) when the test stops.
- Locust sets `-t/--run-time` with gevent's `spawn_later`, on a loop clock last read when gevent
  started: when importing took longer than the run time, the run ended at once, while users were
  still being spawned. The clock is refreshed when Locust fires `init`.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import gevent
import grpc.experimental.gevent as _grpc_gevent
from locust import User, constant, events, task  # importing locust monkey-patches the process with gevent

_grpc_gevent.init_gevent()  # after gevent's monkey patching, before any gRPC channel exists

import numpy as np

from tritonkit.benchmarks.workloads import random_texts
from tritonkit.clients.endpoint import PROTOCOLS
from tritonkit.clients.metadata import ModelMeta
from tritonkit.clients.realtime import TritonClient
from tritonkit.errors import UsageError

VARIABLE_DIM = 8  # size given to a -1 dimension (other than the batch one) in random inputs
_open_clients: dict[int, TritonClient] = {}  # id -> client: every TritonUser client not closed yet


def close_client(client: TritonClient) -> None:
    """Closes `client` once; later calls, and tritonclient's own `__del__`, do nothing."""
    if _open_clients.pop(id(client), None) is not None:
        client.close()  # closes each connection once, and tritonclient's __del__ then does nothing


def close_all_clients() -> None:
    """Closes the clients of users that never ran `on_stop` (killed while spawning or starting)."""
    for client in list(_open_clients.values()):
        close_client(client)


@events.init.add_listener
def _refresh_loop_clock(**_) -> None:
    gevent.get_hub().loop.update_now()  # so that -t counts from now, not from when gevent started


@events.test_stop.add_listener
def _close_leftover_clients(**_) -> None:
    close_all_clients()


def _random_array(tensor, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    if tensor.datatype == "BYTES":
        return random_texts(shape, rng)
    dtype = tensor.numpy_dtype
    if dtype == np.bool_:
        return rng.integers(0, 2, shape).astype(bool)
    if np.issubdtype(dtype, np.integer):
        return rng.integers(0, 100, shape).astype(dtype)
    return rng.standard_normal(shape).astype(dtype)


def _column_array(tensor, column, inner: tuple[int, ...]) -> np.ndarray:
    values = list(column)
    if tensor.datatype == "BYTES":
        missing = [v is None or (isinstance(v, float) and v != v) for v in values]  # sent as empty text
        array = np.array(
            [b"" if gone else v if isinstance(v, bytes) else str(v).encode() for v, gone in zip(values, missing)],
            dtype=object,
        )
    else:
        array = np.stack([np.asarray(v) for v in values]).astype(tensor.numpy_dtype)
    return array.reshape((len(values), *[d if d > 0 else -1 for d in inner]) if inner else (len(values),))


def build_payloads(
    meta: ModelMeta, batch_rows: int = 1, data: str | os.PathLike | None = None, count: int = 64, seed: int = 0
) -> list[dict[str, np.ndarray]]:
    """`count` ready requests of `batch_rows` rows each: random values, or rows sampled from `data`."""
    if batch_rows < 1:
        raise UsageError(f"TRITONKIT_BATCH_ROWS is {batch_rows}; expected >= 1")
    if not meta.batching and batch_rows != 1:
        raise UsageError(
            f"model `{meta.name}` has max_batch_size 0 (no batch dimension): TRITONKIT_BATCH_ROWS "
            f"must be 1, got {batch_rows}"
        )
    if meta.batching and batch_rows > meta.max_batch_size:
        raise UsageError(
            f"TRITONKIT_BATCH_ROWS {batch_rows} exceeds model `{meta.name}`'s max_batch_size {meta.max_batch_size}"
        )
    rng = np.random.default_rng(seed)
    frame = None
    if data:
        import pandas as pd

        path = Path(data)
        if not path.exists():
            raise UsageError(f"TRITONKIT_DATA {path} does not exist")
        frame = pd.read_parquet(path) if path.suffix in (".parquet", ".pq") else pd.read_csv(path)
        missing = [t.name for t in meta.inputs if t.name not in frame.columns]
        if missing:
            raise UsageError(
                f"TRITONKIT_DATA {path} lacks column(s) {', '.join(missing)} for model `{meta.name}` "
                f"(it takes: {meta.signature()}); its columns: {', '.join(map(str, frame.columns))}"
            )
    payloads = []
    for _ in range(count):
        rows = rng.integers(0, len(frame), batch_rows) if frame is not None else None
        arrays = {}
        for tensor in meta.inputs:
            inner = tensor.shape[1:] if meta.batching else tensor.shape
            if frame is not None:
                array = _column_array(tensor, frame[tensor.name].iloc[rows], inner)
                if not meta.batching:
                    array = array.reshape([d if d > 0 else -1 for d in inner] or [1])
            else:
                concrete = tuple(d if d > 0 else VARIABLE_DIM for d in inner)
                array = _random_array(tensor, (batch_rows, *concrete) if meta.batching else concrete, rng)
            arrays[tensor.name] = array
        payloads.append(arrays)
    return payloads


def infer_and_report(
    environment, client: TritonClient, model: str, arrays: dict, version: str = "", started: float | None = None
) -> None:
    """One inference, reported through Locust's request event; `started` (perf_counter) backdates the clock
    to a scheduled arrival time, as an open-loop generator needs."""
    start = time.perf_counter() if started is None else started
    exception, length = None, 0
    try:
        values, _, _ = client.infer_arrays(model, arrays, version)
        length = int(sum(v.nbytes for v in values.values() if v.dtype != object))
    except Exception as error:  # noqa: BLE001 - every failure is a Locust failure, not a crash
        exception = error
    environment.events.request.fire(
        request_type=client.protocol,
        name=model,
        response_time=(time.perf_counter() - start) * 1000,
        response_length=length,
        exception=exception,
        context={"rows": len(next(iter(arrays.values())))},
    )


def _strip_scheme(host: str) -> str:
    for scheme in ("grpc://", "http://", "https://"):
        if host.startswith(scheme):
            return host[len(scheme) :].rstrip("/")
    return host.rstrip("/")


class TritonUser(User):
    """Abstract: one closed-loop Triton caller. Subclasses set `protocol`; the rest may come from the environment.

    Checks in __init__ that it has a host, a known protocol, a served model and inputs it can build, and
    raises UsageError naming what is wrong otherwise.
    """

    abstract = True
    wait_time = constant(0)  # back to back: closed loop
    protocol: str = ""
    model: str | None = None
    batch_rows: int | None = None
    data: str | None = None
    version: str = ""
    payload_count: int = 64
    _cache: dict = {}  # (host, protocol, model, version, rows, data) -> (meta, payloads), per process

    def __init__(self, environment):
        super().__init__(environment)
        if self.protocol not in PROTOCOLS:
            raise UsageError(f"{type(self).__name__}.protocol is {self.protocol!r}; expected one of {PROTOCOLS}")
        if not self.host:
            raise UsageError("no host: pass --host HOST:PORT (gRPC 8001, HTTP 8000)")
        self.model = self.model or os.environ.get("TRITONKIT_MODEL") or None
        rows = self.batch_rows or os.environ.get("TRITONKIT_BATCH_ROWS") or 1
        try:
            self.batch_rows = int(rows)
        except ValueError:
            raise UsageError(f"TRITONKIT_BATCH_ROWS is {rows!r}; expected a whole number >= 1") from None
        self.data = self.data or os.environ.get("TRITONKIT_DATA") or None
        self.version = self.version or os.environ.get("TRITONKIT_VERSION", "")
        self.client = TritonClient(_strip_scheme(self.host), protocol=self.protocol)
        _open_clients[id(self.client)] = self.client
        try:
            if self.model is None:
                self.model = self._only_model()
            key = (self.host, self.protocol, self.model, self.version, self.batch_rows, self.data)
            if key not in TritonUser._cache:
                meta = self.client.metadata(self.model, self.version)
                TritonUser._cache[key] = (meta, build_payloads(meta, self.batch_rows, self.data, self.payload_count))
        except Exception:
            close_client(self.client)
            raise
        self.meta, self.payloads = TritonUser._cache[key]
        self._next = 0

    def _only_model(self) -> str:
        try:  # Triton can restrict this API (tritonkit serve does by default)
            models = self.client.models()
        except Exception as e:
            raise UsageError(f"set TRITONKIT_MODEL: the server did not list its models ({e})") from e
        ready = sorted({m["name"] for m in models if m.get("state", "READY") == "READY"})
        if len(ready) != 1:
            raise UsageError(f"set TRITONKIT_MODEL: the server serves {len(ready)} models ({', '.join(ready)})")
        return ready[0]

    @task
    def infer(self) -> None:
        arrays = self.payloads[self._next % len(self.payloads)]
        self._next += 1
        infer_and_report(self.environment, self.client, self.model, arrays, self.version)

    def on_stop(self) -> None:
        close_client(self.client)


_PROTOCOL = os.environ.get("TRITONKIT_PROTOCOL", "grpc").lower()
if _PROTOCOL not in (*PROTOCOLS, "both"):
    raise UsageError(f"TRITONKIT_PROTOCOL is {_PROTOCOL!r}; expected grpc, http or both")


class GrpcTritonUser(TritonUser):
    """tritonclient.grpc; runs under `locust -f` when TRITONKIT_PROTOCOL is grpc (default) or both."""

    abstract = _PROTOCOL not in ("grpc", "both")
    protocol = "grpc"


class HttpTritonUser(TritonUser):
    """tritonclient.http (binary tensors); runs under `locust -f` when TRITONKIT_PROTOCOL is http or both."""

    abstract = _PROTOCOL not in ("http", "both")
    protocol = "http"


def user_class(protocol: str, model: str, batch_rows: int = 1, data: str | None = None, version: str = "") -> type:
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
            "__module__": __name__,
        },
    )
