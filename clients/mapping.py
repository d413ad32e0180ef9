"""File columns to model inputs: mapping by name, conversion and row-level validation for bulk scoring.

Columns map to inputs by name from the server's metadata (a vector input also by the `feature_names`
its config lists, as tabular exports write); `--map column=input` covers the rest,
`--map a,b,c=input` stacks scalar columns into one vector input, and a list column (Parquet list,
JSON array) feeds a vector input directly. Conversion is vectorised; a row whose value does not fit
gets a reason naming the column, the value and what was expected, and only that row is rejected. A
null is rejected too, except for an input the model's config lists in `missing_inputs` (NaN for
numbers, empty text for BYTES: how tabular exports take missing values).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tritonkit.clients.metadata import ModelMeta, TensorMeta, shorten, to_array
from tritonkit.clients.sources import JSON_ERROR_COLUMN, JSON_TEXT_KEY
from tritonkit.errors import UsageError


@dataclass(frozen=True)
class InputColumns:
    """The file columns that feed one model input."""

    tensor: TensorMeta
    columns: tuple[str, ...]
    width: int  # values per row

    @property
    def inner_shape(self) -> tuple[int, ...]:
        return self.tensor.shape[1:]


def parse_maps(specs: list[str]) -> dict[str, tuple[str, ...]]:
    """`["col=input", "a,b=vec"]` -> {"input": ("col",), "vec": ("a", "b")}."""
    result: dict[str, tuple[str, ...]] = {}
    for spec in specs:
        columns, sep, name = spec.rpartition("=")
        if not sep or not columns or not name:
            raise UsageError(f"--map {spec!r} is not COLUMN=INPUT or COL1,COL2,...=INPUT")
        result[name.strip()] = tuple(c.strip() for c in columns.split(","))
    return result


def plan(meta: ModelMeta, file_columns: list[str], maps: dict[str, tuple[str, ...]]) -> list[InputColumns]:
    """Decides which columns feed which input; raises UsageError naming what is missing."""
    if not meta.batching:
        raise UsageError(f"model `{meta.name}` has max_batch_size 0: bulk scoring needs a model that batches")
    inputs = {t.name: t for t in meta.inputs}
    unknown = sorted(set(maps) - set(inputs))
    if unknown:
        raise UsageError(
            f"--map names input {unknown[0]!r}, which model `{meta.name}` does not have; its inputs: {meta.signature()}"
        )
    result = []
    for tensor in meta.inputs:
        inner = tensor.shape[1:]
        if any(d < 1 for d in inner):
            raise UsageError(
                f"input `{tensor.name}` has variable shape {list(tensor.shape)}: bulk scoring needs fixed shapes"
            )
        width = math.prod(inner) if inner else 1
        columns = maps.get(tensor.name, (tensor.name,))
        named = meta.feature_names  # the config names the columns behind a vector input (sklearn, FIL exports)
        unmapped = tensor.name not in maps and tensor.name not in file_columns and len(meta.inputs) == 1
        if unmapped and len(named) == width and all(c in file_columns for c in named):
            columns = named
        missing = [c for c in columns if c not in file_columns]
        if missing:
            raise UsageError(
                f"model `{meta.name}` input `{tensor.name}` ({tensor.datatype} {list(tensor.shape)}) needs column "
                f"{missing[0]!r}, which the input does not have; its columns: {', '.join(file_columns)}. "
                f"Use --map COLUMN={tensor.name}"
            )
        if len(columns) > 1 and len(columns) != width:
            raise UsageError(
                f"--map gives {len(columns)} columns for input `{tensor.name}`, which takes {width} values per row"
            )
        result.append(InputColumns(tensor, columns, width))
    return result


class _Rows:
    """Collects rejected rows of one chunk: a bad mask and the first reason per row."""

    def __init__(self, n: int):
        self.bad = np.zeros(n, dtype=bool)
        self.reasons: dict[int, str] = {}

    def reject(self, mask: np.ndarray, reason) -> None:
        for i in np.flatnonzero(mask & ~self.bad):
            self.reasons[int(i)] = reason(int(i))
        self.bad |= mask


_INT_TEXT = re.compile(r"\s*[+-]?[0-9]+\s*")
_FLOAT_TEXT = re.compile(r"\s*[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?\s*")
_BOOL_TEXT = {"true": True, "false": False, "1": True, "0": False}
_NON_FINITE = {"nan", "inf", "infinity"}
_CAST_ERRORS = (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError)


def is_json_text(field: pa.Field) -> bool:
    """Whether a column holds JSON text (a JSON Lines column of mixed types, kept as the reader found it)."""
    return bool(field.metadata) and field.metadata.get(JSON_TEXT_KEY) == b"1"


def _reason(name: str, value, why: str, tensor: TensorMeta) -> str:
    """E.g. "`support_calls` is 'many'; input `support_calls` expects FP32" (why, unless it goes without saying)."""
    detail = "" if why in ("not a number", "not a whole number", "not a boolean") else f": {why}"
    return f"`{name}` is {shorten(value)}{detail}; input `{tensor.name}` expects {tensor.datatype}"


def _from_python(value, tensor: TensorMeta):
    """One Python value as the input's dtype (numbers and booleans may come as text); ValueError says why not."""
    if isinstance(value, (list, dict)):
        raise ValueError("not a single value")
    if isinstance(value, str) and tensor.datatype != "BYTES":
        if tensor.datatype == "BOOL":
            if value.strip().lower() not in _BOOL_TEXT:
                raise ValueError("not a boolean")
            value = _BOOL_TEXT[value.strip().lower()]
        elif value.strip().lower() in ("true", "false"):  # one rule for every format: true is 1, false 0
            value = int(value.strip().lower() == "true")
        elif not (_INT_TEXT if tensor.numpy_dtype.kind in "iu" else _FLOAT_TEXT).fullmatch(value):
            raise ValueError("not finite" if value.strip().lower().lstrip("+-") in _NON_FINITE else "not a number")
        else:
            value = int(value) if tensor.numpy_dtype.kind in "iu" else float(value)
    return to_array(value, tensor)[()]


