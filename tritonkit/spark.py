"""Triton inside Spark: a column function for DataFrames, and the nightly job behind `score --engine spark`.

Spark reads, partitions and writes; Triton does the model work. `TritonUDF(model, url)` fetches the
model's metadata once on the driver and becomes an Arrow UDF (`pyspark.sql.functions.arrow_udf`, the
Arrow-native form of a pandas UDF): each Python worker process keeps one gRPC client and one event
loop for all its batches, sends requests of up to max_batch_size rows with several in flight, and
retries transient errors as `tritonkit score` does (`tritonkit.clients.bulk.AsyncInferer`). Columns
map to inputs exactly as in `score` (`tritonkit.clients.mapping`); a row that fails validation or
inference gets null outputs and its reason in `error`, and the task goes on. A server still
unavailable after the retries fails the task, so Spark retries it instead of writing empty rows.

    spark-submit --master MASTER tritonkit/spark.py --model churn --input IN --output OUT ...

runs `tritonkit score --engine spark` with the same options (this file is the spark-submit entry).
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from urllib.parse import unquote, urlparse

import numpy as np
import pyarrow as pa

from tritonkit.clients import mapping
from tritonkit.clients.bulk import AsyncInferer, infer_isolating
from tritonkit.clients.metadata import ModelMeta
from tritonkit.clients.realtime import TritonClient
from tritonkit.clients.score import Postprocess, ScoreOptions, ScoreReport, output_column
from tritonkit.errors import UsageError

try:
    from pyspark.accumulators import AccumulatorParam
    from pyspark.errors import AnalysisException
    from pyspark.sql import Column, DataFrame, SparkSession
    from pyspark.sql import functions as F
    from pyspark.sql import types as T
    from pyspark.sql.functions import arrow_udf
except ImportError as e:  # pyspark missing, or older than 4.1 (no arrow_udf)
    raise UsageError(f"tritonkit.spark needs pyspark 4.1 or later ({e}): pip install 'tritonkit[spark]'") from e

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

    url: str
    protocol: str
    version: str
    timeout_s: float
    ssl: bool
    root_certificates: str | None
    headers: tuple[tuple[str, str], ...]
    meta: ModelMeta
    specs: tuple[mapping.InputColumns, ...]
    post: Postprocess = field(compare=False)
    fields: tuple[tuple[str, pa.DataType, bool], ...]  # (name, Arrow type, is array) of the struct, in order
    batch: int
    concurrency: int
    prefetch: int

    @property
    def client_key(self) -> tuple:
        return (
            self.url,
            self.protocol,
            self.version,
            self.ssl,
            self.root_certificates,
            self.headers,
            self.meta.name,
            self.timeout_s,
            self.concurrency,
        )


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
        url: str = "127.0.0.1:8001",
        *,
        version: str = "",
        protocol: str = "grpc",
        maps: list[str] = (),
        threshold: float | None = None,
        score_output: str | None = None,
        segments: list[str] = (),
        segment_bounds: list[float] = (),
        batch_size: int | None = None,
        concurrency: int = 4,
        prefetch: int = 2,
        timeout_s: float = 120.0,
        ssl: bool = False,
        root_certificates: str | None = None,
        headers: dict[str, str] | None = None,
        stats=None,
    ):
        if concurrency < 1 or prefetch < 0 or (batch_size is not None and batch_size < 1):
            raise UsageError(
                f"concurrency {concurrency}, prefetch {prefetch}, batch_size {batch_size}: expected "
                "concurrency >= 1, prefetch >= 0, batch_size >= 1"
            )
        with TritonClient(
            url, protocol=protocol, ssl=ssl, root_certificates=root_certificates, headers=dict(headers or {})
        ) as client:
            self.meta = client.metadata(model, version)
        self.maps = mapping.parse_maps(list(maps))
        self.post = Postprocess(
            ScoreOptions(
                model=model,
                input=Path(),
                output=Path(),
                threshold=threshold,
                score_output=score_output,
                segments=list(segments),
                segment_bounds=list(segment_bounds),
            ),
            self.meta,
        )
        fields = _fields(self.meta, self.post)
        self.return_type = T.StructType([T.StructField(name, spark) for name, spark, _, _ in fields])
        self._arrow_fields = tuple((name, arrow, array) for name, _, arrow, array in fields)
        self._settings = {
            "url": url,
            "protocol": protocol,
            "version": version,
            "timeout_s": timeout_s,
            "ssl": ssl,
            "root_certificates": root_certificates,
            "headers": tuple(sorted((headers or {}).items())),
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
    if config.client_key not in _CLIENTS:

        async def make():
            return (
                AsyncInferer(
                    config.url,
                    config.meta,
                    protocol=config.protocol,
                    version=config.version,
                    timeout_s=config.timeout_s,
                    ssl=config.ssl,
                    root_certificates=config.root_certificates,
                    headers=dict(config.headers),
                ),
                asyncio.Semaphore(config.concurrency),
            )

        _CLIENTS[config.client_key] = asyncio.run_coroutine_threadsafe(make(), loop).result()
        counts["clients"] += 1
        logger.info("worker %d: Triton client for %s at %s", os.getpid(), config.meta.name, config.url)
    return _CLIENTS[config.client_key]


async def _infer_batch(inferer, sem, arrays: dict[str, np.ndarray], rows: int, size: int):
    results = await asyncio.gather(
        *(
            infer_isolating(inferer, sem, {k: v[s : s + size] for k, v in arrays.items()}, s)
            for s in range(0, rows, size)
        )
    )
    done = sorted((d for r in results for d in r[0]), key=lambda d: d[0])
    return done, [f for r in results for f in r[1]], sum(r[2] for r in results)


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
                _infer_batch(inferer, sem, arrays, int(valid.sum()), config.batch), _loop()
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
    start = time.perf_counter()
    done, failed, requests = future.result()
    waited = time.perf_counter()
    predicted_at = time.time()
    valid_rows = np.flatnonzero(valid)
    keep = np.ones(len(valid_rows), dtype=bool)
    errors = dict(reasons)
    for position, reason in failed:
        keep[position] = False
        errors[int(valid_rows[position])] = f"inference failed: {reason}"
    scored = valid_rows[keep]
    index = np.full(n, -1, dtype=np.int64)
    index[scored] = np.arange(len(scored))
    take = pa.array(index, mask=index < 0)
    outputs = {t.name: np.concatenate([d[1][t.name] for d in done]) for t in config.meta.outputs} if done else {}
    columns = {name: _column(outputs[name], arrow, array) for name, arrow, array in config.fields if name in outputs}
    columns.update(
        {
            k: v.cast(pa.string()) if pa.types.is_dictionary(v.type) else v
            for k, v in (config.post.columns(outputs).items() if done else ())
        }
    )
    columns["model_version"] = pa.array(
        np.repeat([d[2] for d in done], [len(next(iter(d[1].values()))) for d in done]).astype(object), pa.string()
    )
    arrays = []
    for name, arrow, _ in config.fields:
        if name == "predicted_at":
            arrays.append(pa.repeat(pa.scalar(int(predicted_at * 1e6), arrow), n))
        elif name == ERROR_COLUMN:
            arrays.append(pa.array([errors.get(i) for i in range(n)], pa.string()))
        elif len(scored) == 0:
            arrays.append(pa.nulls(n, arrow))
        else:
            arrays.append(columns[name].cast(arrow).take(take))
    counts["batches"] += 1
    counts["rows"] += n
    counts["rows_rejected"] += len(errors)
    counts["requests"] += requests
    counts["wait_s"] += waited - start
    counts["assemble_s"] += time.perf_counter() - waited
    return pa.StructArray.from_arrays(arrays, fields=[pa.field(name, arrow) for name, arrow, _ in config.fields])


def _column(values: np.ndarray, arrow: pa.DataType, array: bool) -> pa.Array:
    """`score`'s column for one output, as the Arrow type Spark expects (vectors as lists)."""
    column = output_column(values)
    if array and not (pa.types.is_fixed_size_list(column.type) or pa.types.is_list(column.type)):
        column = pa.FixedSizeListArray.from_arrays(column, 1)  # a variable-width output that came out 1 wide
    return column.cast(arrow)


