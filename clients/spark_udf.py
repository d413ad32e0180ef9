"""Triton inside Spark, executor side: a model as an Arrow column function (`TritonUDF`).

Spark reads, partitions and writes; Triton does the model work. `TritonUDF(model, endpoint)` fetches
the model's metadata once on the driver and becomes an Arrow UDF (`pyspark.sql.functions.arrow_udf`,
the Arrow-native form of a pandas UDF): each Python worker process keeps one client and one event
loop for all its batches, sends requests of up to max_batch_size rows with several in flight, and
retries transient errors as `tritonkit score` does (`tritonkit.clients.bulk`). Columns map to inputs
exactly as in `score` (`tritonkit.clients.mapping`), and results are assembled by the same function
(`tritonkit.clients.results.assemble`): a row that fails validation or inference gets null outputs
and its reason in `error`, and the task goes on. A server still unavailable after the retries fails
the task, so Spark retries it instead of writing empty rows.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from tritonkit.clients import mapping
from tritonkit.clients.bulk import BULK_TIMEOUT_S, AsyncInferer, infer_rows
from tritonkit.clients.endpoint import Endpoint
from tritonkit.clients.metadata import ModelMeta
from tritonkit.clients.realtime import TritonClient
from tritonkit.clients.results import Postprocess, assemble, output_column
from tritonkit.errors import UsageError

try:
    from pyspark.accumulators import AccumulatorParam
    from pyspark.sql import Column, DataFrame
    from pyspark.sql import functions as F
    from pyspark.sql import types as T
    from pyspark.sql.functions import arrow_udf
except ImportError as e:  # pyspark missing, or older than 4.1 (no arrow_udf)
    raise UsageError(f"the Spark engine needs pyspark 4.1 or later ({e}): pip install 'tritonkit[spark]'") from e

logger = logging.getLogger(__name__)

ERROR_COLUMN = "error"
TABLE_PREFIX = "table:"
# Triton datatype -> (Spark type, the Arrow type Spark expects for it). Spark has no unsigned or half types.
_TYPES = {
    "FP32": (T.FloatType(), pa.float32()),
    "FP16": (T.FloatType(), pa.float32()),
    "FP64": (T.DoubleType(), pa.float64()),
    "INT64": (T.LongType(), pa.int64()),
    "INT32": (T.IntegerType(), pa.int32()),
    "INT16": (T.ShortType(), pa.int16()),
    "INT8": (T.ByteType(), pa.int8()),
    "UINT8": (T.ShortType(), pa.int16()),
    "UINT16": (T.IntegerType(), pa.int32()),
    "UINT32": (T.LongType(), pa.int64()),
    "BOOL": (T.BooleanType(), pa.bool_()),
    "BYTES": (T.StringType(), pa.string()),
}


@dataclass(frozen=True)
class _Config:
    """Everything an executor needs, built on the driver and shipped with the UDF (picklable)."""

    endpoint: Endpoint
    version: str
    meta: ModelMeta
    specs: tuple[mapping.InputColumns, ...]
    post: Postprocess
    fields: tuple[tuple[str, pa.DataType, bool], ...]  # (name, Arrow type, is array) of the struct, in order
    batch: int
    concurrency: int
    prefetch: int

    @property
    def cache_key(self) -> tuple:
        """Which worker-wide client and semaphore this UDF shares (same server, model and concurrency)."""
        return (self.endpoint, self.version, self.meta.name, self.concurrency)


class _Counts(AccumulatorParam):
    """Adds dicts of numbers and unions sets: per-task statistics, gathered on the driver."""

    def zero(self, value):
        return {}

    def addInPlace(self, total, more):
        for key, value in more.items():
            if isinstance(value, set):
                total[key] = total.get(key, set()) | value
            else:
                total[key] = total.get(key, 0) + value
        return total


class TritonUDF:
    """A model on a Triton server as a Spark column function.

    `predict = TritonUDF("churn", "triton:8001", threshold=0.5)`, then `frame.select(predict(frame))`
    (columns mapped from the frame's names) or `predict("a", "b", ...)` (those columns). The result is
    a struct: every model output (vectors as arrays), `predicted_label` / `segment` when asked,
    `model_version`, `predicted_at` and `error` (null when the row was scored).
    """

    def __init__(
        self,
        model: str,
        endpoint: Endpoint | str = "127.0.0.1:8001",
        *,
        version: str = "",
        maps: list[str] = (),
        threshold: float | None = None,
        score_output: str | None = None,
        segments: list[str] = (),
        segment_bounds: list[float] = (),
        batch_size: int | None = None,
        concurrency: int = 4,
        prefetch: int = 2,
        stats=None,
        **endpoint_settings,
    ):
        if concurrency < 1 or prefetch < 0 or (batch_size is not None and batch_size < 1):
            raise UsageError(
                f"concurrency {concurrency}, prefetch {prefetch}, batch_size {batch_size}: expected "
                "concurrency >= 1, prefetch >= 0, batch_size >= 1"
            )
        if isinstance(endpoint, str):
            endpoint = Endpoint(endpoint, **{"timeout_s": BULK_TIMEOUT_S, **endpoint_settings})
        elif endpoint_settings:
            endpoint = endpoint.with_(**endpoint_settings)
        self.endpoint = endpoint
        with TritonClient(endpoint) as client:
            self.meta = client.metadata(model, version)
        self.maps = mapping.parse_maps(list(maps))
        self.post = Postprocess.build(self.meta, threshold, segments, segment_bounds, score_output)
        fields = _fields(self.meta, self.post)
        self.return_type = T.StructType([T.StructField(name, spark) for name, spark, _, _ in fields])
        self._arrow_fields = tuple((name, arrow, array) for name, _, arrow, array in fields)
        self._settings = {
            "endpoint": endpoint,
            "version": version,
            "batch": min(batch_size or self.meta.max_batch_size, self.meta.max_batch_size),
            "concurrency": concurrency,
            "prefetch": prefetch,
        }
        self.stats = stats

    def columns(self, available: list[str]) -> list[str]:
        """The columns that feed the model, in input order; UsageError naming what is missing."""
        specs = mapping.plan(self.meta, list(available), self.maps)
        return list(dict.fromkeys(c for s in specs for c in s.columns))

    def __call__(self, frame_or_column: DataFrame | str, *columns: str) -> Column:
        names = frame_or_column.columns if isinstance(frame_or_column, DataFrame) else [frame_or_column, *columns]
        specs = tuple(mapping.plan(self.meta, names, self.maps))
        config = _Config(meta=self.meta, specs=specs, post=self.post, fields=self._arrow_fields, **self._settings)
        stats = self.stats

        def triton(batches: Iterator[pa.Array]) -> Iterator[pa.Array]:
            return _score_batches(config, batches, stats)

        udf = arrow_udf(triton, self.return_type).asNondeterministic()
        return udf(F.struct(*[F.col(_quoted(c)) for c in dict.fromkeys(c for s in specs for c in s.columns)]))


def _fields(meta: ModelMeta, post: Postprocess) -> list[tuple[str, T.DataType, pa.DataType, bool]]:
    """(name, Spark type, Arrow type, is array) of the result struct; UsageError for what Spark cannot hold."""
    fields = []
    for tensor in meta.outputs:
        if tensor.datatype not in _TYPES:
            raise UsageError(
                f"output `{tensor.name}` of model `{meta.name}` is {tensor.datatype}; the Spark engine "
                f"takes {', '.join(_TYPES)}"
            )
        spark, arrow = _TYPES[tensor.datatype]
        inner = tensor.shape[1:]
        array = any(d < 1 for d in inner) or int(np.prod(inner or (1,))) != 1
        fields.append((tensor.name, T.ArrayType(spark) if array else spark, pa.list_(arrow) if array else arrow, array))
    if post.threshold is not None:
        fields.append(("predicted_label", T.ByteType(), pa.int8(), False))
    if post.segments:
        fields.append(("segment", T.StringType(), pa.string(), False))
    fields += [
        ("model_version", T.StringType(), pa.string(), False),
        ("predicted_at", T.TimestampType(), pa.timestamp("us", tz="UTC"), False),
        (ERROR_COLUMN, T.StringType(), pa.string(), False),
    ]
    names = [f[0] for f in fields]
    clash = sorted({n for n in names if names.count(n) > 1} | ({"model_name"} & set(names)))
    if clash:
        raise UsageError(
            f"model `{meta.name}` has an output named {clash[0]!r}, a column the Spark engine adds; "
            "rename the output in the model's config"
        )
    return fields


def _quoted(column: str) -> str:
    return "`" + column.replace("`", "``") + "`"


# ---- executor side: one event loop thread and one client per Python worker process ----

_LOCK = threading.Lock()
_LOOP: tuple[int, asyncio.AbstractEventLoop] | None = None
_CLIENTS: dict[tuple, tuple[AsyncInferer, asyncio.Semaphore]] = {}


def _loop() -> asyncio.AbstractEventLoop:
    global _LOOP
    with _LOCK:
        if _LOOP is None or _LOOP[0] != os.getpid():  # a forked worker starts its own
            loop = asyncio.new_event_loop()
            threading.Thread(target=loop.run_forever, name="tritonkit-spark-loop", daemon=True).start()
            _LOOP = (os.getpid(), loop)
            _CLIENTS.clear()
        return _LOOP[1]


def _client(config: _Config, counts: dict) -> tuple[AsyncInferer, asyncio.Semaphore]:
    loop = _loop()
    if config.cache_key not in _CLIENTS:

        async def make():
            inferer = AsyncInferer(config.endpoint, config.meta, version=config.version)
            return inferer, asyncio.Semaphore(config.concurrency)

        _CLIENTS[config.cache_key] = asyncio.run_coroutine_threadsafe(make(), loop).result()
        counts["clients"] += 1
        logger.info("worker %d: Triton client for %s at %s", os.getpid(), config.meta.name, config.endpoint.url)
    return _CLIENTS[config.cache_key]


def _score_batches(config: _Config, batches: Iterator[pa.Array], stats) -> Iterator[pa.Array]:
    """The UDF body: Arrow struct batches in, result struct batches out, in order, `prefetch` batches ahead."""
    began = time.perf_counter()
    counts = {
        "tasks": 1,
        "batches": 0,
        "rows": 0,
        "rows_rejected": 0,
        "requests": 0,
        "retries": 0,
        "clients": 0,
        "convert_s": 0.0,
        "wait_s": 0.0,
        "assemble_s": 0.0,
        "task_s": 0.0,
        "workers": {os.getpid()},
    }
    inferer, sem = _client(config, counts)
    retries = inferer.retries
    pending: deque = deque()
    try:
        for batch in batches:
            start = time.perf_counter()
            table = pa.Table.from_batches([pa.RecordBatch.from_struct_array(batch)])
            arrays, valid, reasons = mapping.convert(table, list(config.specs))
            future = asyncio.run_coroutine_threadsafe(
                infer_rows(inferer, sem, arrays, int(valid.sum()), config.batch), _loop()
            )
            pending.append((len(table), valid, reasons, future))
            counts["convert_s"] += time.perf_counter() - start
            while len(pending) > config.prefetch:
                yield _finish(config, counts, *pending.popleft())
        while pending:
            yield _finish(config, counts, *pending.popleft())
    finally:
        for *_, future in pending:
            future.cancel()
        counts["retries"] = inferer.retries - retries
        counts["task_s"] = time.perf_counter() - began
        del inferer.latencies_ms[:]  # the long-lived client would otherwise keep every latency
        if stats is not None:
            stats.add(counts)


def _finish(config: _Config, counts: dict, n: int, valid: np.ndarray, reasons: dict[int, str], future) -> pa.Array:
    """One batch's result struct: `assemble`'s scored rows in place, nulls and an `error` for the others."""
    start = time.perf_counter()
    results = assemble(config.meta, config.post, valid, reasons, future.result())
    waited = time.perf_counter()
    predicted_at = time.time()
    index = np.full(n, -1, dtype=np.int64)
    index[results.scored] = np.arange(len(results.scored))
    take = pa.array(index, mask=index < 0)
    columns = {
        name: _column(results.outputs[name], arrow, array)
        for name, arrow, array in config.fields
        if name in results.outputs
    }
    columns.update({k: v.cast(pa.string()) if pa.types.is_dictionary(v.type) else v for k, v in results.extra.items()})
    columns["model_version"] = pa.array(results.model_versions, pa.string())
    arrays = []
    for name, arrow, _ in config.fields:
        if name == "predicted_at":
            arrays.append(pa.repeat(pa.scalar(int(predicted_at * 1e6), arrow), n))
        elif name == ERROR_COLUMN:
            arrays.append(pa.array([results.errors.get(i) for i in range(n)], pa.string()))
        elif len(results.scored) == 0:
            arrays.append(pa.nulls(n, arrow))
        else:
            arrays.append(columns[name].cast(arrow).take(take))
    counts["batches"] += 1
    counts["rows"] += n
    counts["rows_rejected"] += len(results.errors)
    counts["requests"] += results.requests
    counts["wait_s"] += waited - start
    counts["assemble_s"] += time.perf_counter() - waited
    return pa.StructArray.from_arrays(arrays, fields=[pa.field(name, arrow) for name, arrow, _ in config.fields])


def _column(values: np.ndarray, arrow: pa.DataType, array: bool) -> pa.Array:
    """`score`'s column for one output, as the Arrow type Spark expects (vectors as lists)."""
    column = output_column(values)
    if array and not (pa.types.is_fixed_size_list(column.type) or pa.types.is_list(column.type)):
        column = pa.FixedSizeListArray.from_arrays(column, 1)  # a variable-width output that came out 1 wide
    return column.cast(arrow)
