"""What a `score` run is asked to do and what it did: `ScoreOptions` (checked on creation, so Python callers
and the command line get the same errors) and `ScoreReport`."""

from __future__ import annotations

import os
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tritonkit.clients import storage
from tritonkit.clients.bulk import BULK_TIMEOUT_S
from tritonkit.clients.endpoint import Endpoint
from tritonkit.errors import UsageError
from tritonkit.extras import requires

RUN_ID = re.compile(r"[A-Za-z0-9._-]{1,128}")
STAMP = re.compile(r"(\d{4})(\d{2})(\d{2})T\d{6}Z")

ENGINES = ("local", "spark")


@dataclass
class ScoreOptions:
    """One `score` run. Cross-option rules are checked here, so Python callers and the CLI get the same errors.

    `input` is a Parquet/CSV/JSON Lines file or folder, local or in object storage (s3://, gs://,
    abfs://; Spark: also `table:NAME`); it may be None only in a `Watcher`'s base options. `output` (and
    `rejects`) may hold the template keys {run_id}, {date}, {shard} and {shards} (see `expand`).
    `endpoint` (or a HOST:PORT alone) defaults to a bulk budget of 120 s per request.
    """

    model: str
    input: Path | str | None
    output: Path | str
    endpoint: Endpoint | str = field(default_factory=lambda: Endpoint(timeout_s=BULK_TIMEOUT_S))
    version: str = ""
    concurrency: int = 4
    batch_size: int | None = None  # rows per request; default the model's max_batch_size
    chunk_rows: int = 65_536
    resume: bool = False
    shard: tuple[int, int] = (0, 1)
    id_column: str | None = None
    maps: list[str] = field(default_factory=list)
    rejects: Path | str | None = None
    format: str | None = None
    threshold: float | None = None
    score_output: str | None = None
    segments: list[str] = field(default_factory=list)  # names, one more than bounds
    segment_bounds: list[float] = field(default_factory=list)
    store: str | None = None  # prediction store URL (sqlite:///..., redis://...): scored rows go there too
    features: bool = False  # with store: each scored row's model inputs go to the online feature store too
    engine: str = "local"
    spark_master: str | None = None
    spark_partitions: int | None = None
    run_id: str | None = None  # {run_id}: this value, else TRITONKIT_RUN_ID, else the UTC start time
    run_id_given: bool = field(default=False, init=False, repr=False)  # by the caller or TRITONKIT_RUN_ID

    def __post_init__(self):
        if isinstance(self.endpoint, str):  # a URL alone: gRPC, the bulk budget
            self.endpoint = Endpoint(self.endpoint, timeout_s=BULK_TIMEOUT_S)
        if self.engine not in ENGINES:
            raise UsageError(f"--engine is {self.engine!r}; expected local or spark")
        if self.features and not self.store:
            raise UsageError("--features writes the rows' features beside their predictions: it needs --store")
        if self.concurrency < 1 or self.chunk_rows < 1 or (self.batch_size is not None and self.batch_size < 1):
            raise UsageError(
                f"--concurrency {self.concurrency}, --chunk-rows {self.chunk_rows}, --batch-size {self.batch_size}: "
                "expected whole numbers of 1 or more"
            )
        index, count = self.shard
        if count < 1 or not 0 <= index < count:
            raise UsageError(f"--shard {index}/{count}: expected 0 <= I < N")
        if self.engine == "local":  # noqa: SIM102 - one rule per engine
            if self.spark_master or self.spark_partitions:
                raise UsageError(
                    f"--master {self.spark_master!r} / --partitions {self.spark_partitions!r} apply to "
                    "--engine spark only"
                )
        self._expand_templates()
        if self.engine == "local":
            self.output = self.output if storage.is_uri(self.output) else Path(self.output)
            self.input = self.input if self.input is None or storage.is_uri(self.input) else Path(self.input)
            if self.rejects is not None and not storage.is_uri(self.rejects):
                self.rejects = Path(self.rejects)
        else:
            requires("spark", "pyspark", what="--engine spark")
            self.input, self.output = (spark_uri(v) for v in (self.input, self.output))
            from tritonkit.clients.spark_job import check_options

            check_options(self)

    def _expand_templates(self) -> None:
        explicit = self.run_id or os.environ.get("TRITONKIT_RUN_ID")
        if explicit and not RUN_ID.fullmatch(explicit):
            raise UsageError(f"run id {explicit!r}: expected letters, digits, '.', '_' and '-' (it becomes a path)")
        self.run_id = explicit or time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        self.run_id_given = bool(explicit)
        if self.resume and not explicit and "{run_id}" in str(self.output):
            raise UsageError(
                f"--resume of --output {self.output}: {{run_id}} must name the run being resumed; set "
                "TRITONKIT_RUN_ID (or --run-id) to its run id (the first run printed it in its output path)"
            )
        self.output = self.expand(self.output)
        if self.rejects is not None:
            self.rejects = self.expand(self.rejects)

    def expand(self, text: Path | str) -> Path | str:
        """`text` with the template keys filled in: {run_id}, {date} (UTC YYYY-MM-DD of the run: from
        TRITONKIT_RUN_DATE, else from a run id of the form 20261126T134500Z, else today), {shard}, {shards}."""
        value = str(text)
        if "{" not in value:
            return text
        date = os.environ.get("TRITONKIT_RUN_DATE", "")
        if not date:
            stamp = STAMP.fullmatch(self.run_id or "")
            date = f"{stamp[1]}-{stamp[2]}-{stamp[3]}" if stamp else time.strftime("%Y-%m-%d", time.gmtime())
        keys = {"run_id": self.run_id, "date": date, "shard": self.shard[0], "shards": self.shard[1]}
        try:
            value = value.format(**keys)
        except (KeyError, IndexError, ValueError) as e:
            raise UsageError(
                f"{text}: {e} is not a template key (or a stray brace); the keys are "
                f"{', '.join('{' + k + '}' for k in keys)}"
            ) from None
        return type(text)(value) if isinstance(text, Path) else value


@dataclass
class ScoreReport:
    """What a run did; `complete` when every row read was scored or rejected."""

    model: str
    model_version: str
    rows_read: int = 0
    rows_scored: int = 0
    rows_rejected: int = 0
    rows_resumed: int = 0  # of rows_read, those finished by an earlier run
    wall_s: float = 0.0
    rows_per_s: float = 0.0
    latency_ms: dict[str, float] = field(default_factory=dict)
    requests: int = 0
    retries: int = 0
    shard: str = "0/1"
    output: str = ""
    rejects: str = ""

    @property
    def complete(self) -> bool:
        return self.rows_read == self.rows_scored + self.rows_rejected

    def to_dict(self) -> dict:
        return asdict(self)


def spark_uri(value):
    """Spark reads and writes S3 through hadoop-aws's s3a://; gs:// and abfs(s):// go to their connectors as is."""
    if isinstance(value, str) and value.startswith("s3://"):
        return "s3a://" + value.removeprefix("s3://")
    return value


def parse_shard(text: str) -> tuple[int, int]:
    try:
        index, count = (int(p) for p in text.split("/"))
    except ValueError:
        raise UsageError(f"--shard {text!r} is not I/N (for example 0/4)") from None
    if count < 1 or not 0 <= index < count:
        raise UsageError(f"--shard {text!r}: expected 0 <= I < N")
    return index, count