# ---- driver side: the session and the batch job ----


def prepare_environment() -> None:
    """Workers run this interpreter (PYSPARK_PYTHON, unless set); JAVA_HOME from `java` on PATH, unless set."""
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    if "PYSPARK_GATEWAY_PORT" in os.environ:  # under spark-submit: the JVM is already running
        return
    java = Path(os.environ["JAVA_HOME"]) / "bin" / "java" if os.environ.get("JAVA_HOME") else shutil.which("java")
    if not java or not Path(java).exists():
        raise UsageError(
            "Spark needs Java 17 or later and found none (JAVA_HOME unset, no `java` on PATH); "
            "install it, e.g. apt-get install openjdk-17-jre-headless"
        )
    text = subprocess.run([str(java), "-version"], check=False, capture_output=True, text=True).stderr
    found = re.search(r'version "(\d+)', text)
    if not found or int(found.group(1)) < 17:
        raise UsageError(f"Spark 4 needs Java 17 or later; {java} is {text.splitlines()[0] if text else 'unknown'}")
    os.environ.setdefault("JAVA_HOME", str(Path(os.path.realpath(java)).parent.parent))


def session(
    master: str | None = None, conf: dict[str, str] | None = None, app_name: str = "tritonkit score"
) -> SparkSession:
    """A SparkSession: `master` (default local[*], or spark-submit's own when launched by it)."""
    prepare_environment()
    builder = SparkSession.builder.appName(app_name)
    if master or "PYSPARK_GATEWAY_PORT" not in os.environ:
        builder = builder.master(master or "local[*]")
    for key, value in (conf or {}).items():
        builder = builder.config(key, value)
    return builder.getOrCreate()


