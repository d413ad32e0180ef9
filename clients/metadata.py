"""What a served model takes and returns, read from the server (never hard-coded in a client)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from tritonclient.utils import triton_to_np_dtype

from tritonkit.errors import InputError


@dataclass(frozen=True)
class TensorMeta:
    """One input or output: name, Triton datatype and shape (with the batch dimension when batching)."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    missing: bool = False  # takes a missing value (NaN for numbers, empty text for BYTES): config `missing_inputs`

    @property
    def numpy_dtype(self) -> np.dtype:
        return np.dtype(object) if self.datatype == "BYTES" else np.dtype(triton_to_np_dtype(self.datatype))


@dataclass(frozen=True)
class ModelMeta:
    """A served model's metadata joined with the part of its config a client needs (max_batch_size)."""

    name: str
    versions: tuple[str, ...]
    platform: str
    inputs: tuple[TensorMeta, ...]
    outputs: tuple[TensorMeta, ...]
    max_batch_size: int
    feature_names: tuple[str, ...] = ()  # config `feature_names`: the column behind each value of a vector input

    @classmethod
    def from_responses(cls, metadata: dict, config: dict) -> ModelMeta:
        """Builds from the JSON forms of the metadata and config responses (gRPC or HTTP alike)."""
        config = config.get("config", config)
        parameters = {k: (v or {}).get("string_value", "") for k, v in (config.get("parameters") or {}).items()}
        missing = set(filter(None, parameters.get("missing_inputs", "").split(",")))

        def tensors(items, takes_missing=frozenset()):
            return tuple(
                TensorMeta(
                    t["name"], t["datatype"], tuple(int(d) for d in t.get("shape", [])), t["name"] in takes_missing
                )
                for t in items
            )

        return cls(
            name=metadata["name"],
            versions=tuple(metadata.get("versions", [])),
            platform=metadata.get("platform", ""),
            inputs=tensors(metadata.get("inputs", []), missing),
            outputs=tensors(metadata.get("outputs", [])),
            max_batch_size=int(config.get("max_batch_size", 0)),
            feature_names=tuple(filter(None, parameters.get("feature_names", "").split(","))),
        )

    @property
    def batching(self) -> bool:
        return self.max_batch_size > 0

    def signature(self) -> str:
        return ", ".join(f"{t.name} {t.datatype} {list(t.shape)}" for t in self.inputs)

    def record_arrays(self, features: dict) -> dict[str, np.ndarray]:
        """Turns one record (or a few rows) given as {input name: value} into arrays the model accepts.

        A value may be a scalar or list for one record, or carry a leading batch dimension. Raises
        InputError naming the input, the value and what the model expects.
        """
        if not isinstance(features, dict):
            raise InputError(
                f"a record for model `{self.name}` is a JSON object of input names to values; got "
                f"{type(features).__name__} {shorten(features)}; it takes: {self.signature()}",
                model=self.name,
                value=features,
            )
        expected = {t.name for t in self.inputs}
        unknown = sorted(set(features) - expected)
        if unknown:
            raise InputError(
                f"unknown input {', '.join(f'`{u}`' for u in unknown)} for model `{self.name}`; "
                f"it takes: {self.signature()}",
                model=self.name,
                field=unknown[0],
                value=features[unknown[0]],
            )
        missing = [t.name for t in self.inputs if t.name not in features]
        if missing:
            raise InputError(
                f"missing input {', '.join(f'`{m}`' for m in missing)} for model `{self.name}`; "
                f"it takes: {self.signature()}",
                model=self.name,
                field=missing[0],
            )
        return {t.name: self._array(t, features[t.name]) for t in self.inputs}

    def _array(self, tensor: TensorMeta, value) -> np.ndarray:
        try:
            array = to_array(value, tensor)
        except ValueError as e:
            raise InputError(
                f"input `{tensor.name}` got {shorten(value)}; model `{self.name}` expects {tensor.datatype} values "
                f"({e})",
                model=self.name,
                field=tensor.name,
                value=value,
            ) from None
        inner = tensor.shape[1:] if self.batching else tensor.shape
        if self.batching and (array.ndim == len(inner) or (array.ndim == 0 and tuple(inner) == (1,))):
            array = array.reshape((1, *[d if d > 0 else -1 for d in inner]) if array.ndim == 0 else (1, *array.shape))
        if array.ndim != len(tensor.shape) or any(d not in (-1, s) for d, s in zip(tensor.shape, array.shape)):
            raise InputError(
                f"input `{tensor.name}` has shape {list(array.shape)}; model `{self.name}` expects "
                f"{list(tensor.shape)} ({tensor.datatype})",
                model=self.name,
                field=tensor.name,
                value=value,
            )
        return array


