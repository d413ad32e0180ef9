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

    @classmethod
    def from_responses(cls, metadata: dict, config: dict) -> "ModelMeta":
        """Builds from the JSON forms of the metadata and config responses (gRPC or HTTP alike)."""
        config = config.get("config", config)

        def tensors(items):
            return tuple(
                TensorMeta(t["name"], t["datatype"], tuple(int(d) for d in t.get("shape", []))) for t in items
            )

        return cls(
            name=metadata["name"],
            versions=tuple(metadata.get("versions", [])),
            platform=metadata.get("platform", ""),
            inputs=tensors(metadata.get("inputs", [])),
            outputs=tensors(metadata.get("outputs", [])),
            max_batch_size=int(config.get("max_batch_size", 0)),
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
        expected = {t.name for t in self.inputs}
        unknown = sorted(set(features) - expected)
        if unknown:
            raise InputError(
                f"unknown input {', '.join(f'`{u}`' for u in unknown)} for model `{self.name}`; "
                f"it takes: {self.signature()}", model=self.name, field=unknown[0], value=features[unknown[0]],
            )
        missing = [t.name for t in self.inputs if t.name not in features]
        if missing:
            raise InputError(
                f"missing input {', '.join(f'`{m}`' for m in missing)} for model `{self.name}`; "
                f"it takes: {self.signature()}", model=self.name, field=missing[0],
            )
        return {t.name: self._array(t, features[t.name]) for t in self.inputs}

    def _array(self, tensor: TensorMeta, value) -> np.ndarray:
        try:
            if tensor.datatype == "BYTES":
                array = np.asarray(value, dtype=object)
                array = np.vectorize(lambda v: v if isinstance(v, bytes) else str(v).encode(), otypes=[object])(array)
            else:
                array = np.asarray(value)
                if array.dtype.kind in "USO":
                    raise ValueError
                array = array.astype(tensor.numpy_dtype, copy=False)
        except (ValueError, TypeError):
            raise InputError(
                f"input `{tensor.name}` got {value!r}; model `{self.name}` expects {tensor.datatype} values",
                model=self.name, field=tensor.name, value=value,
            ) from None
        inner = tensor.shape[1:] if self.batching else tensor.shape
        if self.batching and (array.ndim == len(inner) or (array.ndim == 0 and tuple(inner) == (1,))):
            array = array.reshape((1, *[d if d > 0 else -1 for d in inner]) if array.ndim == 0 else (1, *array.shape))
        if array.ndim != len(tensor.shape) or any(d not in (-1, s) for d, s in zip(tensor.shape, array.shape)):
            raise InputError(
                f"input `{tensor.name}` has shape {list(array.shape)}; model `{self.name}` expects "
                f"{list(tensor.shape)} ({tensor.datatype})", model=self.name, field=tensor.name, value=value,
            )
        return array
