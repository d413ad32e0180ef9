"""Input files for bulk scoring, read in streaming chunks: Parquet, CSV, JSON Lines, or a folder of them.

Chunks are fixed slices of the input in a deterministic order (files sorted by path, rows in file
order), numbered from 0: chunk k holds global rows [k * chunk_rows, (k + 1) * chunk_rows). That
numbering is what makes resuming and sharding exact.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from tritonkit.clients import formats
from tritonkit.errors import UsageError

JSON_ERROR_COLUMN = "__json_error__"
JSON_TEXT_KEY = b"tritonkit.json_text"  # field metadata: the column holds JSON text (mixed types in JSON Lines)


@dataclass(frozen=True)
class Chunk:
    index: int
    first_row: int  # global number of the chunk's first row
    table: pa.Table


def input_format(path: Path) -> str:
    fmt = formats.of(path)
    if fmt is None:
        raise UsageError(
            f"input {path} has suffix {path.suffix!r}; expected one of {', '.join(sorted(formats.SUFFIXES))}"
        )
    return fmt


def input_files(path: Path, exclude: tuple[Path, ...] = ()) -> list[Path]:
    """The files of an input: the file itself, or a folder's supported files sorted by relative path.

    Paths under `exclude` (a run's own output, rejects and parts, when they sit inside the input folder)
    are left out, so a run never reads its own results back as input.
    """
    path = Path(path)
    if not path.exists():
        raise UsageError(f"input {path} does not exist")
    if path.is_file():
        input_format(path)
        return [path]
    skip = [p.absolute() for p in exclude]
    files = sorted(
        p
        for p in path.rglob("*")
        if p.is_file()
        and formats.of(p)
        and not p.name.startswith((".", "_"))
        and not any(p.absolute() == s or s in p.absolute().parents for s in skip)
    )
    if not files:
        raise UsageError(f"input folder {path} holds no {', '.join(sorted(formats.SUFFIXES))} files")
    if len({input_format(p) for p in files}) > 1:
        raise UsageError(f"input folder {path} mixes formats; score one format per run")
    return files


def identity(files: list[Path]) -> list[dict]:
    """The input's files for a resume's manifest: paths and sizes. Their content is checked chunk by chunk
    (`tritonkit.clients.fingerprint`), so a file touched without a change resumes, and an edit that keeps
    the size and the modification time does not."""
    return [{"path": str(p.resolve()), "size": p.stat().st_size} for p in files]


def column_types(files: list[Path], column: str) -> list[tuple[str, pa.DataType]]:
    """(file name, type) of `column` in each Parquet file that has it (from the footers; no data read)."""
    found = []
    for p in files:
        if input_format(p) == "parquet" and not _empty(p):
            try:
                schema = pq.ParquetFile(p).schema_arrow
            except (pa.ArrowInvalid, OSError):
                continue  # reading says which file is broken
            if column in schema.names:
                found.append((p.name, schema.field(column).type))
    return found


def count_rows(files: list[Path]) -> int | None:
    """Total rows when cheap to know (Parquet footers); None otherwise."""
    if all(input_format(p) == "parquet" for p in files):
        try:
            return sum(pq.ParquetFile(p).metadata.num_rows for p in files if not _empty(p))
        except (pa.ArrowInvalid, OSError):
            return None  # reading says which file is broken
    return None


def _empty(path: Path) -> bool:
    """A file with nothing in it (0 bytes, or only blank lines for text formats) holds no rows."""
    size = path.stat().st_size
    if size == 0 or input_format(path) == "parquet" or size > 4096:
        return size == 0
    return not path.read_bytes().strip()


def _parquet_batches(path: Path, columns: list[str] | None) -> Iterator[pa.RecordBatch]:
    try:
        reader = pq.ParquetFile(path)
    except (pa.ArrowInvalid, OSError) as e:
        raise UsageError(f"input {path} is not a readable Parquet file: {e}") from None
    with reader:
        present = None if columns is None else [c for c in columns if c in reader.schema_arrow.names]
        yield from reader.iter_batches(batch_size=65_536, columns=present)  # missing columns become nulls


def _csv_batches(
    path: Path, columns: list[str] | None, string_columns: list[str], binary_columns: list[str] = ()
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
            path, read_options=pacsv.ReadOptions(block_size=8 << 20), convert_options=convert
        ) as reader:
            yield from reader
    except pa.ArrowInvalid as e:  # a row with another number of fields, a value unlike its column's type
        raise UsageError(f"input {path} is not valid CSV: {e}") from None


def _jsonl_batches(path: Path, columns: list[str] | None, rows: int = 65_536) -> Iterator[pa.RecordBatch]:
    """JSON Lines, one object per line; a line that is not a JSON object (or not UTF-8) becomes a row with an error."""
    with open(path, "rb") as handle:
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
            arrays.append(_json_text(values))
            fields.append(json_text_field(name))
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


def json_text_field(name: str) -> pa.Field:
    return pa.field(name, pa.string(), metadata={JSON_TEXT_KEY: b"1"})


def _json_text(values: list) -> pa.Array:
    """Values as JSON text; bytes (a binary column meeting text) as a JSON object that no reader takes for a
    value, so the row is rejected rather than given a made-up one."""
    return pa.array([None if v is None else json.dumps(v, default=_no_bytes) for v in values], pa.string())


def _no_bytes(value) -> dict:
    return {"bytes": value.hex()} if isinstance(value, bytes) else {"not JSON": repr(value)}


def read_batches(
    files: list[Path], columns: list[str] | None = None, text_columns: list[str] = (), byte_columns: list[str] = ()
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
    files: list[Path],
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
            table = _table(pending)
            yield Chunk(index, index * chunk_rows, table.slice(0, chunk_rows).combine_chunks())
            rest = table.slice(chunk_rows)
            pending, held, index = rest.to_batches(), rest.num_rows, index + 1
    if held:
        yield Chunk(index, index * chunk_rows, _table(pending).combine_chunks())


def _table(batches: list[pa.RecordBatch]) -> pa.Table:
    """One table from batches whose schemas may differ (later files, JSON Lines blocks): no value is lost.

    A column missing from a batch is null there. Where types differ, each batch is cast to the first
    batch's type when that is exact (Arrow's safe cast), else to a common type Arrow promotes to
    (int64 and double -> double, when exact); failing both, the column becomes JSON text.
    """
    schemas = [b.schema for b in batches]
    if all(s.equals(schemas[0], check_metadata=True) for s in schemas):
        return pa.Table.from_batches(batches, schema=schemas[0])
    names = list(dict.fromkeys(n for s in schemas for n in s.names))
    fields = []
    for name in names:
        present = [s.field(name) for s in schemas if name in s.names]
        typed = [f for f in present if not pa.types.is_null(f.type)] or present
        if all(f.equals(typed[0], check_metadata=True) for f in typed):
            fields.append(typed[0])
            continue
        candidates = [typed[0]]
        try:
            candidates.append(
                pa.unify_schemas([pa.schema([f.remove_metadata()]) for f in typed], promote_options="permissive").field(
                    0
                )
            )
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
            pass
        for field in candidates:
            if all(_cast(b, name, field) is not None for b in batches if name in b.schema.names):
                fields.append(field)
                break
        else:
            fields.append(json_text_field(name))
    schema = pa.schema(fields)
    return pa.Table.from_batches([_conform(b, schema) for b in batches], schema=schema)


def _cast(batch: pa.RecordBatch, name: str, field: pa.Field) -> pa.Array | None:
    """The batch's column as `field` wants it, exactly; None when that would change a value."""
    column = batch.column(name)
    current = batch.schema.field(name)
    if current.equals(field, check_metadata=True):
        return column
    if field.metadata and field.metadata.get(JSON_TEXT_KEY) == b"1":
        if current.metadata and current.metadata.get(JSON_TEXT_KEY) == b"1":
            return column
        return _json_text(column.to_pylist())
    if current.metadata and current.metadata.get(JSON_TEXT_KEY) == b"1" or not _same_kind(column.type, field.type):
        return None if column.null_count < len(column) else pa.nulls(len(column), field.type)
    try:
        return column.cast(field.type, safe=True)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        return None


