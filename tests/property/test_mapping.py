"""Properties of bulk conversion (`mapping.plan` + `mapping.convert`): file columns in, model arrays out.

For any table, every row is either converted with exactly the values a reference conversion gives,
or rejected with a reason naming the column and the expected datatype; valid + rejected = rows.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given
from hypothesis import strategies as st
from strategies import DATATYPES, convert_scalar, odd_floats, odd_ints, odd_text, scalars

from tritonkit.clients import mapping
from tritonkit.clients.metadata import ModelMeta, TensorMeta
from tritonkit.clients.sources import _records_to_batch
from tritonkit.errors import UsageError

TYPED = [
    pa.int8(),
    pa.int16(),
    pa.int32(),
    pa.int64(),
    pa.uint8(),
    pa.uint32(),
    pa.uint64(),
    pa.float32(),
    pa.float64(),
    pa.bool_(),
    pa.null(),
]


def typed_values(arrow_type):
    if pa.types.is_null(arrow_type):
        return st.none()
    if pa.types.is_boolean(arrow_type):
        return st.one_of(st.none(), st.booleans())
    if pa.types.is_floating(arrow_type):
        return st.one_of(st.none(), odd_floats, st.integers(-5, 5).map(float))
    info = np.iinfo(arrow_type.to_pandas_dtype())
    return st.one_of(
        st.none(),
        st.integers(int(info.min), int(info.max)),
        st.integers(-3, 300).filter(lambda v: info.min <= v <= info.max),
    )


@st.composite
def columns(draw, n: int, name: str):
    """(field, array, content): `content` is what the column holds, as Python values."""
    kind = draw(st.sampled_from(["typed", "text", "json", "list", "binary"]))
    if kind == "typed":
        arrow_type = draw(st.sampled_from(TYPED))
        array = pa.array(draw(st.lists(typed_values(arrow_type), min_size=n, max_size=n)), arrow_type)
        return pa.field(name, arrow_type), array, array.to_pylist()
    if kind == "text":
        values = draw(st.lists(st.one_of(st.none(), odd_text), min_size=n, max_size=n))
        return pa.field(name, pa.string()), pa.array(values, pa.string()), values
    if kind == "binary":
        values = draw(st.lists(st.one_of(st.none(), st.binary(max_size=6)), min_size=n, max_size=n))
        return pa.field(name, pa.binary()), pa.array(values, pa.binary()), values
    leaf = st.one_of(st.none(), odd_ints, odd_floats, st.booleans(), odd_text)
    if kind == "list":
        values = draw(st.lists(st.one_of(st.none(), st.lists(leaf, max_size=4)), min_size=n, max_size=n))
    else:  # a JSON Lines column, possibly of mixed types (the reader keeps those as JSON text)
        values = draw(st.lists(st.one_of(scalars, st.lists(leaf, max_size=4)), min_size=n, max_size=n))
    batch = _records_to_batch([{name: v} for v in values], None)
    field, array = batch.schema.field(0), batch.column(0)
    # A typed column holds what Arrow made of the values (1 and 2.5 -> 1.0 and 2.5); test_sources checks
    # that this loses nothing. A JSON-text column must give the values back exactly.
    return field, array, values if mapping.is_json_text(field) else array.to_pylist()


@st.composite
def problems(draw):
    """A model with 1-2 inputs, a table feeding them (by name, or stacked scalar columns) and the --map specs."""
    n = draw(st.integers(1, 12))
    inputs, fields, arrays, content, maps = [], [], [], {}, []
    for i in range(draw(st.integers(1, 2))):
        datatype = draw(st.sampled_from(DATATYPES))
        width = draw(st.sampled_from([1, 1, 2, 3]))
        tensor = TensorMeta(f"in{i}", datatype, (-1, width))
        inputs.append(tensor)
        stacked = width > 1 and draw(st.booleans())
        names = [f"in{i}_{j}" for j in range(width)] if stacked else [tensor.name]
        if stacked:
            maps.append(f"{','.join(names)}={tensor.name}")
        for name in names:
            field, array, values = draw(columns(n, name))
            fields.append(field)
            arrays.append(array)
            content[name] = values
    meta = ModelMeta("m", ("1",), "", tuple(inputs), (TensorMeta("out", "FP32", (-1, 1)),), 16)
    return meta, pa.Table.from_arrays(arrays, schema=pa.schema(fields)), content, maps


def expected_row(spec: mapping.InputColumns, content: dict, row: int):
    """The values one input must get from one row, or None when the row must be rejected."""
    datatype, k = spec.tensor.datatype, spec.width
    if len(spec.columns) > 1:
        values = [content[c][row] for c in spec.columns]
        if any(isinstance(v, (list, dict)) for v in values):
            return None
    else:
        value = content[spec.columns[0]][row]
        if isinstance(value, list):
            values = value
        elif k == 1:
            values = [value]
        else:
            return None
        if len(values) != k:
            return None
    converted = [convert_scalar(v, datatype) for v in values]
    return [c for _, c in converted] if all(ok for ok, _ in converted) else None


def scalar_only(table: pa.Table, spec: mapping.InputColumns) -> bool:
    """A typed scalar column cannot feed a vector input: that is a usage error, not a bad row."""
    if len(spec.columns) > 1 or spec.width == 1:
        return False
    field = table.schema.field(spec.columns[0])
    return not (
        pa.types.is_list(field.type)
        or pa.types.is_large_list(field.type)
        or pa.types.is_fixed_size_list(field.type)
        or mapping.is_json_text(field)
    )


@given(problems())
def test_convert_gives_exact_values_or_a_reason_for_every_row(problem):
    meta, table, content, maps = problem
    specs = mapping.plan(meta, table.column_names, mapping.parse_maps(maps))
    if any(scalar_only(table, s) for s in specs):
        with pytest.raises(UsageError, match="holds scalars"):
            mapping.convert(table, specs)
        return
    arrays, valid, reasons = mapping.convert(table, specs)
    n = table.num_rows
    assert valid.shape == (n,) and int(valid.sum()) + len(reasons) == n
    assert sorted(reasons) == np.flatnonzero(~valid).tolist()
    wanted = [{s.tensor.name: expected_row(s, content, i) for s in specs} for i in range(n)]
    for i in range(n):
        good = all(v is not None for v in wanted[i].values())
        shown = {c: content[c][i] for c in content}
        assert valid[i] == good, f"row {i} {shown!r}: valid={valid[i]}, reason={reasons.get(i)!r}, want {wanted[i]!r}"
        if not good:
            feeding = [s for s in specs if wanted[i][s.tensor.name] is None]
            assert any(f"`{c}`" in reasons[i] for s in feeding for c in s.columns), reasons[i]
            assert any(s.tensor.datatype in reasons[i] for s in feeding), reasons[i]
            assert len(reasons[i]) < 600
    for spec in specs:
        got = arrays[spec.tensor.name]
        assert got.dtype == spec.tensor.numpy_dtype and got.shape == (int(valid.sum()), spec.width)
        for j, i in enumerate(np.flatnonzero(valid)):
            want = wanted[i][spec.tensor.name]
            if spec.tensor.datatype == "BYTES":
                assert got[j].tolist() == want
            else:
                np.testing.assert_array_equal(got[j], np.array(want, dtype=spec.tensor.numpy_dtype))


@given(
    st.lists(st.sampled_from(["x", "y", "z", "w"]), min_size=1, max_size=3, unique=True),
    st.lists(st.tuples(st.sampled_from(["x", "y", "q"]), st.sampled_from(["in0", "in1", "nope"])), max_size=2),
)
def test_plan_raises_usage_error_naming_the_column_when_one_is_missing(file_columns, pairs):
    meta = ModelMeta("m", ("1",), "", (TensorMeta("in0", "FP32", (-1, 1)), TensorMeta("in1", "INT64", (-1, 1))), (), 16)
    maps = [f"{column}={name}" for column, name in pairs]
    parsed = mapping.parse_maps(maps)
    try:
        specs = mapping.plan(meta, file_columns, parsed)
    except UsageError as e:
        assert "nope" in str(e) or any(
            f"'{c}'" in str(e) or f"`{c}`" in str(e) for c in {"in0", "in1", "x", "y", "q"} - set(file_columns)
        )
        return
    assert "nope" not in parsed
    for spec in specs:
        assert all(c in file_columns for c in spec.columns)
        assert spec.columns == parsed.get(spec.tensor.name, (spec.tensor.name,))


def test_convert_keeps_huge_strings_out_of_reasons():
    meta = ModelMeta("m", ("1",), "", (TensorMeta("x", "FP32", (-1, 1)),), (), 16)
    table = pa.table({"x": pa.array(["z" * 2_000_000, "1.5"])})
    arrays, valid, reasons = mapping.convert(table, mapping.plan(meta, ["x"], {}))
    assert valid.tolist() == [False, True] and arrays["x"].tolist() == [[1.5]]
    assert "`x`" in reasons[0] and len(reasons[0]) < 300
