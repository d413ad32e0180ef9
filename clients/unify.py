"""One table from record batches whose schemas differ (later files, JSON Lines blocks): no value is lost.

A column that holds values of mixed types is kept as JSON text, marked in its field's metadata
(`JSON_TEXT_KEY`), so the validator reads each value back exactly and rejects only the rows that don't fit.
"""

from __future__ import annotations

import json

import pyarrow as pa

JSON_TEXT_KEY = b"tritonkit.json_text"  # field metadata: the column holds JSON text (mixed types in JSON Lines)


def json_text_field(name: str) -> pa.Field:
    return pa.field(name, pa.string(), metadata={JSON_TEXT_KEY: b"1"})


def json_text(values: list) -> pa.Array:
    """Values as JSON text; bytes (a binary column meeting text) as a JSON object that no reader takes for a
    value, so the row is rejected rather than given a made-up one."""
    return pa.array([None if v is None else json.dumps(v, default=_no_bytes) for v in values], pa.string())


def _no_bytes(value) -> dict:
    return {"bytes": value.hex()} if isinstance(value, bytes) else {"not JSON": repr(value)}


def table(batches: list[pa.RecordBatch]) -> pa.Table:
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
        return json_text(column.to_pylist())
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
