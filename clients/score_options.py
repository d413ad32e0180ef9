"""What a `score` run is asked to do and what it did: `ScoreOptions` (checked on creation, so Python callers
and the command line get the same errors) and `ScoreReport`."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from tritonkit.clients.bulk import BULK_TIMEOUT_S
from tritonkit.clients.endpoint import Endpoint
from tritonkit.errors import UsageError

ENGINES = ("local", "spark")


@dataclass
class ScoreOptions:
    """One `score` run. Cross-option rules are checked here, so Python callers and the CLI get the same errors.

    `input` is a Parquet/CSV/JSON Lines file or folder (Spark: also a URI or `table:NAME`); it may be
    None only in a `Watcher`'s base options. `endpoint` (or a HOST:PORT alone) defaults to a bulk budget of
    120 s per request.
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
    rejects: Path | None = None
    format: str | None = None
    threshold: float | None = None
    score_output: str | None = None
    segments: list[str] = field(default_factory=list)  # names, one more than bounds
    segment_bounds: list[float] = field(default_factory=list)
    store: str | None = None  # prediction store URL (sqlite:///..., redis://...): scored rows go there too
    engine: str = "local"
    spark_master: str | None = None
    spark_partitions: int | None = None

    def __post_init__(self):
        if isinstance(self.endpoint, str):  # a URL alone: gRPC, the bulk budget
            self.endpoint = Endpoint(self.endpoint, timeout_s=BULK_TIMEOUT_S)
        if self.engine not in ENGINES:
            raise UsageError(f"--engine is {self.engine!r}; expected local or spark")
        if self.concurrency < 1 or self.chunk_rows < 1 or (self.batch_size is not None and self.batch_size < 1):
            raise UsageError(
                f"--concurrency {self.concurrency}, --chunk-rows {self.chunk_rows}, --batch-size {self.batch_size}: "
                "expected whole numbers of 1 or more"
            )
        index, count = self.shard
        if count < 1 or not 0 <= index < count:
            raise UsageError(f"--shard {index}/{count}: expected 0 <= I < N")
        if self.engine == "local":
            if self.spark_master or self.spark_partitions:
                raise UsageError(
                    f"--master {self.spark_master!r} / --partitions {self.spark_partitions!r} apply to "
                    "--engine spark only"
                )
            self.output = Path(self.output)
            self.input = Path(self.input) if self.input is not None else None
        else:
            from tritonkit.clients.spark_job import check_options

            check_options(self)


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


def parse_shard(text: str) -> tuple[int, int]:
    try:
        index, count = (int(p) for p in text.split("/"))
    except ValueError:
        raise UsageError(f"--shard {text!r} is not I/N (for example 0/4)") from None
    if count < 1 or not 0 <= index < count:
        raise UsageError(f"--shard {text!r}: expected 0 <= I < N")
    return index, count
