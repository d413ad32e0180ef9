"""Where bulk results go: one part file per finished chunk, and the final output written in chunk order.

A part appears whole only once its chunk is fully scored (locally by atomic rename; on object storage
by one PUT under the chunk's own key, written once), so after a crash (kill -9 included) the parts
present are exactly the finished chunks. Parts are uncompressed Arrow IPC files, cheap to write and to
read back, because the final output is written once, as the run goes (`OrderedOutput`), not re-encoded
from the parts at the end. The final output grows in a local temporary file and is put in place only
when every chunk is in (a rename, or one upload whose completion makes the object appear): it is never
left half-written.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from tritonkit import atomic
from tritonkit.clients import formats, storage
from tritonkit.clients.storage import Location
from tritonkit.errors import UsageError

REJECT_SCHEMA = pa.schema([("row", pa.int64()), ("id", pa.string()), ("reason", pa.string())])
DIGEST_KEY = b"tritonkit.input_digest"  # a part's footer: the fingerprint of the input chunk it was scored from


def output_format(path: Path | Location, requested: str | None) -> str:
    """The format asked for, else the one the output's suffix names, else Parquet."""
    return formats.checked(requested) if requested else formats.of(path.name) or "parquet"


def staging_dir(target: Location) -> Path:
    """Where an object storage output grows before its upload: `TRITONKIT_STAGING_DIR` (default: the temp dir)."""
    base = Path(os.environ.get("TRITONKIT_STAGING_DIR") or tempfile.gettempdir())
    return base / "tritonkit-staging" / hashlib.sha256(target.uri.encode()).hexdigest()[:16]


class PartStore:
    """The `<output>.parts/` folder of an unfinished run."""

    SUFFIX = ".arrow"

    def __init__(self, output: Path | Location):
        output = storage.locate(output)
        self.dir = output.sibling(output.name + ".parts")

    @property
    def manifest_path(self) -> Location:
        return self.dir.child("manifest.json")

    def exists(self) -> bool:
        return self.manifest_path.exists()

    def start(self, manifest: dict, resume: bool) -> None:
        if self.exists():
            if not resume:
                raise UsageError(f"an unfinished run left {self.dir}: pass --resume to continue it, or remove it")
            previous = json.loads(self.manifest_path.read_bytes())
            changed = sorted(k for k in set(previous) | set(manifest) if previous.get(k) != manifest.get(k))
            if changed:
                raise UsageError(
                    f"cannot resume from {self.dir}: {', '.join(changed)} changed since the run began; "
                    "remove it to start over"
                )
            return
        self.dir.mkdir()
        self.manifest_path.write_bytes(json.dumps(manifest, indent=1).encode())

    def done_chunks(self) -> set[int]:
        return {
            int(f.name[len("chunk-") : -len(self.SUFFIX)])
            for f in self.dir.files()
            if f.name.startswith("chunk-") and f.name.endswith(self.SUFFIX)
        }

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
        with self._path("chunk", chunk).open_input_file() as source:
            value = (pa.ipc.open_file(source).metadata or {}).get(DIGEST_KEY)
        return value.decode() if value else None

    def _path(self, kind: str, chunk: int) -> Location:
        return self.dir.child(f"{kind}-{chunk:08d}{self.SUFFIX}")

    def write(self, chunk: int, scored: pa.Table, rejects: pa.Table, digest: str = "") -> None:
        """Rejects first, then the scored part (with the input chunk's `digest`): its presence marks the chunk done."""
        _write_ipc(rejects, self._path("rejects", chunk))
        _write_ipc(scored, self._path("chunk", chunk), {DIGEST_KEY: digest.encode()} if digest else None)

    def remove(self) -> None:
        self.dir.delete_dir()


class OrderedOutput:
    """The final output and rejects files, appended chunk by chunk in input order, put in place by `commit`."""

    def __init__(self, output: Location, rejects: Location, fmt: str):
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
    """One output file growing in a local temporary file: beside the target, or in the staging folder when
    the target is in object storage."""

    def __init__(self, target: Location, fmt: str, schema: pa.Schema | None = None):
        self.target, self.fmt, self.schema = target, fmt, schema
        local = Path(target.path) if target.local else staging_dir(target) / target.name
        self.tmp = atomic.temporary_path(local)
        self._writer = None
        self._handle = None

    def _open(self, schema: pa.Schema) -> None:
        self.tmp.parent.mkdir(parents=True, exist_ok=True)
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
        if self.target.local:
            atomic.commit(self.tmp, Path(self.target.path))
            return
        try:
            self.target.upload(self.tmp)
        finally:
            self.tmp.unlink(missing_ok=True)

    def abort(self) -> None:
        try:
            if self._writer is not None:
                self._writer.close()
            if self._handle is not None:
                self._handle.close()
        finally:
            self.tmp.unlink(missing_ok=True)


def _write_ipc(table: pa.Table, where: Location, metadata: dict | None = None) -> None:
    """Serialised in memory, then written whole: a rename into place, or one PUT."""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_file(sink, table.schema, metadata=metadata) as writer:
        writer.write_table(table)
    where.write_bytes(sink.getvalue())


def _read_ipc(where: Location) -> pa.Table:
    with where.open_input_file() as source:
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
