"""What identifies an input chunk for `--resume`: a fast hash of the values that were read.

Each finished chunk's part records the digest of the chunk as it was read (`digest`); a resumed run
reads the input again and refuses a finished chunk whose digest differs, whatever the file's size or
modification time say. The digest covers the column names and types and, per column, which rows are
null and the values of the others, in a canonical form: two reads of the same data give the same
digest whatever Arrow left in unused memory (under nulls, past a slice). xxHash3 (128 bits) hashes
several GB/s per core, so the check costs a small fraction of reading the input (see README).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import xxhash


def digest(table: pa.Table) -> str:
    """Hex digest of `table`'s columns: names, types, nulls and values."""
    h = xxhash.xxh3_128()
    for field, column in zip(table.schema, table.columns):
        h.update(f"{field.name}\x00{field.type}\x00{len(column)}\x00".encode())
        _array(h, column.combine_chunks())  # one array whatever the batching: chunks are combined already
    return h.hexdigest()


def _array(h, array: pa.Array) -> None:
    t = array.type
    if array.null_count:
        h.update(np.packbits(array.is_valid().to_numpy(zero_copy_only=False)).tobytes())
    if pa.types.is_dictionary(t):
        _array(h, array.dictionary_decode())
    elif pa.types.is_null(t):
        return
    elif pa.types.is_boolean(t) or pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_temporal(t):
        values = (
            array.fill_null(pa.scalar(False if pa.types.is_boolean(t) else 0).cast(t)) if array.null_count else array
        )
        h.update(np.ascontiguousarray(values.to_numpy(zero_copy_only=False)).tobytes())
    elif pa.types.is_string(t) or pa.types.is_binary(t) or pa.types.is_large_string(t) or pa.types.is_large_binary(t):
        _variable(h, array)
    elif pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        h.update(pc.list_value_length(array).fill_null(-1).to_numpy(zero_copy_only=False).tobytes())
        _array(h, array.flatten())
    elif pa.types.is_struct(t):
        for child in array.flatten():
            _array(h, child)
    else:  # decimals, maps, unions: rare in scoring inputs; exact but slower
        h.update(repr(array.to_pylist()).encode())


def _variable(h, array: pa.Array) -> None:
    """Offsets relative to the first value, and the bytes they cover: nothing before or after the slice."""
    t = array.type
    if array.null_count:  # a null slot's bytes are unspecified: as empty
        array = array.fill_null(pa.scalar(b"" if pa.types.is_binary(t) or pa.types.is_large_binary(t) else "", t))
    width = np.int64 if pa.types.is_large_string(t) or pa.types.is_large_binary(t) else np.int32
    offsets_buffer, data = array.buffers()[1:3]
    if offsets_buffer is None or len(array) == 0:
        return
    offsets = np.frombuffer(offsets_buffer, dtype=width)[array.offset : array.offset + len(array) + 1]
    h.update((offsets - offsets[0]).astype(np.int64).tobytes())
    if data is not None:
        h.update(memoryview(data)[int(offsets[0]) : int(offsets[-1])])
