"""Triton inside Spark, for your own PySpark jobs: `TritonUDF`, `score_frame`, `session`, `run_score`.

The engine lives beside `score` and `watch` in `tritonkit.clients` (`spark_udf`: the column function
and its executors; `spark_job`: the session, the input and the nightly job); this module is the
short import path for users. Needs the `spark` extra (pyspark 4.1+) and Java 17+.
"""

from tritonkit.extras import requires

requires("spark", "pyspark", what="tritonkit.spark")

from tritonkit.clients.spark_job import (  # noqa: E402
    SparkReport,
    prepare_environment,
    read_input,
    run_score,
    score_frame,
    session,
)
from tritonkit.clients.spark_udf import ERROR_COLUMN, TritonUDF  # noqa: E402

__all__ = [
    "ERROR_COLUMN",
    "SparkReport",
    "TritonUDF",
    "prepare_environment",
    "read_input",
    "run_score",
    "score_frame",
    "session",
]
