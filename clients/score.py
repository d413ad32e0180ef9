"""`tritonkit score`: a whole dataset through Triton, resumable, every row exactly once.

read (chunks) -> validate and convert (mapping) -> send (bulk, many requests in flight) ->
assemble (results) -> write (a part per chunk for --resume, and the output itself in input order as
chunks finish). Rows that fail validation or inference go to the rejects file with their row number
and reason; read = scored + rejected, always. `score(options)` picks the engine: this process
(`ScoreRun`) or a Spark job (`tritonkit.clients.spark_job`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa

from tritonkit.clients import mapping, sources
from tritonkit.clients.advice import warn_if_realtime_config
from tritonkit.clients.bulk import BULK_TIMEOUT_S, AsyncInferer, bulk_endpoint, infer_rows
from tritonkit.clients.endpoint import Endpoint
from tritonkit.clients.realtime import TritonClient
from tritonkit.clients.results import Postprocess, RowResults, assemble
from tritonkit.clients.sinks import REJECT_SCHEMA, OrderedOutput, PartStore, output_format
from tritonkit.errors import InputError, OutputError, UsageError

logger = logging.getLogger(__name__)

ENGINES = ("local", "spark")
IN_FLIGHT_CHUNKS = 3  # chunks being scored at once: the next one's requests queue while one is written


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


class ScoreRun:
    """One local run: the plan (model metadata, files, mapping), then chunks scored and written in order."""

    def __init__(self, options: ScoreOptions):
        self.options = options
        # The first call waits for a server still starting (a batch Job racing Triton), as requests retry.
        endpoint = bulk_endpoint(options.endpoint)
        wait_ms = (endpoint.retry.max_total_s or endpoint.timeout_s) * 1000
        with TritonClient(endpoint) as client:
            self.meta = client.metadata(options.model, options.version, timeout_ms=wait_ms)
            warn_if_realtime_config(client, options.model, options.version)
        self.files = sources.input_files(options.input)
        columns = sources.column_names(self.files)
        self.specs = mapping.plan(self.meta, columns, mapping.parse_maps(options.maps))
        if options.id_column and options.id_column not in columns:
            raise UsageError(
                f"--id-column {options.id_column!r} is not a column of the input; its columns: {', '.join(columns)}"
            )
        self.read_columns = sorted(
            {c for s in self.specs for c in s.columns} | ({options.id_column} if options.id_column else set())
        )
        if sources.input_format(self.files[0]) == "jsonl":
            self.read_columns = None  # a malformed line's error column must come through too
        self.post = Postprocess.build(
            self.meta, options.threshold, options.segments, options.segment_bounds, options.score_output
        )
        self.batch = min(options.batch_size or self.meta.max_batch_size, self.meta.max_batch_size)
        self.fmt = output_format(options.output, options.format)
        self.rejects = options.rejects or options.output.with_name(options.output.name + ".rejects.jsonl")
        self.parts = PartStore(options.output)
        self.store = None
        if options.store:
            from tritonkit.clients.store import open_store

            self.store = open_store(options.store)
        shard = f"{options.shard[0]}/{options.shard[1]}"
        self.report = ScoreReport(options.model, "", shard=shard, output=str(options.output), rejects=str(self.rejects))

    def manifest(self) -> dict:
        """What a resumed run must share with the run that began: the same input, model and options."""
        o = self.options
        return {
            "model": o.model,
            "version": o.version,
            "input": sources.fingerprint(self.files),
            "chunk_rows": o.chunk_rows,
            "shard": list(o.shard),
            "id_column": o.id_column,
            "maps": sorted(o.maps),
            "threshold": o.threshold,
            "segments": o.segments,
            "segment_bounds": o.segment_bounds,
        }

    def _converted(self, skip: set[int]):
        """This shard's chunks in order, each with its converted arrays, or None when an earlier run finished it
        (runs in a worker thread)."""
        text = [c for s in self.specs for c in s.columns]
        index, count = self.options.shard
        for chunk in sources.chunks(self.files, self.options.chunk_rows, self.read_columns, text):
            if chunk.index % count != index:
                continue
            self.report.rows_read += chunk.table.num_rows
            if chunk.index in skip:
                yield chunk, None
                continue
            yield chunk, mapping.convert(chunk.table, self.specs)

    async def _score_chunk(self, inferer, sem, chunk, conversion, progress) -> tuple[pa.Table, pa.Table]:
        """Scores one chunk, writes its part (and its store rows), returns its (scored, rejects) tables."""
        arrays, valid, reasons = conversion
        inferred = await infer_rows(inferer, sem, arrays, int(valid.sum()), self.batch)
        results = assemble(self.meta, self.post, valid, reasons, inferred)
        predicted_at = time.time()
        ids = self._ids(chunk)
        scored, rejects = self._tables(chunk, ids, results, predicted_at)
        if self.store is not None and len(results.scored):
            await asyncio.to_thread(self._store_chunk, ids.take(pa.array(results.scored)), results, predicted_at)
        await asyncio.to_thread(self.parts.write, chunk.index, scored, rejects)
        self.report.requests += results.requests
        self.report.rows_scored += scored.num_rows
        self.report.rows_rejected += rejects.num_rows
        if progress is not None:
            progress(chunk.table.num_rows)
        return scored, rejects

    def _tables(self, chunk, ids: pa.Array, results: RowResults, predicted_at: float) -> tuple[pa.Table, pa.Table]:
        n = len(results.scored)
        columns = {self.options.id_column or "row": ids.take(pa.array(results.scored, pa.int64()))}
        columns.update(results.output_columns())
        columns["model_name"] = pa.repeat(self.meta.name, n)
        columns["model_version"] = pa.array(results.model_versions, pa.string())
        columns["predicted_at"] = pa.repeat(pa.scalar(int(predicted_at * 1e6), pa.timestamp("us", tz="UTC")), n)
        rejected = list(results.errors)
        rejects = pa.table(
            {
                "row": pa.array([chunk.first_row + i for i in rejected], pa.int64()),
                "id": pa.array([str(ids[i].as_py()) for i in rejected], pa.string()),
                "reason": pa.array(list(results.errors.values()), pa.string()),
            },
            schema=REJECT_SCHEMA,
        )
        return pa.table(columns), rejects

    def _store_chunk(self, ids: pa.Array, results: RowResults, predicted_at: float) -> None:
        """One chunk's rows into the prediction store in one atomic write (before its part marks it done)."""
        from tritonkit.clients.store import Entry, row_outputs

        entries = [
            Entry(str(entity), self.meta.name, str(version), row_outputs(results.outputs, i), predicted_at, "batch")
            for i, (entity, version) in enumerate(zip(ids.to_pylist(), results.model_versions))
        ]
        self.store.put_many(entries)

    def _ids(self, chunk) -> pa.Array:
        if self.options.id_column:
            return chunk.table.column(self.options.id_column).combine_chunks()
        return pa.array(chunk.first_row + np.arange(chunk.table.num_rows, dtype=np.int64))

    async def _score(self, skip: set[int], progress) -> None:
        inferer = AsyncInferer(self.options.endpoint, self.meta, version=self.options.version)
        sem = asyncio.Semaphore(self.options.concurrency)
        pending: set[asyncio.Task] = set()
        # Finished chunks go to the final output in input order, while later chunks are still being scored.
        ordered: asyncio.Queue = asyncio.Queue(maxsize=4)
        writer = asyncio.create_task(self._write_in_order(ordered))
        converted = self._converted(skip)
        try:
            while (item := await asyncio.to_thread(next, converted, None)) is not None:
                chunk, conversion = item
                if conversion is None:
                    await self._put(ordered, writer, asyncio.to_thread(self.parts.read, chunk.index))
                    continue
                task = asyncio.create_task(self._score_chunk(inferer, sem, chunk, conversion, progress))
                # The first failure reaches run() through the writer; later ones would be logged as "never retrieved".
                task.add_done_callback(lambda t: t.cancelled() or t.exception())
                pending.add(task)
                await self._put(ordered, writer, task)
                while len(pending) >= IN_FLIGHT_CHUNKS:
                    done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                    for finished in done:
                        finished.result()
            await self._put(ordered, writer, None)
            await writer
        finally:
            for task in (*pending, writer):
                task.cancel()
            self._finish_statistics(inferer)
            await inferer.close()

    def _finish_statistics(self, inferer: AsyncInferer) -> None:
        self.report.retries = inferer.retries
        if inferer.latencies_ms:
            latencies = np.asarray(inferer.latencies_ms)
            self.report.latency_ms = {f"p{q}": round(float(np.percentile(latencies, q)), 3) for q in (50, 90, 99)}

    @staticmethod
    async def _put(queue: asyncio.Queue, writer: asyncio.Task, item) -> None:
        """Queues the next chunk for the writer; a writer that failed stops the run with its error."""
        put = asyncio.ensure_future(queue.put(item))
        await asyncio.wait({put, writer}, return_when=asyncio.FIRST_COMPLETED)
        if writer.done():
            put.cancel()
            if asyncio.iscoroutine(item):
                item.close()
            writer.result()
            raise RuntimeError("the output writer stopped early")

    async def _write_in_order(self, queue: asyncio.Queue) -> None:
        while (item := await queue.get()) is not None:
            scored, rejects = await item
            if not self.report.model_version and scored.num_rows:
                self.report.model_version = scored.column("model_version")[0].as_py()
            await asyncio.to_thread(self.output.write, scored, rejects)

    def run(self, progress=None) -> ScoreReport:
        if self.options.output.exists() and not self.parts.exists():
            raise UsageError(f"output {self.options.output} already exists; remove it or choose another --output")
        self.parts.start(self.manifest(), self.options.resume)
        skip = self.parts.done_chunks()
        for chunk in skip:
            scored, rejected = self.parts.counts(chunk)
            self.report.rows_scored += scored
            self.report.rows_rejected += rejected
            self.report.rows_resumed += scored + rejected
        start, started_at = time.perf_counter(), time.time()
        self.output = OrderedOutput(self.options.output, self.rejects, self.fmt)
        try:
            asyncio.run(self._score(skip, progress))
            self.output.commit()
        except BaseException:
            self.output.abort()
            raise
        self.parts.remove()
        if self.store is not None:
            self._record_run(started_at)
        self.report.wall_s = round(time.perf_counter() - start, 3)
        fresh = self.report.rows_read - self.report.rows_resumed
        self.report.rows_per_s = round(fresh / self.report.wall_s, 1) if self.report.wall_s else 0.0
        return self.report

    def _record_run(self, started_at: float) -> None:
        summary = {
            "run_id": f"{self.options.output.name}-{int(time.time())}",
            "model": self.meta.name,
            "model_version": self.report.model_version,
            "started_at": started_at,
            "finished_at": time.time(),
            "rows_scored": self.report.rows_scored,
            "rows_rejected": self.report.rows_rejected,
            "entity_count": self.report.rows_scored,
        }
        self.store.record_run(self.meta.name, summary)
        self.store.close()


