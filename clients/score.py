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
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from tritonkit.clients import fingerprint, ids, mapping, sources, storage
from tritonkit.clients import score_rows as rows
from tritonkit.clients.advice import warn_if_realtime_config
from tritonkit.clients.bulk import AsyncInferer, bulk_endpoint, infer_rows
from tritonkit.clients.realtime import TritonClient
from tritonkit.clients.results import Postprocess, RowResults, assemble
from tritonkit.clients.runlock import ObjectLock, OutputLock, remove_stale_temporaries
from tritonkit.clients.score_options import ENGINES, ScoreOptions, ScoreReport, parse_shard  # noqa: F401 (re-exported)
from tritonkit.clients.sinks import OrderedOutput, PartStore, output_format, staging_dir
from tritonkit.errors import InputError, OutputError, UsageError
from tritonkit.extras import requires

logger = logging.getLogger(__name__)

IN_FLIGHT_CHUNKS = 3  # chunks being scored at once: the next one's requests queue while one is written


@dataclass(frozen=True)
class Prepared:
    """One chunk of this shard, read: its fingerprint, ids and converted arrays (None when already finished)."""

    chunk: sources.Chunk
    digest: str
    ids: pa.Array | None = None
    conversion: tuple | None = None


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
        self.out = storage.locate(options.output)
        self.rejects = storage.locate(options.rejects or self.out.sibling(self.out.name + ".rejects.jsonl"))
        self.parts = PartStore(self.out)
        own = (self.out, self.parts.dir, self.rejects, self.out.sibling(f".{self.out.name}.lock"))
        self.files = sources.input_files(options.input, exclude=own)
        self._plan_columns(options)
        self.post = Postprocess.build(
            self.meta, options.threshold, options.segments, options.segment_bounds, options.score_output
        )
        self.batch = min(options.batch_size or self.meta.max_batch_size, self.meta.max_batch_size)
        self.fmt = output_format(self.out, options.format)
        self.store = None
        if options.store:
            from tritonkit.clients.store import open_store

            self.store = open_store(options.store)
        shard = f"{options.shard[0]}/{options.shard[1]}"
        self.report = ScoreReport(options.model, "", shard=shard, output=self.out.uri, rejects=self.rejects.uri)

    def _plan_columns(self, options: ScoreOptions) -> None:
        """Which columns feed which input, which are read, and how ids are read (`tritonkit.clients.ids`)."""
        columns = sources.column_names(self.files)
        self.specs = mapping.plan(self.meta, columns, mapping.parse_maps(options.maps))
        self.id_kind = None
        if options.id_column:
            if columns and options.id_column not in columns:
                raise UsageError(
                    f"--id-column {options.id_column!r} is not a column of the input; its columns: {', '.join(columns)}"
                )
            typed = sources.input_format(self.files[0]) == "parquet"
            self.id_kind = ids.kind(options.id_column, sources.column_types(self.files, options.id_column), typed)
        self.read_columns = sorted(
            {c for s in self.specs for c in s.columns} | ({options.id_column} if options.id_column else set())
        )
        if sources.input_format(self.files[0]) == "jsonl":
            self.read_columns = None  # a malformed line's error column must come through too

    def manifest(self) -> dict:
        """What a resumed run must share with the run that began: the same input, model and options.

        The input's content is checked chunk by chunk as it is read again (`fingerprint`)."""
        o = self.options
        return {
            "resume_format": 2,
            "model": o.model,
            "version": o.version,
            "input": sources.identity(self.files),
            "chunk_rows": o.chunk_rows,
            "shard": list(o.shard),
            "id_column": o.id_column,
            "maps": sorted(o.maps),
            "threshold": o.threshold,
            "segments": o.segments,
            "segment_bounds": o.segment_bounds,
        }

    def _chunks(self):
        """This shard's chunks in order; one empty chunk when the shard has none (an empty output, not none)."""
        text = [c for s in self.specs for c in s.columns]
        index, count = self.options.shard
        found = False
        byte_columns = [self.options.id_column] if self.options.id_column else []
        for chunk in sources.chunks(self.files, self.options.chunk_rows, self.read_columns, text, byte_columns):
            if chunk.index % count == index:
                found = True
                yield chunk
        if not found:
            names = self.read_columns or [c for c in text + byte_columns]
            yield sources.Chunk(-1, 0, pa.table({c: pa.nulls(0) for c in dict.fromkeys(names)}))

    def _prepared(self, skip: set[int]):
        """Each chunk read, fingerprinted and converted, or checked against its part when an earlier run
        finished it (runs in a worker thread)."""
        seen = set()
        for chunk in self._chunks():
            self.report.rows_read += chunk.table.num_rows
            digest = fingerprint.digest(chunk.table)
            if chunk.index in skip:
                recorded = self.parts.digest(chunk.index)
                if recorded != digest:
                    last = chunk.first_row + chunk.table.num_rows - 1
                    raise UsageError(
                        f"cannot resume from {self.parts.dir}: chunk {chunk.index} of the input (rows "
                        f"{chunk.first_row}-{last}) changed since the run began (fingerprint {recorded} then, "
                        f"{digest} now); remove {self.parts.dir} to start over"
                    )
                seen.add(chunk.index)
                yield Prepared(chunk, digest)
                continue
            chunk_ids, bad = self._ids(chunk)
            arrays, valid, reasons = mapping.convert(chunk.table, self.specs)
            if bad:  # rows without a usable id are not sent
                drop = np.zeros(len(valid), dtype=bool)
                drop[list(bad)] = True
                arrays = {k: v[~drop[valid]] for k, v in arrays.items()}
                valid, reasons = valid & ~drop, {**reasons, **bad}
            yield Prepared(chunk, digest, chunk_ids, (arrays, valid, reasons))
        if skip - seen:
            raise UsageError(
                f"cannot resume from {self.parts.dir}: the input no longer has chunk(s) "
                f"{', '.join(map(str, sorted(skip - seen)))} that the run finished; remove it to start over"
            )

    async def _score_chunk(self, inferer, sem, prepared: Prepared, progress) -> tuple[pa.Table, pa.Table]:
        """Scores one chunk, writes its store rows and then its part, returns its (scored, rejects) tables."""
        chunk = prepared.chunk
        arrays, valid, reasons = prepared.conversion
        inferred = await infer_rows(inferer, sem, arrays, int(valid.sum()), self.batch)
        results = assemble(self.meta, self.post, valid, reasons, inferred)
        scored, rejects = self._tables(chunk, prepared.ids, results, time.time())
        if self.store is not None and scored.num_rows:
            features = self._features(scored, prepared.conversion, results) if self.options.features else None
            await asyncio.to_thread(self._store_rows, scored, features)
        if chunk.index >= 0:
            await asyncio.to_thread(self.parts.write, chunk.index, scored, rejects, prepared.digest)
        self.report.requests += results.requests
        self.report.rows_scored += scored.num_rows
        self.report.rows_rejected += rejects.num_rows
        if progress is not None:
            progress(chunk.table.num_rows)
        return scored, rejects

    async def _resumed_chunk(self, chunk: sources.Chunk) -> tuple[pa.Table, pa.Table]:
        """A chunk an earlier run finished: its part, and its rows written to the store again (the store may
        have lost them since: a restarted Redis, a replaced SQLite file)."""
        scored, rejects = await asyncio.to_thread(self.parts.read, chunk.index)
        if self.store is not None and scored.num_rows:
            await asyncio.to_thread(self._store_rows, scored)
        return scored, rejects

    def _tables(self, chunk, chunk_ids: pa.Array, results: RowResults, at: float) -> tuple[pa.Table, pa.Table]:
        return rows.tables(self.meta, self.options.id_column or "row", chunk, chunk_ids, results, at)

    def _store_rows(self, scored: pa.Table, features=None) -> None:
        """A chunk's scored rows (and, with `features`, their model inputs) into the prediction store in one
        atomic write, before its part marks it done."""
        self.store.put_many(rows.store_entries(self.meta, self.options.id_column or "row", scored), features)

    def _features(self, scored: pa.Table, conversion: tuple, results: RowResults) -> list:
        """The scored rows' model inputs as sent to Triton, for the online feature store (`--features`)."""
        from tritonkit.clients.store_features import scored_features

        entity_ids = scored.column(self.options.id_column or "row").to_pylist()
        return scored_features(self.meta.name, entity_ids, conversion, results.scored, time.time())

    def _ids(self, chunk) -> tuple[pa.Array, dict[int, str]]:
        """The chunk's ids (`--id-column` by the rule in `ids`, else row numbers), and reasons for unusable ones."""
        if self.options.id_column:
            column = self.options.id_column
            return ids.extract(
                chunk.table.column(column).combine_chunks(), chunk.table.schema.field(column), self.id_kind
            )
        return pa.array(chunk.first_row + np.arange(chunk.table.num_rows, dtype=np.int64)), {}

    async def _score(self, skip: set[int], progress) -> None:
        inferer = AsyncInferer(self.options.endpoint, self.meta, version=self.options.version)
        sem = asyncio.Semaphore(self.options.concurrency)
        pending: set[asyncio.Task] = set()
        # Finished chunks go to the final output in input order, while later chunks are still being scored.
        ordered: asyncio.Queue = asyncio.Queue(maxsize=4)
        writer = asyncio.create_task(self._write_in_order(ordered))
        prepared = self._prepared(skip)
        try:
            while (item := await asyncio.to_thread(next, prepared, None)) is not None:
                if item.conversion is None:
                    await self._put(ordered, writer, self._resumed_chunk(item.chunk))
                    continue
                task = asyncio.create_task(self._score_chunk(inferer, sem, item, progress))
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
        if writer.done() and not (item is None and put.done() and writer.exception() is None):
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
        """Scores under the output's lock (a second run on the same output is refused)."""
        out = self.out
        if out.local:
            self.lock = OutputLock(Path(out.path))
        else:
            self.lock = ObjectLock(out, self.options.run_id if self.options.run_id_given else "")
        with self.lock:
            self._remove_stale_temporaries()
            if out.exists() and not self.parts.exists():
                raise UsageError(f"output {out} already exists; remove it or choose another --output")
            if out.exists() and self.options.resume:
                return self._finished_earlier()
            return self._run(progress)

    def _remove_stale_temporaries(self) -> None:
        """Temporary files of killed runs: beside a local output, in its parts, or in the staging folder."""
        for where in (self.out, self.rejects):
            folder = Path(where.path).parent if where.local else staging_dir(where)
            remove_stale_temporaries(folder, [where.name])
        if self.parts.dir.local:
            remove_stale_temporaries(Path(self.parts.dir.path))

    def _run(self, progress) -> ScoreReport:
        self.parts.start(self.manifest(), self.options.resume)
        skip = self.parts.done_chunks()
        for chunk in skip:
            scored, rejected = self.parts.counts(chunk)
            self.report.rows_scored += scored
            self.report.rows_rejected += rejected
            self.report.rows_resumed += scored + rejected
        start, started_at = time.perf_counter(), time.time()
        self.output = OrderedOutput(self.out, self.rejects, self.fmt)
        try:
            asyncio.run(self._score(skip, progress))
            if isinstance(self.lock, ObjectLock):
                self.lock.check()  # still ours: no other run took the output meanwhile
            self.output.commit()
        except BaseException:
            self.output.abort()
            raise
        return self._finish(start, started_at)

    def _finished_earlier(self) -> ScoreReport:
        """The run was killed after its output was committed, before the clean-up: every row is in the output
        already; the store gets the rows again and the run's record, then the parts go."""
        self.parts.start(self.manifest(), resume=True)
        start, started_at = time.perf_counter(), time.time()
        for chunk in sorted(self.parts.done_chunks()):
            scored, rejects = self.parts.read(chunk)
            if self.store is not None and scored.num_rows:
                self._store_rows(scored)
            if not self.report.model_version and scored.num_rows:
                self.report.model_version = scored.column("model_version")[0].as_py()
            self.report.rows_scored += scored.num_rows
            self.report.rows_rejected += rejects.num_rows
        self.report.rows_read = self.report.rows_resumed = self.report.rows_scored + self.report.rows_rejected
        return self._finish(start, started_at)

    def _finish(self, start: float, started_at: float) -> ScoreReport:
        """After the output is in place: the store's record of the run, then the parts' removal."""
        if self.store is not None:
            self._record_run(started_at)
        self.parts.remove()
        self.report.wall_s = round(time.perf_counter() - start, 3)
        fresh = self.report.rows_read - self.report.rows_resumed
        self.report.rows_per_s = round(fresh / self.report.wall_s, 1) if self.report.wall_s else 0.0
        return self.report

    def _record_run(self, started_at: float) -> None:
        summary = {
            "run_id": f"{self.options.run_id}-{self.out.name}",
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
        requires("spark", "pyspark", what="--engine spark")
        from tritonkit.clients.spark_job import run_score

        return run_score(options)
    run = ScoreRun(options)
    try:
        return run.run(progress)
    except OSError as e:  # inference errors arrive as ServerError: what is left is file I/O
        if e.filename and storage.locate(e.filename).path in {storage.locate(f).path for f in run.files}:
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
