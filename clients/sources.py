"""Input files for bulk scoring, read in streaming chunks: Parquet, CSV, JSON Lines, or a folder of them.

Chunks are fixed slices of the input in a deterministic order (files sorted by path, rows in file
order), numbered from 0: chunk k holds global rows [k * chunk_rows, (k + 1) * chunk_rows). That
numbering is what makes resuming and sharding exact.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from tritonkit.errors import UsageError

FORMATS = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl",
           ".json": "jsonl"}
JSON_ERROR_COLUMN = "__json_error__"


@dataclass(frozen=True)
class Chunk:
    index: int
    first_row: int  # global number of the chunk's first row
    table: pa.Table


def input_format(path: Path) -> str:
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise UsageError(f"input {path} has suffix {path.suffix!r}; expected one of {', '.join(sorted(FORMATS))}")
    return fmt


def input_files(path: Path) -> list[Path]:
    """The files of an input: the file itself, or a folder's supported files sorted by relative path."""
    path = Path(path)
    if not path.exists():
        raise UsageError(f"input {path} does not exist")
    if path.is_file():
        input_format(path)
        return [path]
    files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in FORMATS
                   and not p.name.startswith((".", "_")))
    if not files:
        raise UsageError(f"input folder {path} holds no {', '.join(sorted(FORMATS))} files")
    if len({input_format(p) for p in files}) > 1:
        raise UsageError(f"input folder {path} mixes formats; score one format per run")
    return files


def fingerprint(files: list[Path]) -> list[dict]:
    """What identifies an input for resuming: paths, sizes and modification times."""
    return [{"path": str(p.resolve()), "size": p.stat().st_size, "mtime_ns": p.stat().st_mtime_ns} for p in files]


def count_rows(files: list[Path]) -> int | None:
    """Total rows when cheap to know (Parquet footers); None otherwise."""
    if all(input_format(p) == "parquet" for p in files):
        return sum(pq.ParquetFile(p).metadata.num_rows for p in files)
    return None


def _parquet_batches(path: Path, columns: list[str] | None) -> Iterator[pa.RecordBatch]:
    with pq.ParquetFile(path) as reader:
        yield from reader.iter_batches(batch_size=65_536, columns=columns)


def _csv_batches(path: Path, columns: list[str] | None, string_columns: list[str]) -> Iterator[pa.RecordBatch]:
    # Feature columns are read as text and cast by the validator, so one bad value rejects one row
    # instead of failing the whole block's type conversion.
    convert = pacsv.ConvertOptions(column_types={c: pa.string() for c in string_columns},
                                   include_columns=columns, strings_can_be_null=True)
    with pacsv.open_csv(path, read_options=pacsv.ReadOptions(block_size=8 << 20), convert_options=convert) as reader:
        yield from reader


def _jsonl_batches(path: Path, columns: list[str] | None, rows: int = 65_536) -> Iterator[pa.RecordBatch]:
    """JSON Lines, one object per line; a line that is not a JSON object becomes a row with an error."""
    with open(path, encoding="utf-8") as handle:
        records: list[dict] = []
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                if not isinstance(record, dict):
                    raise ValueError("not a JSON object")
            except ValueError as e:
                record = {JSON_ERROR_COLUMN: f"line {number} of {path.name} is not a JSON object: {e}"}
            records.append(record)
            if len(records) == rows:
                yield _records_to_batch(records, columns)
                records = []
        if records:
            yield _records_to_batch(records, columns)


def _records_to_batch(records: list[dict], columns: list[str] | None) -> pa.RecordBatch:
    names = list(columns or dict.fromkeys(k for r in records for k in r))
    if any(JSON_ERROR_COLUMN in r for r in records) and JSON_ERROR_COLUMN not in names:
        names.append(JSON_ERROR_COLUMN)
    arrays = []
    for name in names:
        values = [r.get(name) for r in records]
        try:
            arrays.append(pa.array(values))
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            # Mixed types in one column: keep the text, the validator rejects the rows that don't fit.
            arrays.append(pa.array([None if v is None else json.dumps(v) for v in values], pa.string()))
    return pa.RecordBatch.from_arrays(arrays, names=names)


def read_batches(files: list[Path], columns: list[str] | None = None,
                 text_columns: list[str] = ()) -> Iterator[pa.RecordBatch]:
    for path in files:
        fmt = input_format(path)
        if fmt == "parquet":
            yield from _parquet_batches(path, columns)
        elif fmt == "csv":
            yield from _csv_batches(path, columns, [c for c in text_columns if columns is None or c in columns])
        else:
            yield from _jsonl_batches(path, columns)


def chunks(files: list[Path], chunk_rows: int, columns: list[str] | None = None,
           text_columns: list[str] = ()) -> Iterator[Chunk]:
    """Re-slices the file batches into chunks of exactly `chunk_rows` rows (the last may be shorter)."""
    pending: list[pa.RecordBatch] = []
    held = 0
    index = 0
    schema = None
    for batch in read_batches(files, columns, text_columns):
        if schema is None:
            schema = batch.schema
        elif batch.schema != schema:
            batch = _conform(batch, schema)
        pending.append(batch)
        held += batch.num_rows
        while held >= chunk_rows:
            table = pa.Table.from_batches(pending, schema=schema)
            yield Chunk(index, index * chunk_rows, table.slice(0, chunk_rows).combine_chunks())
            rest = table.slice(chunk_rows)
            pending, held, index = rest.to_batches(), rest.num_rows, index + 1
    if held:
        yield Chunk(index, index * chunk_rows, pa.Table.from_batches(pending, schema=schema).combine_chunks())


def _conform(batch: pa.RecordBatch, schema: pa.Schema) -> pa.RecordBatch:
    """Makes a later file's batch fit the first one's schema (missing columns as nulls, types cast)."""
    arrays = []
    for field in schema:
        if field.name in batch.schema.names:
            column = batch.column(field.name)
            try:
                arrays.append(column.cast(field.type))
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                arrays.append(pa.array([None if v is None else str(v) for v in column.to_pylist()], pa.string())
                              if field.type == pa.string() else pa.nulls(len(column), field.type))
        else:
            arrays.append(pa.nulls(batch.num_rows, field.type))
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


def column_names(files: list[Path]) -> list[str]:
    """The columns of the first file (read from its header, without reading the data)."""
    path = files[0]
    fmt = input_format(path)
    if fmt == "parquet":
        return pq.ParquetFile(path).schema_arrow.names
    if fmt == "csv":
        with pacsv.open_csv(path, read_options=pacsv.ReadOptions(block_size=1 << 20)) as reader:
            return reader.schema.names
    names: dict[str, None] = {}
    with open(path, encoding="utf-8") as handle:
        for line, _ in zip(handle, range(1000)):
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict):
                names.update(dict.fromkeys(record))
    return list(names)


def size_bytes(files: list[Path]) -> int:
    return sum(os.path.getsize(p) for p in files)
