"""PyTorch models as TorchScript (`--format torchscript`): `<version>/model.pt` for a `backend: "pytorch"` config.

NVIDIA's container serves it with its native LibTorch backend (GPU or CPU instances); the embedded
server with the kit's Python-based `pytorch` backend (server/backends/pytorch). A TorchScript source
is kept as it was scripted; a module or a torch.export program is traced on two example rows. The
saved forward() takes the inputs positionally, named as the config's inputs where tracing keeps
the names, and returns a tensor or a tuple of tensors in the config's output order (dict or nested
outputs are flattened by a wrapper), the convention both backends read.

Parity as for ONNX: the saved file is loaded back and run on the check rows, the first row alone and
the rest as one batch, against the source module in FP32.
"""

from __future__ import annotations

import keyword
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from tritonkit.errors import ExportError
from tritonkit.export.options import ExportOptions
from tritonkit.export.parity import Parity, check, compare
from tritonkit.export.torch_inputs import InputSpec, numpy_dtype
from tritonkit.export.torch_source import ATOL, FP16_ATOL, FP16_RTOL, RTOL, Source, _flatten, run_torch
from tritonkit.model_config import TensorSpec

logger = logging.getLogger(__name__)

FILENAME = "model.pt"
_TORCH_TO_TRITON = {
    torch.float32: "FP32",
    torch.float16: "FP16",
    torch.bfloat16: "BF16",
    torch.float64: "FP64",
    torch.int64: "INT64",
    torch.int32: "INT32",
    torch.int16: "INT16",
    torch.int8: "INT8",
    torch.uint8: "UINT8",
    torch.bool: "BOOL",
}


class _Flat(torch.nn.Module):
    """Returns the wrapped module's outputs as one flat tuple of tensors (dicts in key order)."""

    def __init__(self, module):
        super().__init__()
        self.module = module

    def forward(self, *inputs):
        return _flat(self.module(*inputs))


def _flat(output) -> tuple:
    return tuple(value for _, value in _flatten(output))


def _flat_wrapper(module, names: list[str]) -> torch.nn.Module:
    """_Flat whose forward() takes `names`, so the traced file keeps the argument names the config uses."""
    if not all(name.isidentifier() and not keyword.iskeyword(name) for name in names) or len(set(names)) < len(names):
        return _Flat(module)
    args = ", ".join(names)
    namespace: dict = {}
    exec(f"def forward(self, {args}):\n    return _flat(self.module({args}))", {"_flat": _flat}, namespace)
    return type("Flat", (_Flat,), {"forward": namespace["forward"]})(module)


@dataclass(frozen=True)
class Written:
    """What `write` produced: the file, its parity and the config's tensors."""

    path: Path
    parity: list[Parity]
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]


def _plain(output) -> bool:
    return isinstance(output, torch.Tensor) or (
        isinstance(output, tuple) and all(isinstance(v, torch.Tensor) for v in output)
    )


def to_torchscript(module, kind: str, example: list[torch.Tensor], label: str, names: list[str]):
    """`module` as TorchScript returning a tensor or a tuple of tensors: kept when it already is, else traced.

    `names` are forward()'s argument names, kept in the traced file when a wrapper flattens the outputs."""
    with warnings.catch_warnings():
        for category in (FutureWarning, UserWarning, DeprecationWarning, torch.jit.TracerWarning):
            warnings.simplefilter("ignore", category)
        with torch.no_grad():
            plain = _plain(module(*example))
        if kind == "torchscript" and plain:
            return module
        try:
            traced = module if plain else _flat_wrapper(module, names)
            return torch.jit.trace(traced, tuple(example), check_trace=False)
        except Exception as e:
            reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ExportError(f"torch.jit.trace failed for {label}: {reason}") from e


def _outputs(scripted, example: list[torch.Tensor]) -> list[torch.Tensor]:
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = scripted(*example)
    return [result] if isinstance(result, torch.Tensor) else list(result)


def _spec(name: str, dtype: torch.dtype, dims: tuple[int, ...]) -> TensorSpec:
    if dtype not in _TORCH_TO_TRITON:
        raise ExportError(f"tensor `{name}` is {dtype}, which the pytorch backend cannot carry")
    if not dims:  # only a batch dimension: Triton's way is dims [1] reshaped to []
        return TensorSpec(name, _TORCH_TO_TRITON[dtype], (1,), reshape=())
    return TensorSpec(name, _TORCH_TO_TRITON[dtype], tuple(dims))


def _run(scripted, arrays: dict[str, np.ndarray], inputs: list[InputSpec], fp16: bool) -> list[np.ndarray]:
    tensors = [torch.from_numpy(np.ascontiguousarray(arrays[s.name].astype(numpy_dtype(s, fp16)))) for s in inputs]
    return [
        value.float().numpy() if value.is_floating_point() else value.numpy() for value in _outputs(scripted, tensors)
    ]


def write(
    exported,
    source: Source,
    source_module,
    example: list[torch.Tensor],
    arrays: dict[str, np.ndarray],
    names: tuple[list[str], list[str]],
    options: ExportOptions,
    folder: Path,
) -> Written:
    """Save `exported` (the source module, FP16 with --fp16) as `folder/model.pt` and check it against
    `source_module` on `arrays`. `names` are the config's (input names, output names), in order."""
    input_names, output_names = names
    inputs, fp16 = source.inputs, options.fp16_graph
    forward_names = source.forward_names or [s.name for s in inputs]
    scripted = to_torchscript(exported, source.kind, example, source.label, forward_names[: len(inputs)])
    path = folder / FILENAME
    torch.jit.save(scripted, str(path))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch 2.13 deprecates TorchScript
        loaded = torch.jit.load(str(path), map_location="cpu").eval()
    feeds = {s.name: arrays[s.name].astype(numpy_dtype(s, fp16)) for s in inputs}  # FP16-rounded with --fp16
    expected = [value for _, value in run_torch(source_module, feeds, inputs)]
    try:
        first = _run(loaded, {k: v[:1] for k, v in feeds.items()}, inputs, fp16)
        rest = _run(loaded, {k: v[1:] for k, v in feeds.items()}, inputs, fp16)
    except RuntimeError as e:  # a trace that unrolled a loop over the example's rows, say
        reason = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
        raise ExportError(
            f"the TorchScript of {source.label} fails on batch sizes other than the example's 2 rows ({reason}); "
            "script the model (torch.jit.script) and export the .pt file"
        ) from e
    if len(first) != len(expected):
        raise ExportError(f"the saved TorchScript returns {len(first)} tensors; the source returns {len(expected)}")
    atol, rtol = (FP16_ATOL, FP16_RTOL) if fp16 else (ATOL, RTOL)
    results = check(
        [
            compare(name, want, np.concatenate([one, many]), *options.tolerance(want, atol, rtol))
            for name, want, one, many in zip(output_names, expected, first, rest)
        ]
    )
    input_specs = [
        _spec(name, torch.float16 if fp16 and s.dtype in ("FP32", "FP64") else s.torch_dtype, s.dims)
        for name, s in zip(input_names, inputs)
    ]
    output_specs = [
        _spec(name, value.dtype, tuple(value.shape[1:])) for name, value in zip(output_names, _outputs(loaded, example))
    ]
    logger.info("wrote %s", path)
    return Written(path, results, input_specs, output_specs)