def shorten(value, limit: int = 80) -> str:
    """repr() for messages, cut to `limit` characters (a value may be a megabyte of text)."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def to_array(value, tensor: TensorMeta) -> np.ndarray:
    """A JSON value (scalar or rectangular nested lists) as an array of the tensor's dtype, values unchanged.

    Numbers must fit the dtype exactly: finite and in range for floats, integral and in range for
    integers; BOOL takes booleans (or 0/1), BYTES takes text (or numbers, as their text). An input that
    takes missing values (`TensorMeta.missing`) also takes None and NaN: NaN for numbers, empty text
    for BYTES. Raises ValueError saying why not.
    """
    if tensor.datatype == "BYTES":
        array = np.asarray(value, dtype=object)
        convert = _missing_or_bytes if tensor.missing else _to_bytes
        return np.vectorize(convert, otypes=[object])(array) if array.size else array
    dtype = tensor.numpy_dtype
    if tensor.missing and dtype.kind == "f":
        value = _none_as_nan(value)
    try:
        raw = np.asarray(value)
    except (ValueError, TypeError):
        raise ValueError("not a number or a rectangular list of numbers") from None
    if raw.dtype.kind == "O":  # Python ints beyond 64 bits, or something that is not a number at all
        leaves = [_number(v) for v in raw.ravel()]
        try:
            raw = np.array(leaves, dtype=np.float64 if any(isinstance(v, float) for v in leaves) else object)
        except OverflowError:
            raise ValueError("out of range") from None
        raw = raw.reshape(np.asarray(value, dtype=object).shape)
    if raw.dtype.kind not in "biuf" and raw.dtype != object:
        raise ValueError("not a number")
    if dtype.kind == "b":
        if raw.dtype.kind == "b":
            return raw.astype(dtype)
        if raw.dtype.kind in "iuO" and all(int(v) in (0, 1) for v in raw.ravel()):
            return raw.astype(dtype)
        raise ValueError("not a boolean")
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        if raw.dtype.kind == "f":
            if not np.isfinite(raw).all():
                raise ValueError("not finite")
            if (raw != np.floor(raw)).any():
                raise ValueError("not a whole number")
            if raw.size and (raw.min() < float(info.min) or raw.max() >= float(info.max) + 1):
                raise ValueError(f"out of range {info.min}..{info.max}")
        elif raw.size and (int(raw.min()) < info.min or int(raw.max()) > info.max):
            raise ValueError(f"out of range {info.min}..{info.max}")
        return raw.astype(dtype)
    if raw.dtype == object:  # integers too large for int64 / uint64
        try:
            raw = raw.astype(np.float64)
        except OverflowError:
            raise ValueError("out of range") from None
    given = ~np.isnan(raw) if tensor.missing and raw.dtype.kind == "f" else True  # NaN: a missing value
    if raw.dtype.kind == "f" and not np.isfinite(raw[given]).all():
        raise ValueError("not finite")
    with np.errstate(over="ignore"):
        array = raw.astype(dtype)
    if not np.isfinite(array[given]).all():
        raise ValueError(f"out of range for {tensor.datatype}")
    return array


def _none_as_nan(value):
    """None (a missing value, at any depth of nested lists) as NaN."""
    if value is None:
        return float("nan")
    if isinstance(value, list):
        return [_none_as_nan(v) for v in value]
    return value


def _missing_or_bytes(value) -> bytes:
    """Text as bytes; a missing value (None, NaN) as empty text, which the exported graph reads as missing."""
    if value is None or (isinstance(value, (float, np.floating)) and np.isnan(value)):
        return b""
    return _to_bytes(value)


def _number(value):
    if isinstance(value, (bool, int, float, np.number, np.bool_)):
        return value
    raise ValueError(f"{shorten(value, 40)} is not a number")


def _to_bytes(value) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_)):
        return str(value).encode()
    if isinstance(value, (float, np.floating)) and np.isfinite(value):
        return str(value).encode()
    raise ValueError(f"{shorten(value, 40)} is not text")
