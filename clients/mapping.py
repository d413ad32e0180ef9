"""File columns to model inputs: mapping by name, conversion and row-level validation for bulk scoring.

Columns map to inputs by name from the server's metadata; `--map column=input` covers the rest,
`--map a,b,c=input` stacks scalar columns into one vector input, and a list column (Parquet list,
JSON array) feeds a vector input directly. Conversion is vectorised; a row whose value does not fit
gets a reason naming the column, the value and what was expected, and only that row is rejected.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tritonkit.clients.metadata import ModelMeta, TensorMeta
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
        raise UsageError(f"--map names input {unknown[0]!r}, which model `{meta.name}` does not have; "
                         f"its inputs: {meta.signature()}")
    result = []
    for tensor in meta.inputs:
        inner = tensor.shape[1:]
        if any(d < 1 for d in inner):
            raise UsageError(f"input `{tensor.name}` has variable shape {list(tensor.shape)}: bulk scoring "
                             "needs fixed shapes")
        width = math.prod(inner) if inner else 1
        columns = maps.get(tensor.name, (tensor.name,))
        missing = [c for c in columns if c not in file_columns]
        if missing:
            raise UsageError(
                f"model `{meta.name}` input `{tensor.name}` ({tensor.datatype} {list(tensor.shape)}) needs column "
                f"{missing[0]!r}, which the input does not have; its columns: {', '.join(file_columns)}. "
                f"Use --map COLUMN={tensor.name}"
            )
        if len(columns) > 1 and len(columns) != width:
            raise UsageError(f"--map gives {len(columns)} columns for input `{tensor.name}`, which takes "
                             f"{width} values per row")
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


def _value(column: pa.ChunkedArray | pa.Array, i: int):
    value = column[i].as_py()
    return value if not isinstance(value, str) or len(value) <= 80 else value[:77] + "..."


def _scalar(column: pa.Array, name: str, tensor: TensorMeta, rows: _Rows) -> np.ndarray:
    """One scalar column as a numpy vector of the input's dtype; bad rows rejected, left as 0."""
    dtype = tensor.numpy_dtype
    nulls = column.is_null().to_numpy(zero_copy_only=False)
    rows.reject(nulls, lambda i: f"`{name}` is missing (null); input `{tensor.name}` expects {tensor.datatype}")
    if tensor.datatype == "BYTES":
        values = column.cast(pa.string()) if not pa.types.is_string(column.type) else column
        return np.array([v.encode() if v is not None else b"" for v in values.to_pylist()], dtype=object)
    target = pa.from_numpy_dtype(dtype)
    try:
        cast = pc.cast(column, target)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        cast = None
    if cast is None:  # slow path: find the values that do not convert, one by one
        python = column.to_pylist()
        out = np.zeros(len(python), dtype=dtype)
        bad = np.zeros(len(python), dtype=bool)
        for i, v in enumerate(python):
            if v is None:
                continue
            try:
                out[i] = float(v) if dtype.kind == "f" else int(v) if dtype.kind in "iu" else bool(v)
                if dtype.kind in "iu" and (float(v) != out[i]):
                    raise ValueError
            except (ValueError, TypeError, OverflowError):
                bad[i] = True
        rows.reject(bad, lambda i: f"`{name}` is {python[i]!r}; input `{tensor.name}` expects {tensor.datatype}")
    else:
        out = cast.fill_null(0).to_numpy(zero_copy_only=False).astype(dtype, copy=False)
    if dtype.kind == "f":
        rows.reject(~np.isfinite(out) & ~nulls,
                    lambda i: f"`{name}` is {_value(column, i)!r}: not finite; input `{tensor.name}` expects finite "
                    f"{tensor.datatype}")
    return out


def _list(column: pa.Array, spec: InputColumns, rows: _Rows) -> np.ndarray:
    """One list column (k values per row) as an [n, k] array; rows of another length rejected."""
    name, tensor, k = spec.columns[0], spec.tensor, spec.width
    n = len(column)
    lengths = pc.list_value_length(column).fill_null(-1).to_numpy(zero_copy_only=False)
    rows.reject(lengths != k, lambda i: f"`{name}` has {max(lengths[i], 0)} values (or is null); input "
                f"`{tensor.name}` expects {k} ({tensor.datatype} {list(tensor.shape)})")
    good = np.flatnonzero(lengths == k)
    out = np.zeros((n, k), dtype=tensor.numpy_dtype)
    if good.size:
        flat = pc.list_flatten(column.take(pa.array(good)))
        inner = _Rows(len(flat))
        values = _scalar(flat, name, tensor, inner)
        out[good] = values.reshape(-1, k)
        bad_rows = good[np.unique(np.flatnonzero(inner.bad) // k)]
        mask = np.zeros(n, dtype=bool)
        mask[bad_rows] = True
        rows.reject(mask, lambda i: f"`{name}` holds a missing, non-numeric or non-finite value; input "
                    f"`{tensor.name}` expects {tensor.datatype}")
    return out


def convert(table: pa.Table, specs: list[InputColumns]) -> tuple[dict[str, np.ndarray], np.ndarray, dict[int, str]]:
    """Returns (arrays of the valid rows by input name, valid-row mask, reason per rejected row)."""
    rows = _Rows(table.num_rows)
    from tritonkit.clients.sources import JSON_ERROR_COLUMN

    if JSON_ERROR_COLUMN in table.column_names:
        errors = table.column(JSON_ERROR_COLUMN).combine_chunks()
        rows.reject(errors.is_valid().to_numpy(zero_copy_only=False), lambda i: errors[i].as_py())
    full: dict[str, np.ndarray] = {}
    for spec in specs:
        if len(spec.columns) == 1:
            column = table.column(spec.columns[0]).combine_chunks()
            if pa.types.is_list(column.type) or pa.types.is_large_list(column.type) or \
                    pa.types.is_fixed_size_list(column.type):
                array = _list(column, spec, rows)
            elif spec.width == 1:
                array = _scalar(column, spec.columns[0], spec.tensor, rows)
            else:
                raise UsageError(f"column {spec.columns[0]!r} holds scalars but input `{spec.tensor.name}` takes "
                                 f"{spec.width} values per row: map a list column or {spec.width} scalar columns")
        else:
            array = np.stack([_scalar(table.column(c).combine_chunks(), c, spec.tensor, rows)
                              for c in spec.columns], axis=1)
        full[spec.tensor.name] = array.reshape((table.num_rows, *spec.inner_shape))
    valid = ~rows.bad
    arrays = {name: (a if valid.all() else a[valid]) for name, a in full.items()}
    return arrays, valid, rows.reasons
