"""Where bulk results go: one part file per finished chunk, and the final output written in chunk order.

A part appears by atomic rename only once its chunk is fully scored, so after a crash (kill -9
included) the parts present are exactly the finished chunks. Parts are uncompressed Arrow IPC
files, cheap to write and to read back, because the final output is written once, as
the run goes (`OrderedOutput`), not re-encoded from the parts at the end. The final output grows in
a temporary file and is renamed into place only when every chunk is in: it is never left
half-written.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from tritonkit import atomic
from tritonkit.clients import formats
from tritonkit.errors import UsageError

REJECT_SCHEMA = pa.schema([("row", pa.int64()), ("id", pa.string()), ("reason", pa.string())])
DIGEST_KEY = b"tritonkit.input_digest"  # a part's footer: the fingerprint of the input chunk it was scored from


def output_format(path: Path, requested: str | None) -> str:
    """The format asked for, else the one the output's suffix names, else Parquet."""
    return formats.checked(requested) if requested else formats.of(path) or "parquet"


class PartStore:
    """The `<output>.parts/` folder of an unfinished run."""

    SUFFIX = ".arrow"

    def __init__(self, output: Path):
        self.dir = output.with_name(output.name + ".parts")

    @property
    def manifest_path(self) -> Path:
        return self.dir / "manifest.json"

    def exists(self) -> bool:
        return self.manifest_path.exists()

    def start(self, manifest: dict, resume: bool) -> None:
        if self.exists():
            if not resume:
                raise UsageError(f"an unfinished run left {self.dir}: pass --resume to continue it, or remove it")
            previous = json.loads(self.manifest_path.read_text())
            changed = sorted(k for k in set(previous) | set(manifest) if previous.get(k) != manifest.get(k))
            if changed:
                raise UsageError(
                    f"cannot resume from {self.dir}: {', '.join(changed)} changed since the run began; "
                    "remove it to start over"
                )
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        atomic.write_bytes(self.manifest_path, json.dumps(manifest, indent=1).encode())

    def done_chunks(self) -> set[int]:
        return {int(p.stem.split("-")[1]) for p in self.dir.glob(f"chunk-*{self.SUFFIX}")}

    def counts(self, chunk: int) -> tuple[int, int]:
        """(rows scored, rows rejected) recorded in a finished chunk's parts."""
        scored, rejects = self.read(chunk)
        return scored.num_rows, rejects.num_rows

    def read(self, chunk: int) -> tuple[pa.Table, pa.Table]:
        """A finished chunk's (scored, rejects) tables."""
        rejects = self._path("rejects", chunk)
        return _read_ipc(self._path("chunk", chunk)), _read_ipc(
            rejects
        ) if rejects.exists() else REJECT_SCHEMA.empty_table()

    def digest(self, chunk: int) -> str | None:
        """The input fingerprint a finished chunk's part records (None for a part without one)."""
        with pa.OSFile(str(self._path("chunk", chunk))) as source:
            value = (pa.ipc.open_file(source).metadata or {}).get(DIGEST_KEY)
        return value.decode() if value else None

    def _path(self, kind: str, chunk: int) -> Path:
        return self.dir / f"{kind}-{chunk:08d}{self.SUFFIX}"

    def write(self, chunk: int, scored: pa.Table, rejects: pa.Table, digest: str = "") -> None:
        """Rejects first, then the scored part (with the input chunk's `digest`): its presence marks the chunk done."""
        _atomic_ipc(rejects, self._path("rejects", chunk))
        _atomic_ipc(scored, self._path("chunk", chunk), {DIGEST_KEY: digest.encode()} if digest else None)

    def remove(self) -> None:
        shutil.rmtree(self.dir)