def score(options: ScoreOptions, progress=None) -> ScoreReport:
    """Scores `options.input` into `options.output` with the options' engine; returns the report.

    A file that cannot be written (folder not writable, disk full) raises OutputError naming it; the
    final output is never left half-written, and finished chunks stay for `--resume`.
    """
    if options.engine == "spark":
        from tritonkit.clients.spark_job import run_score

        return run_score(options)
    run = ScoreRun(options)
    try:
        return run.run(progress)
    except OSError as e:  # inference errors arrive as ServerError: what is left is file I/O
        if e.filename and Path(e.filename).resolve() in {f.resolve() for f in run.files}:
            raise InputError(
                f"cannot read {e.filename}: {e.strerror or e}", field="--input", value=str(e.filename)
            ) from e
        parts = run.parts.dir if run.parts.exists() else None
        raise OutputError(e.filename or options.output, e.strerror or str(e), parts=parts) from e


def total_rows(options: ScoreOptions) -> int | None:
    """Rows this shard will read, when cheap to know (Parquet); None otherwise."""
    files = sources.input_files(options.input)
    total = sources.count_rows(files)
    if total is None:
        return None
    index, count = options.shard
    chunks = -(-total // options.chunk_rows)
    mine = range(index, chunks, count)
    return sum(min(options.chunk_rows, total - c * options.chunk_rows) for c in mine)
