"""Where bulk results go: one part file per finished chunk, merged into the final output at the end.

A part appears by atomic rename only once its chunk is fully scored, so after a crash (kill -9
included) the parts present are exactly the finished chunks. The final output is written to a
temporary file and renamed into place: it is never left half-written.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from tritonkit.errors import UsageError

OUTPUT_FORMATS = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl"}
REJECT_SCHEMA = pa.schema([("row", pa.int64()), ("id", pa.string()), ("reason", pa.string())])


def output_format(path: Path, requested: str | None) -> str:
    if requested:
        if requested not in ("parquet", "csv", "jsonl"):
            raise UsageError(f"--format is {requested!r}; expected parquet, csv or jsonl")
        return requested
    return OUTPUT_FORMATS.get(path.suffix.lower(), "parquet")


class PartStore:
    """The `<output>.parts/` folder of an unfinished run."""

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
                raise UsageError(f"cannot resume from {self.dir}: {', '.join(changed)} changed since the run began; "
                                 "remove it to start over")
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        _atomic_write_bytes(self.manifest_path, json.dumps(manifest, indent=1).encode())

    def done_chunks(self) -> set[int]:
        return {int(p.stem.split("-")[1]) for p in self.dir.glob("chunk-*.parquet")}

    def counts(self, chunk: int) -> tuple[int, int]:
        """(rows scored, rows rejected) recorded in a finished chunk's parts."""
        scored = pq.ParquetFile(self._path("chunk", chunk)).metadata.num_rows
        rejects = self._path("rejects", chunk)
        return scored, (pq.ParquetFile(rejects).metadata.num_rows if rejects.exists() else 0)

    def _path(self, kind: str, chunk: int) -> Path:
        return self.dir / f"{kind}-{chunk:08d}.parquet"

    def write(self, chunk: int, scored: pa.Table, rejects: pa.Table) -> None:
        """Rejects first, then the scored part: the scored part's presence marks the chunk done."""
        _atomic_parquet(rejects, self._path("rejects", chunk))
        _atomic_parquet(scored, self._path("chunk", chunk))

    def merge(self, output: Path, rejects: Path, fmt: str) -> None:
        """Streams the parts, in chunk order, into the final output and rejects files; then removes the parts."""
        chunks = sorted(self.done_chunks())
        _merge([self._path("rejects", c) for c in chunks], rejects, "jsonl" if rejects.suffix == ".jsonl"
               else output_format(rejects, None), REJECT_SCHEMA)
        _merge([self._path("chunk", c) for c in chunks], output, fmt, None)
        shutil.rmtree(self.dir)


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def _atomic_parquet(table: pa.Table, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    pq.write_table(table, tmp, compression="snappy")
    with open(tmp, "rb") as handle:
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def _merge(parts: list[Path], target: Path, fmt: str, schema: pa.Schema | None) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    if schema is None:
        schema = pq.ParquetFile(parts[0]).schema_arrow if parts else pa.schema([])
    try:
        if fmt == "parquet":
            with pq.ParquetWriter(tmp, schema, compression="snappy") as writer:
                for part in parts:
                    writer.write_table(pq.read_table(part, schema=schema))
        elif fmt == "csv":
            with pacsv.CSVWriter(tmp, _csv_schema(schema)) as writer:
                for part in parts:
                    writer.write_table(_csv_ready(pq.read_table(part, schema=schema)))
        else:
            with open(tmp, "w", encoding="utf-8") as handle:
                for part in parts:
                    for record in pq.read_table(part, schema=schema).to_pylist():
                        handle.write(json.dumps(record, default=str) + "\n")
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _csv_schema(schema: pa.Schema) -> pa.Schema:
    return pa.schema([pa.field(f.name, pa.string()) if pa.types.is_list(f.type) or
                      pa.types.is_fixed_size_list(f.type) or pa.types.is_dictionary(f.type) else f for f in schema])


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