class OrderedOutput:
    """The final output and rejects files, appended chunk by chunk in input order, renamed into place by `commit`."""

    def __init__(self, output: Path, rejects: Path, fmt: str):
        self._files = [
            _Appender(output, fmt),
            _Appender(rejects, "jsonl" if rejects.suffix == ".jsonl" else output_format(rejects, None), REJECT_SCHEMA),
        ]

    def write(self, scored: pa.Table, rejects: pa.Table) -> None:
        self._files[0].write(scored)
        self._files[1].write(rejects)

    def commit(self) -> None:
        """Rejects first: once the output is in place, the run is visibly finished."""
        for appender in reversed(self._files):
            appender.commit()

    def abort(self) -> None:
        for appender in self._files:
            appender.abort()


class _Appender:
    def __init__(self, target: Path, fmt: str, schema: pa.Schema | None = None):
        self.target, self.fmt, self.schema = target, fmt, schema
        self.tmp = atomic.temporary_path(target)
        self._writer = None
        self._handle = None

    def _open(self, schema: pa.Schema) -> None:
        self.target.parent.mkdir(parents=True, exist_ok=True)
        self.schema = schema
        if self.fmt == "parquet":
            # Dictionary-encode only the text columns (model name and version, ids, segments): trying it on
            # float outputs costs more CPU than the whole rest of the write, for no gain in size.
            text = [
                f.name
                for f in schema
                if pa.types.is_string(f.type) or pa.types.is_large_string(f.type) or pa.types.is_dictionary(f.type)
            ]
            self._writer = pq.ParquetWriter(self.tmp, schema, compression="snappy", use_dictionary=text)
        elif self.fmt == "csv":
            self._writer = pacsv.CSVWriter(self.tmp, _csv_schema(schema))
        else:
            self._handle = open(self.tmp, "w", encoding="utf-8")  # noqa: SIM115 - closed by commit/abort

    def write(self, table: pa.Table) -> None:
        if self._writer is None and self._handle is None:
            self._open(self.schema or table.schema)
        if table.schema != self.schema:
            table = table.cast(self.schema)
        if self.fmt == "parquet":
            self._writer.write_table(table)
        elif self.fmt == "csv":
            self._writer.write_table(_csv_ready(table))
        else:
            for record in table.to_pylist():
                self._handle.write(json.dumps(record, default=str) + "\n")

    def commit(self) -> None:
        if self._writer is None and self._handle is None:
            self._open(self.schema or pa.schema([]))
        if self._writer is not None:
            self._writer.close()
        else:
            self._handle.close()
        atomic.commit(self.tmp, self.target)

    def abort(self) -> None:
        try:
            if self._writer is not None:
                self._writer.close()
            if self._handle is not None:
                self._handle.close()
        finally:
            self.tmp.unlink(missing_ok=True)


def _atomic_ipc(table: pa.Table, path: Path, metadata: dict | None = None) -> None:
    with atomic.atomic_file(path) as handle, pa.ipc.new_file(handle, table.schema, metadata=metadata) as writer:
        writer.write_table(table)


def _read_ipc(path: Path) -> pa.Table:
    with pa.OSFile(str(path)) as source:
        return pa.ipc.open_file(source).read_all()


def _csv_schema(schema: pa.Schema) -> pa.Schema:
    return pa.schema(
        [
            pa.field(f.name, pa.string())
            if pa.types.is_list(f.type) or pa.types.is_fixed_size_list(f.type) or pa.types.is_dictionary(f.type)
            else f
            for f in schema
        ]
    )


def _csv_ready(table: pa.Table) -> pa.Table:
    """CSV has no lists: vector outputs become JSON arrays in one cell."""
    columns = []
    for field, column in zip(table.schema, table.columns):
        if pa.types.is_list(field.type) or pa.types.is_fixed_size_list(field.type):
            column = pa.array([json.dumps(v) for v in column.to_pylist()], pa.string())
        elif pa.types.is_dictionary(field.type):
            column = column.cast(pa.string())
        columns.append(column)
    return pa.Table.from_arrays(columns, names=table.column_names)