def _python(values: list, name: str, tensor: TensorMeta, rows: _Rows) -> np.ndarray:
    """The slow, exact path: value by value; nulls were rejected already and stay 0."""
    out = np.zeros(len(values), dtype=tensor.numpy_dtype)
    if tensor.datatype == "BYTES":
        out[:] = b""
    elif tensor.missing and out.dtype.kind == "f":
        out[:] = np.nan
    bad = np.zeros(len(values), dtype=bool)
    why: dict[int, str] = {}
    for i, value in enumerate(values):
        if value is None:
            continue
        try:
            out[i] = _from_python(value, tensor)
        except ValueError as e:
            bad[i], why[i] = True, str(e)
    rows.reject(bad, lambda i: _reason(name, values[i], why[i], tensor))
    return out


def _fast(column: pa.Array, tensor: TensorMeta) -> bool:
    """Whether Arrow's own cast gives exactly what `_from_python` would (it refuses, or agrees)."""
    kind, source = tensor.numpy_dtype.kind, column.type
    if tensor.datatype == "BYTES":
        return False
    if kind == "b":
        return pa.types.is_boolean(source) or pa.types.is_null(source)
    return (
        pa.types.is_integer(source)
        or pa.types.is_floating(source)
        or pa.types.is_boolean(source)
        or pa.types.is_null(source)
        or pa.types.is_string(source)
        or pa.types.is_large_string(source)
    )


def _is_text(kind: pa.DataType) -> bool:
    return pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_binary(kind)


def _text(column: pa.Array, nulls: np.ndarray) -> np.ndarray:
    """A text column as BYTES in one Arrow cast; nulls (rejected, or missing values) as empty text."""
    out = pc.cast(column, pa.binary()).to_numpy(zero_copy_only=False)
    if nulls.any():
        out[nulls] = b""
    return out


def _scalar(column: pa.Array, name: str, tensor: TensorMeta, rows: _Rows, json_text: bool = False) -> np.ndarray:
    """One scalar column as a numpy vector of the input's dtype; bad rows rejected, left as 0."""
    dtype = tensor.numpy_dtype
    nulls = column.is_null().to_numpy(zero_copy_only=False)
    if not tensor.missing:  # an input in the model's `missing_inputs` takes nulls: NaN, or empty text
        rows.reject(nulls, lambda i: f"`{name}` is missing (null); input `{tensor.name}` expects {tensor.datatype}")
    if json_text:
        return _python([None if v is None else json.loads(v) for v in column.to_pylist()], name, tensor, rows)
    if tensor.datatype == "BYTES" and _is_text(column.type):
        return _text(column, nulls)
    if not _fast(column, tensor):
        return _python(column.to_pylist(), name, tensor, rows)
    text = pa.types.is_string(column.type) or pa.types.is_large_string(column.type)
    if text:  # Arrow also parses "0x10" and "nan": only plain decimal text takes the fast path
        pattern = (_INT_TEXT if dtype.kind in "iu" else _FLOAT_TEXT).pattern
        if pc.all(pc.match_substring_regex(column, f"^(?:{pattern})$")).as_py() is False:
            return _python(column.to_pylist(), name, tensor, rows)
    try:
        source = column
        if dtype.kind == "f" and text:
            source = pc.cast(column, pa.float64())  # text -> float64 -> dtype, as float(text) would round
        cast = pc.cast(source, pa.from_numpy_dtype(dtype))  # safe: refuses truncation and overflow
    except _CAST_ERRORS:
        return _python(column.to_pylist(), name, tensor, rows)
    out = np.full(len(column), np.nan if tensor.missing and dtype.kind == "f" else 0, dtype=dtype)
    out[~nulls] = cast.drop_null().to_numpy(zero_copy_only=False)
    if dtype.kind == "f":
        finite = np.isfinite(out) | (np.isnan(out) if tensor.missing else False)
        source_finite = (
            np.isfinite(source.to_numpy(zero_copy_only=False).astype(np.float64))
            if pa.types.is_floating(source.type)
            else np.ones(len(out), dtype=bool)
        )  # nulls: rejected above
        rows.reject(
            ~finite & ~nulls,
            lambda i: _reason(
                name,
                column[i].as_py(),
                f"out of range for {tensor.datatype}" if source_finite[i] else "not finite",
                tensor,
            ),
        )
    return out


