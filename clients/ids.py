"""Row ids for bulk scoring: what `--id-column` values become, by one rule for every input format.

An id is an integer or text, and nothing else:

- a column that is an integer type in every input file (Parquet, Arrow) gives integer ids (int64);
- anything else gives text ids: CSV cells exactly as written (CSV has no types, so `007` stays `007`),
  JSON strings as they are and JSON integers as their digits, Parquet text as it is, binary values
  decoded as UTF-8.

A row whose id is missing (null, an empty CSV cell), is not valid UTF-8, or is neither text nor an
integer (a JSON float, boolean, list or object) is rejected with its row number and the reason; the
output and the prediction store never hold a made-up id such as `"b'c0'"`.
"""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tritonkit.clients.metadata import shorten
from tritonkit.clients.sources import JSON_TEXT_KEY
from tritonkit.errors import UsageError

INT, TEXT = "int", "text"
_CAST_ERRORS = (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError)


def _textual(t: pa.DataType) -> bool:
    return pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_binary(t) or pa.types.is_large_binary(t)


def kind(column: str, types: list[tuple[str, pa.DataType]], typed: bool) -> str:
    """INT or TEXT for the id column, from its type in each input file (`typed`: the format has types).

    Raises UsageError when a typed file holds the column as something that is neither (a float, a date).
    """
    if not typed:
        return TEXT
    for name, t in types:
        if pa.types.is_dictionary(t):
            t = t.value_type
        if not (pa.types.is_integer(t) or _textual(t) or pa.types.is_null(t)):
            raise UsageError(f"--id-column {column!r} is {t} in {name}; an id is text or an integer")
    known = [t for _, t in types if not pa.types.is_null(t)]
    return INT if known and all(pa.types.is_integer(t) for t in known) else TEXT


def extract(values: pa.Array, field: pa.Field, how: str) -> tuple[pa.Array, dict[int, str]]:
    """The chunk's ids as int64 (INT) or string (TEXT), and a reason for each row whose id is unusable.

    Rejected rows hold null in the returned array.
    """
    name = field.name
    if pa.types.is_dictionary(values.type):
        values = values.dictionary_decode()
    if field.metadata and field.metadata.get(JSON_TEXT_KEY) == b"1":
        return _python([None if v is None else json.loads(v) for v in values.to_pylist()], name, how)
    wanted = pa.int64() if how == INT else pa.string()
    if pa.types.is_integer(values.type) or (how == TEXT and _textual(values.type)):
        try:
            return _checked(pc.cast(values, wanted), name)
        except _CAST_ERRORS:
            pass  # an integer past int64, bytes that are not UTF-8: value by value says which rows
    return _python(values.to_pylist(), name, how)


def _checked(ids: pa.Array, name: str) -> tuple[pa.Array, dict[int, str]]:
    missing = np.flatnonzero(ids.is_null().to_numpy(zero_copy_only=False))
    return ids, {int(i): _missing(name) for i in missing}


def _missing(name: str) -> str:
    return f"id `{name}` is missing; every row needs an id (text or an integer)"


def _python(values: list, name: str, how: str) -> tuple[pa.Array, dict[int, str]]:
    """The exact path: one value at a time."""
    out: list = [None] * len(values)
    reasons: dict[int, str] = {}
    for i, value in enumerate(values):
        if value is None:
            reasons[i] = _missing(name)
            continue
        if isinstance(value, bytes):
            try:
                value = value.decode("utf-8")
            except UnicodeDecodeError as e:
                reasons[i] = f"id `{name}` is {shorten(value)}, not UTF-8 text (byte {e.start}); ids are UTF-8"
                continue
        if isinstance(value, int) and not isinstance(value, bool):
            if how == TEXT:
                out[i] = str(value)
            elif -(2**63) <= value < 2**63:
                out[i] = value
            else:
                reasons[i] = f"id `{name}` is {shorten(value)}: out of range for a 64-bit integer id"
        elif isinstance(value, str) and how == TEXT:
            out[i] = value
        else:
            expected = "an integer, like the column's other ids" if how == INT else "text or an integer"
            reasons[i] = f"id `{name}` is {shorten(value)}; an id is {expected}"
    return pa.array(out, pa.int64() if how == INT else pa.string()), reasons
