"""The inputs of a PyTorch model being exported: their specs from the command line, and rows to check parity on.

`--input-shape NAME=DIMS` and `--input-dtype NAME=TYPE` become `InputSpec`s; parity runs on random
rows of each input's dtype and shape, and on `--sample` rows when given.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from tritonkit.errors import UsageError
from tritonkit.export.options import read_sample

RANDOM_ROWS = 256
RANDOM_ELEMENTS = 4_000_000  # per input: fewer rows for images and long sequences
DTYPES = {
    "FP32": torch.float32,
    "FP16": torch.float16,
    "FP64": torch.float64,
    "INT64": torch.int64,
    "INT32": torch.int32,
    "INT16": torch.int16,
    "INT8": torch.int8,
    "UINT8": torch.uint8,
    "BOOL": torch.bool,
}
FLOATS = ("FP32", "FP16", "FP64")


@dataclass(frozen=True)
class InputSpec:
    """One forward() argument: its name, dims without the batch dimension, and Triton datatype."""

    name: str
    dims: tuple[int, ...]
    dtype: str = "FP32"

    @property
    def torch_dtype(self) -> torch.dtype:
        return DTYPES[self.dtype]


def parse_inputs(shapes: list[str], dtypes: list[str]) -> list[InputSpec]:
    """`--input-shape NAME=DIMS` (DIMS like 5, 3x224x224 or 3,224,224) and `--input-dtype NAME=TYPE`."""
    specs: dict[str, tuple[int, ...]] = {}
    for text in shapes:
        name, sep, dims = (part.strip() for part in text.partition("="))
        try:
            parsed = tuple(int(d) for d in dims.replace(",", "x").split("x")) if dims else ()
        except ValueError:
            parsed = ()
        if not sep or not name or not parsed or any(d < 1 for d in parsed):
            raise UsageError(
                f"--input-shape {text!r}: expected NAME=DIMS without the batch dimension, "
                "each dim a positive integer: x=5, image=3x224x224"
            )
        if name in specs:
            raise UsageError(f"--input-shape gives `{name}` twice")
        specs[name] = parsed
    types: dict[str, str] = {}
    for text in dtypes:
        name, sep, dtype = (part.strip() for part in text.partition("="))
        dtype = dtype.upper().removeprefix("TYPE_")
        if not sep or dtype not in DTYPES:
            raise UsageError(f"--input-dtype {text!r}: expected NAME=TYPE with TYPE one of {', '.join(DTYPES)}")
        if name not in specs:
            raise UsageError(
                f"--input-dtype names `{name}`, which no --input-shape gives (inputs: {', '.join(specs) or 'none'})"
            )
        types[name] = dtype
    return [InputSpec(name, dims, types.get(name, "FP32")) for name, dims in specs.items()]


def random_inputs(inputs: list[InputSpec], seed: int = 0) -> dict[str, np.ndarray]:
    """Random rows per input: normal floats, integers in [0, 10), random booleans."""
    rng = np.random.default_rng(seed)
    per_row = sum(int(np.prod(spec.dims)) for spec in inputs)
    rows = max(8, min(RANDOM_ROWS, RANDOM_ELEMENTS // max(1, per_row)))
    arrays = {}
    for spec in inputs:
        shape = (rows, *spec.dims)
        if spec.dtype in FLOATS:
            arrays[spec.name] = rng.standard_normal(shape).astype(np.float32)
        elif spec.dtype == "BOOL":
            arrays[spec.name] = rng.integers(0, 2, shape).astype(bool)
        else:
            arrays[spec.name] = rng.integers(0, 10, shape).astype(numpy_dtype(spec, False))
    return arrays


def sample_inputs(path: Path, inputs: list[InputSpec]) -> dict[str, np.ndarray]:
    """--sample rows per input: .npz arrays named as the inputs; or a table with one column per [1]-wide
    input, or whose numeric columns are the one input's features."""
    table = read_sample(path)
    names = [s.name for s in inputs]
    if isinstance(table, dict):
        missing = [n for n in names if n not in table]
        if missing:
            raise UsageError(f"--sample {path} lacks arrays for {', '.join(missing)} (it has {', '.join(table)})")
        arrays = {s.name: np.asarray(table[s.name]) for s in inputs}
    elif all(s.dims == (1,) for s in inputs) and set(names) <= set(table.columns):
        arrays = {n: table[[n]].to_numpy() for n in names}
    elif len(inputs) == 1 and table.select_dtypes("number").shape[1] == int(np.prod(inputs[0].dims)):
        arrays = {names[0]: table.select_dtypes("number").to_numpy().reshape(len(table), *inputs[0].dims)}
    else:
        raise UsageError(
            f"--sample {path}: expected columns {', '.join(names)} (one per [1]-wide input), or only "
            f"the one input's {int(np.prod(inputs[0].dims))} numeric columns, or an .npz per input"
        )
    for spec in inputs:
        if arrays[spec.name].shape[1:] != spec.dims:
            raise UsageError(
                f"--sample {path}: `{spec.name}` has rows of shape {list(arrays[spec.name].shape[1:])}, "
                f"expected {list(spec.dims)}"
            )
    return arrays


def numpy_dtype(spec: InputSpec, fp16: bool) -> np.dtype:
    if spec.dtype in FLOATS and fp16:
        return np.dtype(np.float16)
    return torch.empty(0, dtype=spec.torch_dtype).numpy().dtype
