"""Triton inside Spark, driver side: the session, the input, and the nightly job behind `score --engine spark`.

`run_score(options)` reads Parquet (or `table:NAME`), scores it through `TritonUDF` and writes
`score`'s columns plus `error` as Parquet. `tritonkit/spark_submit.py` is the spark-submit entry.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from urllib.parse import unquote, urlparse

from tritonkit.clients.score import ScoreOptions, ScoreReport
from tritonkit.clients.spark_udf import ERROR_COLUMN, TritonUDF, _Counts, _quoted
from tritonkit.errors import UsageError

try:
    from pyspark.errors import AnalysisException
    from pyspark.sql import Column, DataFrame, SparkSession
    from pyspark.sql import functions as F
except ImportError as e:  # pyspark missing, or older than 4.1
    raise UsageError(f"the Spark engine needs pyspark 4.1 or later ({e}): pip install 'tritonkit[spark]'") from e

TABLE_PREFIX = "table:"
# Options of `score` that mean nothing to a Spark job, and why.
_LOCAL_ONLY = (
    ("shard", "--shard", "Spark partitions the input itself"),
    ("resume", "--resume", "Spark retries failed tasks; rerun a failed job"),
    ("store", "--store", "load the Parquet output into the store"),
    ("rejects", "--rejects", "rejected rows stay in the output with `error` set"),
    ("chunk_rows", "--chunk-rows", "Spark's partitions are the unit of work"),
)


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


def check_options(options: ScoreOptions) -> None:
    """Refuses `score` options that a Spark job cannot honour, each with the reason (called by ScoreOptions)."""
    defaults = {f.name: f.default for f in dataclasses.fields(ScoreOptions)}
    for option, name, hint in _LOCAL_ONLY:
        value = getattr(options, option)
        if value != defaults[option]:
            shown = "/".join(map(str, value)) if option == "shard" else value
            raise UsageError(f"{name} {shown!r} does not apply to --engine spark: {hint}")
    if options.format not in (None, "parquet"):
        raise UsageError(f"--format {options.format!r}: --engine spark writes parquet only")
    if options.input is None:
        raise UsageError("--engine spark scores one --input; --watch applies to --engine local only")
    if str(options.input).startswith(TABLE_PREFIX) and not options.id_column:
        raise UsageError(f"--input {options.input}: a table's rows have no numbers; pass --id-column")
    if options.spark_partitions is not None and options.spark_partitions < 1:
        raise UsageError(f"--partitions {options.spark_partitions}: expected a positive number of partitions")


def run_score(options: ScoreOptions, spark: SparkSession | None = None) -> SparkReport:
    """The nightly job: read Parquet (or `table:NAME`), score through Triton, write Parquet (`score`'s columns)."""
    check_options(options)
    output = str(options.output)
    if "://" not in output and Path(output).exists():
        raise UsageError(f"output {output} already exists; remove it or choose another --output")
    spark = spark or session(options.spark_master)
    try:
        stats = spark.sparkContext.accumulator({}, _Counts())
    except Exception:  # noqa: BLE001 - Spark Connect has no SparkContext: no statistics
        stats = None
    predict = TritonUDF(
        options.model,
        options.endpoint,
        version=options.version,
        maps=options.maps,
        threshold=options.threshold,
        score_output=options.score_output,
        segments=options.segments,
        segment_bounds=options.segment_bounds,
        batch_size=options.batch_size,
        concurrency=options.concurrency,
        stats=stats,
    )
    frame = score_frame(read_input(spark, options.input), predict, options.id_column, options.spark_partitions)
    return _write(spark, frame, output, predict, stats)


def _write(spark: SparkSession, frame: DataFrame, output: str, predict: TritonUDF, stats) -> SparkReport:
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
