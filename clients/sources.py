"""Input files for bulk scoring, read in streaming chunks: Parquet, CSV, JSON Lines, or a folder of them.

Chunks are fixed slices of the input in a deterministic order (files sorted by path, rows in file
order), numbered from 0: chunk k holds global rows [k * chunk_rows, (k + 1) * chunk_rows). That
numbering is what makes resuming and sharding exact.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from tritonkit.clients import formats, storage, unify
from tritonkit.clients.unify import JSON_TEXT_KEY  # noqa: F401 (re-exported)
from tritonkit.errors import UsageError

JSON_ERROR_COLUMN = "__json_error__"


@dataclass(frozen=True)
class Chunk:
    index: int
    first_row: int  # global number of the chunk's first row
    table: pa.Table


InputFile = Path | storage.Location  # a local file, or an object in object storage


def input_format(path: InputFile) -> str:
    fmt = formats.of(path.name)
    if fmt is None:
        raise UsageError(
            f"input {path} has suffix {path.suffix!r}; expected one of {', '.join(sorted(formats.SUFFIXES))}"
        )
    return fmt


def _loc(path: InputFile) -> storage.Location:
    return path if isinstance(path, storage.Location) else storage.locate(path)


def input_files(path: Path | str, exclude: tuple = ()) -> list[InputFile]:
    """The files of an input: the file itself, or a folder's supported files sorted by relative path.

    Paths under `exclude` (a run's own output, rejects and parts, when they sit inside the input folder)
    are left out, so a run never reads its own results back as input. An object storage URI gives Locations.
    """
    if storage.is_uri(path):
        return _object_files(storage.locate(path), exclude)
    path = Path(path)
    if not path.exists():
        raise UsageError(f"input {path} does not exist")
    if path.is_file():
        input_format(path)
        return [path]
    skip = [_loc(p).path for p in exclude]
    return _checked(path, sorted(p for p in path.rglob("*") if p.is_file() and _wanted(_loc(p).path, skip)))


def _wanted(path: str, skip: list[str]) -> bool:
    name = path.rpartition("/")[2]
    if not formats.of(name) or name.startswith((".", "_")):
        return False
    return not any(path == s or path.startswith(s.rstrip("/") + "/") for s in skip)


def _object_files(where: storage.Location, exclude: tuple) -> list[storage.Location]:
    if where.is_file():
        input_format(where)
        return [where]
    skip = [_loc(p).path for p in exclude]
    files = [f for f in where.files() if _wanted(f.path, skip)]
    if not files and not where.exists():
        raise UsageError(f"input {where} does not exist")
    return _checked(where, files)


def _checked(folder, files: list) -> list:
    if not files:
        raise UsageError(f"input folder {folder} holds no {', '.join(sorted(formats.SUFFIXES))} files")
    if len({input_format(p) for p in files}) > 1:
        raise UsageError(f"input folder {folder} mixes formats; score one format per run")
    return files


def identity(files: list[InputFile]) -> list[dict]:
    """The input's files for a resume's manifest: paths and sizes. Their content is checked chunk by chunk
    (`tritonkit.clients.fingerprint`), so a file touched without a change resumes, and an edit that keeps
    the size and the modification time does not."""
    return [{"path": _loc(p).uri, "size": _loc(p).size()} for p in files]


def column_types(files: list[InputFile], column: str) -> list[tuple[str, pa.DataType]]:
    """(file name, type) of `column` in each Parquet file that has it (from the footers; no data read)."""
    found = []
    for p in files:
        if input_format(p) == "parquet" and not _empty(p):
            try:
                schema = pq.ParquetFile(_loc(p).open_input_file()).schema_arrow
            except (pa.ArrowInvalid, OSError):
                continue  # reading says which file is broken
            if column in schema.names:
                found.append((p.name, schema.field(column).type))
    return found


def count_rows(files: list[InputFile]) -> int | None:
    """Total rows when cheap to know (Parquet footers); None otherwise."""
    if all(input_format(p) == "parquet" for p in files):
        try:
            return sum(pq.ParquetFile(_loc(p).open_input_file()).metadata.num_rows for p in files if not _empty(p))
        except (pa.ArrowInvalid, OSError):
            return None  # reading says which file is broken
    return None


def _empty(path: InputFile) -> bool:
    """A file with nothing in it (0 bytes, or only blank lines for text formats) holds no rows."""
    size = _loc(path).size()
    if size == 0 or input_format(path) == "parquet" or size > 4096:
        return size == 0
    return not _loc(path).read_bytes().strip()


def _parquet_batches(path: InputFile, columns: list[str] | None) -> Iterator[pa.RecordBatch]:
    try:
        reader = pq.ParquetFile(_loc(path).open_input_file())
    except (pa.ArrowInvalid, OSError) as e:
        raise UsageError(f"input {path} is not a readable Parquet file: {e}") from None
    with reader:
        present = None if columns is None else [c for c in columns if c in reader.schema_arrow.names]
        yield from reader.iter_batches(batch_size=65_536, columns=present)  # missing columns become nulls


def _csv_batches(
    path: InputFile, columns: list[str] | None, string_columns: list[str], binary_columns: list[str] = ()
) -> Iterator[pa.RecordBatch]:
    # Feature columns are read as text and cast by the validator, so one bad value rejects one row
    # instead of failing the whole block's type conversion; the id column as bytes, decoded by `ids`.
    types = {c: pa.binary() for c in binary_columns} | {c: pa.string() for c in string_columns}
    convert = pacsv.ConvertOptions(
        column_types=types,
        include_columns=columns,
        include_missing_columns=True,
        strings_can_be_null=True,
    )
    try:
        with pacsv.open_csv(
            _loc(path).open_input_stream(), read_options=pacsv.ReadOptions(block_size=8 << 20), convert_options=convert
        ) as reader:
            yield from reader
    except pa.ArrowInvalid as e:  # a row with another number of fields, a value unlike its column's type
        raise UsageError(f"input {path} is not valid CSV: {e}") from None


def _jsonl_batches(path: InputFile, columns: list[str] | None, rows: int = 65_536) -> Iterator[pa.RecordBatch]:
    """JSON Lines, one object per line; a line that is not a JSON object (or not UTF-8) becomes a row with an error."""
    with io.BufferedReader(_loc(path).open_input_stream(), 1 << 20) as handle:
        records: list[dict] = []
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line.decode("utf-8"))
                if not isinstance(record, dict):
                    raise ValueError(f"it is a JSON {type(record).__name__}")
            except (ValueError, RecursionError) as e:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
                reason = str(e) if len(str(e)) <= 200 else str(e)[:197] + "..."
                record = {JSON_ERROR_COLUMN: f"line {number} of {path.name} is not a JSON object: {reason}"}
            records.append(record)
            if len(records) == rows:
                yield _records_to_batch(records, columns)
                records = []
        if records:
            yield _records_to_batch(records, columns)


def _records_to_batch(records: list[dict], columns: list[str] | None) -> pa.RecordBatch:
    names = list(columns or dict.fromkeys(k for r in records for k in r))
    if JSON_ERROR_COLUMN not in names:
        names.append(JSON_ERROR_COLUMN)  # always there: a batch of `{}` lines still has its rows
    arrays, fields = [], []
    for name in names:
        values = [r.get(name) for r in records]
        try:
            array = pa.array(values, pa.string() if name == JSON_ERROR_COLUMN else None)
            if any(_bool_lost(v, array.type) for v in values):
                raise pa.ArrowTypeError("booleans mixed with numbers")  # Arrow made true 1.0
            arrays.append(array)
            fields.append(pa.field(name, array.type))
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, OverflowError):
            # Mixed types (or integers past 64 bits) in one column: keep each value as JSON text, marked
            # so the validator reads it back exactly and rejects only the rows that don't fit.
            arrays.append(unify.json_text(values))
            fields.append(unify.json_text_field(name))
    return pa.RecordBatch.from_arrays(arrays, schema=pa.schema(fields))


def _bool_lost(value, arrow_type: pa.DataType) -> bool:
    """Whether a boolean in `value` sits where Arrow inferred something else (it turns true into 1.0)."""
    if isinstance(value, bool):
        return not pa.types.is_boolean(arrow_type)
    if isinstance(value, list) and arrow_type.num_fields == 1 and not pa.types.is_struct(arrow_type):
        return any(_bool_lost(v, arrow_type.value_type) for v in value)
    if isinstance(value, dict) and pa.types.is_struct(arrow_type):
        return any(
            _bool_lost(value[arrow_type.field(i).name], arrow_type.field(i).type)
            for i in range(arrow_type.num_fields)
            if arrow_type.field(i).name in value
        )
    return False


def read_batches(
    files: list[InputFile], columns: list[str] | None = None, text_columns: list[str] = (), byte_columns: list[str] = ()
) -> Iterator[pa.RecordBatch]:
    for path in files:
        fmt = input_format(path)
        if _empty(path):
            continue
        if fmt == "parquet":
            yield from _parquet_batches(path, columns)
        elif fmt == "csv":
            wanted = [c for c in text_columns if columns is None or c in columns]
            yield from _csv_batches(path, columns, wanted, [c for c in byte_columns if c not in wanted])
        else:
            yield from _jsonl_batches(path, columns)


def chunks(
    files: list[InputFile],
    chunk_rows: int,
    columns: list[str] | None = None,
    text_columns: list[str] = (),
    byte_columns: list[str] = (),
) -> Iterator[Chunk]:
    """Re-slices the file batches into chunks of exactly `chunk_rows` rows (the last may be shorter).

    CSV columns in `text_columns` are read as text, those in `byte_columns` as bytes (ids: decoded later).
    """
    pending: list[pa.RecordBatch] = []
    held = 0
    index = 0
    for batch in read_batches(files, columns, text_columns, byte_columns):
        pending.append(batch)
        held += batch.num_rows
        while held >= chunk_rows:
            table = unify.table(pending)
            yield Chunk(index, index * chunk_rows, table.slice(0, chunk_rows).combine_chunks())
            rest = table.slice(chunk_rows)
            pending, held, index = rest.to_batches(), rest.num_rows, index + 1
    if held:
        yield Chunk(index, index * chunk_rows, unify.table(pending).combine_chunks())


def column_names(files: list[InputFile]) -> list[str]:
    """The columns of the first file that is not empty (read from its header, without reading the data)."""
    path = next((p for p in files if not _empty(p)), None)
    if path is None:
        return []
    fmt = input_format(path)
    try:
        if fmt == "parquet":
            return pq.ParquetFile(_loc(path).open_input_file()).schema_arrow.names
        if fmt == "csv":
            stream = _loc(path).open_input_stream()
            with pacsv.open_csv(stream, read_options=pacsv.ReadOptions(block_size=1 << 20)) as reader:
                return reader.schema.names
    except (pa.ArrowInvalid, OSError) as e:
        raise UsageError(f"input {path} is not a readable {fmt} file: {e}") from None
    names: dict[str, None] = {}
    with io.TextIOWrapper(io.BufferedReader(_loc(path).open_input_stream()), encoding="utf-8", errors="replace") as f:
        for line, _ in zip(f, range(1000)):
            try:
                record = json.loads(line)
            except (ValueError, RecursionError):
                continue
            if isinstance(record, dict):
                names.update(dict.fromkeys(record))
    return list(names)