def score_frame(
    frame: DataFrame, predict: TritonUDF, id_column: str | None = None, partitions: int | None = None
) -> DataFrame:
    """`tritonkit score`'s output columns, plus `error`, for every row of `frame`.

    Without `id_column` the id is `row`, the row's number in the input as `score` counts it (files
    sorted by path, rows in file order): `frame` must then be a Parquet read, not a derived frame.
    """
    needed = predict.columns(frame.columns)
    if id_column is not None and id_column not in frame.columns:
        raise UsageError(
            f"--id-column {id_column!r} is not a column of the input; its columns: {', '.join(frame.columns)}"
        )
    name = id_column or "row"
    ids = F.col(_quoted(id_column)) if id_column else _row_numbers(frame)
    base = frame.select(ids.alias(name), *[F.col(_quoted(c)) for c in needed if c != name])
    if partitions:
        base = base.repartition(partitions)
    result = base.select(F.col(_quoted(name)), predict(base).alias("__triton"))
    extra = [n for n in ("predicted_label", "segment") if n in predict.return_type.names]
    return result.select(
        F.col(_quoted(name)),
        *[F.col(f"__triton.{_quoted(t.name)}").alias(t.name) for t in predict.meta.outputs],
        *[F.col(f"__triton.{n}").alias(n) for n in extra],
        F.lit(predict.meta.name).alias("model_name"),
        *[F.col(f"__triton.{n}").alias(n) for n in ("model_version", "predicted_at", ERROR_COLUMN)],
    )


def _row_numbers(frame: DataFrame) -> Column:
    """Global row numbers: the file's offset (files sorted by path, as `score` reads them) + row_index."""
    try:
        counts = frame.groupBy(F.col("_metadata.file_path").alias("file")).count().collect()
    except AnalysisException as e:
        raise UsageError("the input is not a Parquet read, so rows have no numbers: pass --id-column") from e
    offsets, total = [], 0
    for row in sorted(counts, key=lambda r: PurePosixPath(unquote(urlparse(r["file"]).path))):
        offsets += [F.lit(row["file"]), F.lit(total)]
        total += row["count"]
    if not offsets:
        return F.col("_metadata.row_index")
    return F.create_map(*offsets)[F.col("_metadata.file_path")] + F.col("_metadata.row_index")


def read_input(spark: SparkSession, source: str | Path) -> DataFrame:
    """`table:NAME` reads a table; a local Parquet file or folder reads the files `score` would; a URI as is."""
    text = str(source)
    if text.startswith(TABLE_PREFIX):
        return spark.table(text[len(TABLE_PREFIX) :])
    if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*://", text) and not text.startswith("file://"):
        return spark.read.parquet(text)
    from tritonkit.clients import sources

    files = sources.input_files(Path(text.removeprefix("file://")))
    formats = {sources.input_format(f) for f in files}
    if formats != {"parquet"}:
        raise UsageError(
            f"--engine spark reads Parquet or a table (table:NAME); input {text} is "
            f"{', '.join(sorted(formats))}. Use --engine local for CSV and JSON Lines"
        )
    return spark.read.parquet(*[str(f.resolve()) for f in files])


