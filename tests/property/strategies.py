"""Shared strategies and the reference conversions the properties compare the kit's code against."""

from __future__ import annotations

import math
import re

import numpy as np
from hypothesis import strategies as st

from tritonkit.clients.metadata import ModelMeta, TensorMeta

NUMERIC = ("FP16", "FP32", "FP64", "INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64")
DATATYPES = (*NUMERIC, "BOOL", "BYTES")
INTEGER_TEXT = re.compile(r"\s*[+-]?[0-9]+\s*")
FLOAT_TEXT = re.compile(r"\s*[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?\s*")

names = st.text(st.characters(min_codepoint=97, max_codepoint=122), min_size=1, max_size=6)

# JSON-like scalars at the edges: huge ints, NaN and infinities, subnormals, bools, odd text.
odd_ints = st.one_of(
    st.integers(-300, 300),
    st.integers(-(2**70), 2**70),
    st.sampled_from([2**31, -(2**31) - 1, 2**53 + 1, 2**63, -(2**63) - 1, 2**64, 65504, 65520]),
)
odd_floats = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(-1e6, 1e6),
    st.sampled_from([0.5, 2.0, -0.0, 1e39, -3.5e38, 70000.0, 1e-45, 5e-324, 2.0**53]),
)
odd_text = st.one_of(
    st.sampled_from(
        [
            "",
            "1",
            "2.5",
            " 3 ",
            "-4",
            "1e3",
            "nan",
            "inf",
            "true",
            "false",
            "0",
            "x",
            "1,5",
            "0x10",
            "1_000",
            "+7",
            ".5",
            "5.",
            "null",
        ]
    ),
    st.text(max_size=12),
    st.text(min_size=5_000, max_size=5_000, alphabet="ab"),
)
scalars = st.one_of(st.none(), st.booleans(), odd_ints, odd_floats, odd_text)
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=5), st.dictionaries(names, inner, max_size=3)),
    max_leaves=12,
)


@st.composite
def tensors(draw, batching: bool = True, fixed: bool = False) -> TensorMeta:
    datatype = draw(st.sampled_from(DATATYPES))
    inner = draw(
        st.lists(
            st.integers(1, 3) if fixed else st.sampled_from([-1, 1, 2, 3]), min_size=0 if batching else 1, max_size=2
        )
    )
    if fixed and not inner:
        inner = [1]
    return TensorMeta(draw(names), datatype, tuple(([-1] if batching else []) + inner))


@st.composite
def models(draw, fixed: bool = False) -> ModelMeta:
    batching = True if fixed else draw(st.booleans())
    inputs = draw(st.lists(tensors(batching, fixed), min_size=1, max_size=3, unique_by=lambda t: t.name))
    return ModelMeta(
        "m",
        ("1",),
        "onnxruntime_onnx",
        tuple(inputs),
        (TensorMeta("out", "FP32", (-1, 1) if batching else (1,)),),
        8 if batching else 0,
    )


def convert_scalar(value, datatype: str, text: bool = True):
    """The one right answer for one value: (True, converted) or (False, None). The kit must agree.

    `text`: numbers and booleans may come as text (CSV); JSON requests give real numbers instead.
    """
    if value is None:
        return False, None
    if datatype == "BYTES":
        if isinstance(value, bytes):
            return True, value
        if isinstance(value, str):
            return True, value.encode()
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            return True, str(value).encode()
        return False, None
    if datatype == "BOOL":
        if isinstance(value, (bool, np.bool_)):
            return True, bool(value)
        if isinstance(value, (int, np.integer)) and value in (0, 1):
            return True, bool(value)
        if text and isinstance(value, str) and value.strip().lower() in ("true", "false", "0", "1"):
            return True, value.strip().lower() in ("true", "1")
        return False, None
    dtype = np.dtype(datatype_to_numpy(datatype))
    if isinstance(value, str):
        if not text:
            return False, None
        if value.strip().lower() in ("true", "false"):  # CSV's booleans: 1 and 0, as JSON's and Parquet's are
            value = int(value.strip().lower() == "true")
        elif dtype.kind in "iu":
            if not INTEGER_TEXT.fullmatch(value):
                return False, None
            value = int(value)
        else:
            if not FLOAT_TEXT.fullmatch(value):
                return False, None
            value = float(value)
    if not isinstance(value, (int, float, np.integer, np.floating)):
        return False, None
    if dtype.kind in "iu":
        if isinstance(value, (float, np.floating)):
            if not math.isfinite(value) or value != int(value):
                return False, None
            value = int(value)
        info = np.iinfo(dtype)
        return (True, dtype.type(value)) if info.min <= int(value) <= info.max else (False, None)
    if isinstance(value, (float, np.floating)) and not math.isfinite(value):
        return False, None
    if isinstance(value, int) and not -(2**63) <= value < 2**64:  # past 64 bits: through float64
        if abs(value) >= 2**1024:
            return False, None
        value = float(value)
    with np.errstate(over="ignore"):
        converted = np.asarray(value).astype(dtype)  # one rounding, straight to the target
    return (True, converted[()]) if np.isfinite(converted) else (False, None)


def datatype_to_numpy(datatype: str):
    return {
        "FP16": np.float16,
        "FP32": np.float32,
        "FP64": np.float64,
        "INT8": np.int8,
        "INT16": np.int16,
        "INT32": np.int32,
        "INT64": np.int64,
        "UINT8": np.uint8,
        "UINT16": np.uint16,
        "UINT32": np.uint32,
        "UINT64": np.uint64,
        "BOOL": np.bool_,
    }[datatype]