def _same_kind(source: pa.DataType, target: pa.DataType) -> bool:
    """Casts that keep what a value is: numbers stay numbers, text stays text, booleans stay booleans."""
    if pa.types.is_null(source):
        return True
    numeric = (pa.types.is_integer, pa.types.is_floating)
    if any(f(source) for f in numeric) and any(f(target) for f in numeric):
        return True
    for kind in (pa.types.is_boolean, pa.types.is_string, pa.types.is_large_string, pa.types.is_binary):
        if kind(source):
            return kind(target) or pa.types.is_large_string(target) and pa.types.is_string(source)
    nested = (pa.types.is_list, pa.types.is_large_list, pa.types.is_fixed_size_list)
    if any(f(source) for f in nested) and any(f(target) for f in nested):
        return _same_kind(source.value_type, target.value_type)
    if pa.types.is_struct(source) and pa.types.is_struct(target):
        fields = {target.field(i).name: target.field(i).type for i in range(target.num_fields)}
        return all(
            source.field(i).name in fields and _same_kind(source.field(i).type, fields[source.field(i).name])
            for i in range(source.num_fields)
        )
    return source == target


def _conform(batch: pa.RecordBatch, schema: pa.Schema) -> pa.RecordBatch:
    arrays = []
    for field in schema:
        if field.name in batch.schema.names:
            arrays.append(_cast(batch, field.name, field))
        else:
            arrays.append(pa.nulls(batch.num_rows, field.type))
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


def column_names(files: list[Path]) -> list[str]:
    """The columns of the first file that is not empty (read from its header, without reading the data)."""
    path = next((p for p in files if not _empty(p)), None)
    if path is None:
        return []
    fmt = input_format(path)
    try:
        if fmt == "parquet":
            return pq.ParquetFile(path).schema_arrow.names
        if fmt == "csv":
            with pacsv.open_csv(path, read_options=pacsv.ReadOptions(block_size=1 << 20)) as reader:
                return reader.schema.names
    except (pa.ArrowInvalid, OSError) as e:
        raise UsageError(f"input {path} is not a readable {fmt} file: {e}") from None
    names: dict[str, None] = {}
    with open(path, encoding="utf-8", errors="replace") as handle:
        for line, _ in zip(handle, range(1000)):
            try:
                record = json.loads(line)
            except (ValueError, RecursionError):
                continue
            if isinstance(record, dict):
                names.update(dict.fromkeys(record))
    return list(names)