@dataclass
class SparkReport(ScoreReport):
    """`score`'s report, plus where the executors' time went (`stats`, summed over tasks)."""

    stats: dict = field(default_factory=dict)


def _check(options: ScoreOptions) -> None:
    defaults = ScoreOptions(model="", input=Path(), output=Path())
    for option, name, hint in (
        ("shard", "--shard", "Spark partitions the input itself"),
        ("resume", "--resume", "Spark retries failed tasks; rerun a failed job"),
        ("store", "--store", "load the Parquet output into the store"),
        ("rejects", "--rejects", "rejected rows stay in the output with `error` set"),
        ("chunk_rows", "--chunk-rows", "Spark's partitions are the unit of work"),
    ):
        value = getattr(options, option)
        if value != getattr(defaults, option):
            shown = "/".join(map(str, value)) if option == "shard" else value
            raise UsageError(f"{name} {shown!r} does not apply to --engine spark: {hint}")
    if options.format not in (None, "parquet"):
        raise UsageError(f"--format {options.format!r}: --engine spark writes parquet only")


def run_score(
    options: ScoreOptions, spark: SparkSession | None = None, master: str | None = None, partitions: int | None = None
) -> SparkReport:
    """The nightly job: read Parquet (or `table:NAME`), score through Triton, write Parquet (`score`'s columns)."""
    _check(options)
    if str(options.input).startswith(TABLE_PREFIX) and not options.id_column:
        raise UsageError(f"--input {options.input}: a table's rows have no numbers; pass --id-column")
    if partitions is not None and partitions < 1:
        raise UsageError(f"--partitions {partitions}: expected a positive number of partitions")
    output = str(options.output)
    if "://" not in output and Path(output).exists():
        raise UsageError(f"output {output} already exists; remove it or choose another --output")
    spark = spark or session(master)
    try:
        stats = spark.sparkContext.accumulator({}, _Counts())
    except Exception:  # noqa: BLE001 - Spark Connect has no SparkContext: no statistics
        stats = None
    predict = TritonUDF(
        options.model,
        options.url,
        version=options.version,
        protocol=options.protocol,
        maps=options.maps,
        threshold=options.threshold,
        score_output=options.score_output,
        segments=options.segments,
        segment_bounds=options.segment_bounds,
        batch_size=options.batch_size,
        concurrency=options.concurrency,
        timeout_s=options.timeout_s,
        ssl=options.ssl,
        root_certificates=options.root_certificates,
        headers=options.headers,
        stats=stats,
    )
    frame = score_frame(read_input(spark, options.input), predict, options.id_column, partitions)
    key = "spark.sql.parquet.outputTimestampType"  # predicted_at as timestamp[us, UTC], as `score` writes it
    previous = spark.conf.get(key)
    spark.conf.set(key, "TIMESTAMP_MICROS")
    start = time.perf_counter()
    try:
        frame.write.mode("errorifexists").parquet(output)
    except AnalysisException as e:
        if "already exists" in str(e).lower():
            raise UsageError(f"output {output} already exists; remove it or choose another --output") from e
        raise
    finally:
        spark.conf.set(key, previous)
    wall = time.perf_counter() - start
    summary = (
        spark.read.parquet(output)
        .agg(
            F.count(F.lit(1)).alias("rows"), F.count(ERROR_COLUMN).alias("bad"), F.max("model_version").alias("version")
        )
        .first()
    )
    counts = dict(stats.value) if stats is not None else {}
    counts["workers"] = len(counts.get("workers", ()))
    return SparkReport(
        model=predict.meta.name,
        model_version=summary["version"] or "",
        rows_read=summary["rows"],
        rows_scored=summary["rows"] - summary["bad"],
        rows_rejected=summary["bad"],
        wall_s=round(wall, 3),
        rows_per_s=round(summary["rows"] / wall, 1) if wall else 0.0,
        requests=counts.get("requests", 0),
        retries=counts.get("retries", 0),
        output=output,
        rejects=f"rows of the output with `{ERROR_COLUMN}` set",
        stats=counts,
    )


if __name__ == "__main__":  # spark-submit tritonkit/spark.py ARGS == tritonkit score --engine spark ARGS
    from tritonkit.cli import main

    sys.argv = ["tritonkit", "score", "--engine", "spark", *sys.argv[1:]]
    main()
