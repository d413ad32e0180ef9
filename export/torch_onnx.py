"""PyTorch modules to ONNX with a dynamic batch dimension and named inputs and outputs."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np
import torch

from tritonkit.export.parity import Parity, check, compare

logger = logging.getLogger(__name__)

DEFAULT_OPSET = 18
MAX_BATCH_DIM = 1 << 20


def export_module(
    module: torch.nn.Module,
    example_inputs: dict[str, torch.Tensor],
    output_names: list[str],
    path: Path,
    opset: int = DEFAULT_OPSET,
) -> Path:
    """Writes `module` as one self-contained ONNX file whose first dimension is the batch.

    `example_inputs` are keyword order: the module's forward takes them positionally in that order.
    """
    module = module.eval()
    # The exporter warns about optional torchvision ops and its own deprecations on every call.
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH_DIM)
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        for category in (FutureWarning, UserWarning, DeprecationWarning):
            warnings.simplefilter("ignore", category)
        torch.onnx.export(
            module,
            tuple(example_inputs.values()),
            str(path),
            input_names=list(example_inputs),
            output_names=output_names,
            dynamic_shapes={name: {0: batch} for name in example_inputs},
            opset_version=opset,
            dynamo=True,
            external_data=False,
            verbose=False,
        )
    logger.info("wrote %s", path)
    return path


def torch_parity(
    module: torch.nn.Module,
    path: Path,
    inputs: dict[str, np.ndarray],
    output_names: list[str],
    atol: float = 1e-5,
    rtol: float = 1e-4,
) -> list[Parity]:
    """Runs the ONNX file in onnxruntime and the module in PyTorch on `inputs`; raises when they differ."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    onnx_out = session.run(output_names, inputs)
    with torch.no_grad():
        torch_out = module.eval()(*(torch.from_numpy(np.array(v)) for v in inputs.values()))
    if isinstance(torch_out, torch.Tensor):
        torch_out = (torch_out,)
    results = [compare(name, t.numpy(), o, atol, rtol) for name, t, o in zip(output_names, torch_out, onnx_out)]
    return check(results)
