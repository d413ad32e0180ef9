"""`tritonkit score`: a whole dataset through Triton, resumable, every row exactly once.

read (chunks) -> validate and convert (mapping) -> send (bulk, many requests in flight) ->
write (a part per chunk for --resume, and the output itself in input order as chunks finish).
Rows that fail validation or inference go to the rejects file with their row number and reason;
read = scored + rejected, always.
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
from tritonkit.clients.bulk import AsyncInferer, infer_isolating
from tritonkit.clients.realtime import TritonClient
from tritonkit.clients.sinks import OrderedOutput, PartStore, output_format
from tritonkit.errors import InputError, OutputError, UsageError

logger = logging.getLogger(__name__)


@dataclass
class ScoreOptions:
    model: str
    input: Path
    output: Path
    url: str = "127.0.0.1:8001"
    protocol: str = "grpc"
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
    ssl: bool = False
    root_certificates: str | None = None
    certificate_chain: str | None = None  # client certificate and key, for mutual TLS
    private_key: str | None = None
    headers: dict[str, str] = field(default_factory=dict, repr=False)  # may hold credentials
    timeout_s: float = 120.0
    store: str | None = None  # prediction store URL (sqlite:///..., redis://...): scored rows go there too


@dataclass
class ScoreReport:
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


class Postprocess:
    """Optional classifier post-processing: a threshold to a label, bounds to named segments."""

    def __init__(self, options: ScoreOptions, meta):
        self.threshold, self.segments, self.bounds = options.threshold, options.segments, options.segment_bounds
        self.source = options.score_output
        if self.threshold is None and not self.segments:
            return
        if self.segments and len(self.segments) != len(self.bounds) + 1:
            raise UsageError(
                f"--segments has {len(self.segments)} names for {len(self.bounds)} bounds; "
                "expected one name more than bounds (e.g. Low,Medium,High with 0.3,0.6)"
            )
        if list(self.bounds) != sorted(self.bounds):
            raise UsageError(f"--segment-bounds {self.bounds} must be ascending")
        if self.source is None:
            candidates = [t.name for t in meta.outputs if t.datatype.startswith("FP") and t.shape[1:] in ((1,), ())]
            if not candidates:
                raise UsageError(f"model `{meta.name}` has no scalar float output to threshold; pass --score-output")
            self.source = candidates[0]
        elif self.source not in {t.name for t in meta.outputs}:
            raise UsageError(f"--score-output {self.source!r} is not an output of `{meta.name}`")

    def columns(self, outputs: dict[str, np.ndarray]) -> dict[str, pa.Array]:
        if self.threshold is None and not self.segments:
            return {}
        score = outputs[self.source].reshape(-1)
        extra = {}
        if self.threshold is not None:
            extra["predicted_label"] = pa.array((score >= self.threshold).astype(np.int8))
        if self.segments:
            codes = np.searchsorted(np.asarray(self.bounds), score, side="right").astype(np.int32)
            extra["segment"] = pa.DictionaryArray.from_arrays(pa.array(codes), pa.array(self.segments))
        return extra


def output_column(values: np.ndarray) -> pa.Array:
    width = int(np.prod(values.shape[1:])) if values.ndim > 1 else 1  # -1 fails on an empty chunk
    if values.dtype == object:
        return pa.array(
            [v.decode() if isinstance(v, bytes) else v for v in values.reshape(len(values), width)[:, 0]], pa.string()
        )
    flat = values.reshape(len(values), width)
    if flat.shape[1] == 1:
        return pa.array(flat[:, 0])
    return pa.FixedSizeListArray.from_arrays(pa.array(flat.reshape(-1)), flat.shape[1])


class _Run:
    def __init__(self, options: ScoreOptions):
        self.o = options
        with TritonClient(
            options.url,
            protocol=options.protocol,
            ssl=options.ssl,
            root_certificates=options.root_certificates,
            certificate_chain=options.certificate_chain,
            private_key=options.private_key,
            headers=options.headers,
        ) as client:
            self.meta = client.metadata(options.model, options.version)
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
        self.post = Postprocess(options, self.meta)
        self.batch = min(options.batch_size or self.meta.max_batch_size, self.meta.max_batch_size)
        self.fmt = output_format(options.output, options.format)
        self.rejects = options.rejects or options.output.with_name(options.output.name + ".rejects.jsonl")
        self.parts = PartStore(options.output)
        self.store = None
        if options.store:
            from tritonkit.clients.store import open_store

            self.store = open_store(options.store)
        self.report = ScoreReport(
            options.model,
            "",
            shard=f"{options.shard[0]}/{options.shard[1]}",
            output=str(options.output),
            rejects=str(self.rejects),
        )

    def manifest(self) -> dict:
        o = self.o
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
        index, count = self.o.shard
        for chunk in sources.chunks(self.files, self.o.chunk_rows, self.read_columns, text):
            if chunk.index % count != index:
                continue
            self.report.rows_read += chunk.table.num_rows
            if chunk.index in skip:
                yield chunk, None
                continue
            yield chunk, mapping.convert(chunk.table, self.specs)

    async def _chunk(self, inferer, sem, chunk, arrays, valid, reasons, progress):
        n_valid = int(valid.sum())
        slices = [{k: v[s : s + self.batch] for k, v in arrays.items()} for s in range(0, n_valid, self.batch)]
        results = await asyncio.gather(
            *(infer_isolating(inferer, sem, a, i * self.batch) for i, a in enumerate(slices))
        )
        done = sorted((r for ok, _, _ in results for r in ok), key=lambda r: r[0])
        failed = [f for _, bad, _ in results for f in bad]
        self.report.requests += sum(sent for _, _, sent in results)
        predicted_at = time.time()
        rows = chunk.first_row + np.arange(chunk.table.num_rows, dtype=np.int64)
        valid_rows = rows[valid]
        keep = np.ones(n_valid, dtype=bool)
        for position, _ in failed:
            keep[position] = False
        version = done[0][2] if done else self.report.model_version
        self.report.model_version = self.report.model_version or version
        outputs = {
            name: np.concatenate([d[1][name] for d in done])
            if done
            else np.zeros((0, *t.shape[1:]), dtype=t.numpy_dtype)
            for name, t in ((t.name, t) for t in self.meta.outputs)
        }
        ids = self._ids(chunk.table, rows)
        scored_ids = ids.filter(pa.array(valid)).filter(pa.array(keep)) if len(ids) else ids
        n = int(keep.sum())
        columns = {self.o.id_column or "row": scored_ids}
        columns.update({name: output_column(v) for name, v in outputs.items()})
        columns.update(self.post.columns(outputs))
        columns["model_name"] = pa.repeat(self.meta.name, n)
        columns["model_version"] = pa.repeat(str(version), n)
        columns["predicted_at"] = pa.repeat(pa.scalar(int(predicted_at * 1e6), pa.timestamp("us", tz="UTC")), n)
        scored = pa.table(columns)
        reject_rows = [(int(rows[i]), r) for i, r in reasons.items()]
        reject_rows += [(int(valid_rows[p]), f"inference failed: {r}") for p, r in failed]
        reject_rows.sort()
        rejects = pa.table(
            {
                "row": pa.array([r for r, _ in reject_rows], pa.int64()),
                "id": pa.array([str(ids[r - chunk.first_row].as_py()) for r, _ in reject_rows], pa.string()),
                "reason": pa.array([reason for _, reason in reject_rows], pa.string()),
            }
        )
        if self.store is not None and n:
            await asyncio.to_thread(self._store_chunk, scored_ids, outputs, str(version), predicted_at)
        await asyncio.to_thread(self.parts.write, chunk.index, scored, rejects)
        self.report.rows_scored += n
        self.report.rows_rejected += len(reject_rows)
        if progress is not None:
            progress(chunk.table.num_rows)
        return scored, rejects

    def _store_chunk(self, ids: pa.Array, outputs: dict[str, np.ndarray], version: str, predicted_at: float) -> None:
        """One chunk's rows into the prediction store in one atomic write (before its part marks it done)."""
        from tritonkit.clients.store import Entry, row_outputs

        self.store.put_many(
            [
                Entry(str(entity), self.meta.name, version, row_outputs(outputs, i), predicted_at, "batch")
                for i, entity in enumerate(ids.to_pylist())
            ]
        )

    def _ids(self, table: pa.Table, rows: np.ndarray) -> pa.Array:
        if self.o.id_column:
            return table.column(self.o.id_column).combine_chunks()
        return pa.array(rows)

    async def _score(self, skip: set[int], progress) -> None:
        inferer = AsyncInferer(
            self.o.url,
            self.meta,
            protocol=self.o.protocol,
            version=self.o.version,
            timeout_s=self.o.timeout_s,
            ssl=self.o.ssl,
            root_certificates=self.o.root_certificates,
            certificate_chain=self.o.certificate_chain,
            private_key=self.o.private_key,
            headers=self.o.headers,
        )
        sem = asyncio.Semaphore(self.o.concurrency)
        pending: set[asyncio.Task] = set()
        # Finished chunks go to the final output in input order, while later chunks are still being scored.
        ordered: asyncio.Queue = asyncio.Queue(maxsize=4)
        writer = asyncio.create_task(self._write_in_order(ordered))
        converted = self._converted(skip)
        try:
            while True:
                item = await asyncio.to_thread(next, converted, None)
                if item is None:
                    break
                chunk, conversion = item
                if conversion is None:
                    await self._put(ordered, writer, asyncio.to_thread(self.parts.read, chunk.index))
                    continue
                task = asyncio.create_task(self._chunk(inferer, sem, chunk, *conversion, progress))
                # The first failure reaches run() through the writer; later ones would be logged as "never retrieved".
                task.add_done_callback(lambda t: t.cancelled() or t.exception())
                pending.add(task)
                await self._put(ordered, writer, task)
                # Keep the next chunk's requests queued while this one's part is written.
                while len(pending) >= 3:
                    done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                    for task in done:
                        task.result()
            await self._put(ordered, writer, None)
            await writer
        finally:
            for task in (*pending, writer):
                task.cancel()
            self.report.retries = inferer.retries
            if inferer.latencies_ms:
                lat = np.asarray(inferer.latencies_ms)
                self.report.latency_ms = {f"p{q}": round(float(np.percentile(lat, q)), 3) for q in (50, 90, 99)}
            await inferer.close()

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
        if self.o.output.exists() and not self.parts.exists():
            raise UsageError(f"output {self.o.output} already exists; remove it or choose another --output")
        self.parts.start(self.manifest(), self.o.resume)
        skip = self.parts.done_chunks()
        for chunk in skip:
            scored, rejected = self.parts.counts(chunk)
            self.report.rows_scored += scored
            self.report.rows_rejected += rejected
            self.report.rows_resumed += scored + rejected
        start = time.perf_counter()
        self.output = OrderedOutput(self.o.output, self.rejects, self.fmt)
        try:
            asyncio.run(self._score(skip, progress))
            self.output.commit()
        except BaseException:
            self.output.abort()
            raise
        self.parts.remove()
        if self.store is not None:
            self.store.record_run(
                self.meta.name,
                {
                    "run_id": f"{self.o.output.name}-{int(time.time())}",
                    "model": self.meta.name,
                    "model_version": self.report.model_version,
                    "started_at": time.time() - (time.perf_counter() - start),
                    "finished_at": time.time(),
                    "rows_scored": self.report.rows_scored,
                    "rows_rejected": self.report.rows_rejected,
                    "entity_count": self.report.rows_scored,
                },
            )
            self.store.close()
        self.report.wall_s = round(time.perf_counter() - start, 3)
        fresh = self.report.rows_read - self.report.rows_resumed
        self.report.rows_per_s = round(fresh / self.report.wall_s, 1) if self.report.wall_s else 0.0
        return self.report


def score(options: ScoreOptions, progress=None) -> ScoreReport:
    """Scores `options.input` into `options.output`; returns the report (check `.complete`).

    A file that cannot be written (folder not writable, disk full) raises OutputError naming it; the
    final output is never left half-written, and finished chunks stay for `--resume`.
    """
    run = _Run(options)
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