def _list(column: pa.Array, spec: InputColumns, rows: _Rows) -> np.ndarray:
    """One list column (k values per row) as an [n, k] array; rows of another length rejected."""
    name, tensor, k = spec.columns[0], spec.tensor, spec.width
    n = len(column)
    lengths = pc.list_value_length(column).fill_null(-1).to_numpy(zero_copy_only=False)
    rows.reject(
        lengths != k,
        lambda i: (
            f"`{name}` is missing (null); input `{tensor.name}` expects {k} {tensor.datatype} values"
            if lengths[i] < 0
            else f"`{name}` has {lengths[i]} values; input "
            f"`{tensor.name}` expects {k} ({tensor.datatype} {list(tensor.shape)})"
        ),
    )
    good = np.flatnonzero(lengths == k)
    out = np.zeros((n, k), dtype=tensor.numpy_dtype)
    if good.size:
        flat = pc.list_flatten(column.take(pa.array(good)))
        inner = _Rows(len(flat))
        values = _scalar(flat, name, tensor, inner)
        out[good] = values.reshape(-1, k)
        first_bad: dict[int, int] = {}
        for j in np.flatnonzero(inner.bad)[::-1]:
            first_bad[int(good[j // k])] = int(j)
        mask = np.zeros(n, dtype=bool)
        mask[list(first_bad)] = True
        rows.reject(mask, lambda i: f"{inner.reasons[first_bad[i]]} (value {first_bad[i] % k + 1} of {k})")
    return out


def _json_values(column: pa.Array, spec: InputColumns, rows: _Rows) -> np.ndarray:
    """A JSON-text column: each row a list of k values (or, for k = 1, one value), checked one by one."""
    name, tensor, k = spec.columns[0], spec.tensor, spec.width
    values = [None if v is None else json.loads(v) for v in column.to_pylist()]
    out = np.zeros((len(values), k), dtype=tensor.numpy_dtype)
    reasons: dict[int, str] = {}
    for i, value in enumerate(values):
        if value is None:
            reasons[i] = f"`{name}` is missing (null); input `{tensor.name}` expects {tensor.datatype}"
            continue
        items = value if isinstance(value, list) else [value] if k == 1 else None
        if items is None or len(items) != k:
            reasons[i] = _reason(name, value, f"not a list of {k} values", tensor)
            continue
        try:
            out[i] = [_from_python(v, tensor) for v in items]
        except ValueError as e:
            reasons[i] = _reason(name, value, str(e), tensor)
    mask = np.zeros(len(values), dtype=bool)
    mask[list(reasons)] = True
    rows.reject(mask, reasons.__getitem__)
    return out


def convert(table: pa.Table, specs: list[InputColumns]) -> tuple[dict[str, np.ndarray], np.ndarray, dict[int, str]]:
    """Returns (arrays of the valid rows by input name, valid-row mask, reason per rejected row)."""
    rows = _Rows(table.num_rows)
    if JSON_ERROR_COLUMN in table.column_names:
        errors = table.column(JSON_ERROR_COLUMN).combine_chunks()
        rows.reject(errors.is_valid().to_numpy(zero_copy_only=False), lambda i: errors[i].as_py())
    missing = [c for s in specs for c in s.columns if c not in table.column_names]
    for name in dict.fromkeys(missing):  # a JSON Lines chunk may lack a key other chunks have: all null here
        table = table.append_column(name, pa.nulls(table.num_rows, pa.null()))
    full: dict[str, np.ndarray] = {}
    for spec in specs:
        if len(spec.columns) == 1:
            column = table.column(spec.columns[0]).combine_chunks()
            if is_json_text(table.schema.field(spec.columns[0])):
                array = _json_values(column, spec, rows)
            elif (
                pa.types.is_list(column.type)
                or pa.types.is_large_list(column.type)
                or pa.types.is_fixed_size_list(column.type)
            ):
                array = _list(column, spec, rows)
            elif spec.width == 1:
                array = _scalar(column, spec.columns[0], spec.tensor, rows)
            else:
                raise UsageError(
                    f"column {spec.columns[0]!r} holds scalars but input `{spec.tensor.name}` takes "
                    f"{spec.width} values per row: map a list column or {spec.width} scalar columns"
                )
        else:
            array = np.stack(
                [
                    _scalar(
                        table.column(c).combine_chunks(),
                        c,
                        spec.tensor,
                        rows,
                        json_text=is_json_text(table.schema.field(c)),
                    )
                    for c in spec.columns
                ],
                axis=1,
            )
        full[spec.tensor.name] = array.reshape((table.num_rows, *spec.inner_shape))
    valid = ~rows.bad
    arrays = {name: (a if valid.all() else a[valid]) for name, a in full.items()}
    return arrays, valid, rows.reasons
