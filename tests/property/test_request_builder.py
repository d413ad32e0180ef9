"""Properties of the real-time request builder (`ModelMeta.record_arrays`): JSON record in, arrays out.

Every record either becomes arrays whose values are exactly the record's (in the model's dtypes and
shapes) or raises InputError naming the field; nothing else escapes, nothing is silently changed.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from strategies import convert_scalar, json_values, models, scalars

from tritonkit.clients.metadata import ModelMeta, TensorMeta
from tritonkit.errors import InputError


def nested_shape(value):
    """(shape, leaves) of a rectangular nested list of scalars; None when ragged or holding objects."""
    if isinstance(value, dict):
        return None
    if not isinstance(value, list):
        return (), [value]
    parts = [nested_shape(v) for v in value]
    if any(p is None for p in parts) or len({p[0] for p in parts}) > 1:
        return None
    inner = parts[0][0] if parts else ()
    return (len(value), *inner), [leaf for p in parts for leaf in p[1]]


def fits(shape: tuple, tensor: TensorMeta) -> bool:
    return len(shape) == len(tensor.shape) and all(d in (-1, s) for d, s in zip(tensor.shape, shape))


def expected(meta: ModelMeta, tensor: TensorMeta, value):
    """The array the builder must produce for `value`, or None when it must refuse it."""
    found = nested_shape(value)
    if found is None:
        return None
    shape, leaves = found
    converted = [convert_scalar(v, tensor.datatype, text=False) for v in leaves]
    if not all(ok for ok, _ in converted):
        return None
    inner = tensor.shape[1:] if meta.batching else tensor.shape
    if meta.batching and len(shape) == len(inner):
        shape = (1, *shape)
    elif meta.batching and shape == () and tuple(inner) == (1,):
        shape = (1, 1)
    if not fits(shape, tensor):
        return None
    return np.array([c for _, c in converted], dtype=tensor.numpy_dtype).reshape(shape)


def values_for(tensor: TensorMeta):
    """Values shaped like the tensor wants (with or without the batch dimension) or not at all."""
    leaf = st.one_of(scalars, st.integers(-3, 3), st.floats(-10, 10))
    dims = [d if d > 0 else 2 for d in tensor.shape]
    shaped = leaf
    for d in reversed(dims):
        shaped = st.lists(shaped, min_size=d, max_size=d)
    return st.one_of(shaped, json_values, leaf, st.lists(leaf, max_size=4))


@st.composite
def requests(draw):
    meta = draw(models())
    record = {t.name: draw(values_for(t)) for t in meta.inputs}
    if draw(st.booleans()):
        record = (
            draw(st.dictionaries(st.sampled_from([t.name for t in meta.inputs] + ["extra"]), st.just(None), max_size=4))
            | record
        )
    if draw(st.integers(0, 9)) == 0:
        record.pop(meta.inputs[0].name)
    if draw(st.integers(0, 9)) == 0:
        record["unexpected_field"] = 1
    return meta, record


@given(requests())
def test_record_arrays_equal_the_record_or_raise_input_error_naming_the_field(request):
    meta, record = request
    names = {t.name for t in meta.inputs}
    wanted = None
    if set(record) == names:
        wanted = {t.name: expected(meta, t, record[t.name]) for t in meta.inputs}
    try:
        arrays = meta.record_arrays(record)
    except InputError as e:
        assert e.field is not None and f"`{e.field}`" in str(e)
        assert e.field in names or e.field not in names and e.field in record  # unknown fields are named too
        if e.field in names and e.field in record:
            assert wanted is not None and wanted[e.field] is None, f"refused a valid value: {record[e.field]!r}"
            tensor = next(t for t in meta.inputs if t.name == e.field)
            assert tensor.datatype in str(e)
        elif e.field in names:
            assert "missing" in str(e)
        else:
            assert "unknown" in str(e)
        return
    assert wanted is not None, f"accepted a record with fields {sorted(record)}; model takes {sorted(names)}"
    for tensor in meta.inputs:
        array = arrays[tensor.name]
        assert wanted[tensor.name] is not None, f"accepted {record[tensor.name]!r} for {tensor}"
        assert array.dtype == tensor.numpy_dtype and fits(array.shape, tensor)
        assert array.shape == wanted[tensor.name].shape
        if tensor.datatype == "BYTES":
            assert array.ravel().tolist() == wanted[tensor.name].ravel().tolist()
        else:
            np.testing.assert_array_equal(array, wanted[tensor.name])


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf"), 1e39])
def test_record_arrays_refuses_non_finite_float_when_model_takes_fp32(value):
    meta = ModelMeta("m", ("1",), "", (TensorMeta("x", "FP32", (-1, 1)),), (), 8)
    with pytest.raises(InputError, match="input `x`") as caught:
        meta.record_arrays({"x": value})
    assert caught.value.field == "x"


@pytest.mark.parametrize(
    "value, datatype",
    [
        (2.5, "INT64"),
        (300, "UINT8"),
        (-1, "UINT32"),
        (2**63, "INT64"),
        (2, "BOOL"),
        (None, "BYTES"),
        ({"a": 1}, "BYTES"),
        (True, "BYTES"),
    ],
)
def test_record_arrays_refuses_value_when_it_does_not_fit_the_datatype(value, datatype):
    meta = ModelMeta("m", ("1",), "", (TensorMeta("x", datatype, (-1, 1)),), (), 8)
    with pytest.raises(InputError, match=f"input `x`.*{datatype}"):
        meta.record_arrays({"x": value})


def test_record_arrays_shortens_huge_values_in_its_error():
    meta = ModelMeta("m", ("1",), "", (TensorMeta("x", "FP32", (-1, 1)),), (), 8)
    with pytest.raises(InputError) as caught:
        meta.record_arrays({"x": "y" * 1_000_000})
    assert len(str(caught.value)) < 400


@given(st.one_of(json_values, st.lists(st.dictionaries(st.text(max_size=3), scalars), max_size=2)))
def test_record_arrays_raises_input_error_when_record_is_not_an_object(value):
    meta = ModelMeta("m", ("1",), "", (TensorMeta("x", "FP32", (-1, 1)),), (), 8)
    if isinstance(value, dict) and set(value) == {"x"}:
        return
    with pytest.raises(InputError):
        meta.record_arrays(value)


@given(
    st.lists(st.one_of(st.binary(max_size=12), st.text(max_size=6), st.integers()), max_size=40),
    st.sampled_from([(-1,), (-1, 1)]),
)
def test_serialize_bytes_matches_tritonclient_when_values_are_bytes_text_or_numbers(values, shape):
    from tritonclient.utils import serialize_byte_tensor

    from tritonkit.clients.wire import serialize_bytes

    array = np.empty(len(values), dtype=object)
    array[:] = values
    array = array.reshape(shape)
    expected = serialize_byte_tensor(array).item() if values else b""
    assert serialize_bytes(array) == expected
