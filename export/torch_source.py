"""PyTorch models to ONNX (or TorchScript, `--format torchscript`: torch_script.py) in a Triton repository,
checked against PyTorch.

Three sources: an nn.Module built by an import path `pkg.module:callable` (optionally with a state_dict
or checkpoint file), a TorchScript file (`.pt`, torch.jit.save) or a torch.export program (`.pt2`,
torch.export.save). The batch dimension is always dynamic. Inputs are named after forward()'s
parameters and outputs `output` (or `output_0`, ... for a tuple, the keys for a dict) unless renamed.

Parity: 256 random rows (fewer for large inputs) plus --sample rows run through the ONNX graph in
onnxruntime, the first row alone and the rest as one batch, and through the source model in PyTorch.
Default tolerance: atol 1e-4 (times the output's largest magnitude) or rtol 1e-3. With --fp16 the graph
computes in FP16 (the module is exported after `.half()`) and is compared with the FP32 source on the
same FP16-rounded inputs, at atol 1e-2 or rtol 1e-2.
"""

from __future__ import annotations

import copy
import importlib
import inspect
import logging
import os
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from tritonkit.errors import ExportError, UsageError
from tritonkit.export.options import (
    TABULAR_MAX_BATCH_SIZE,
    TENSOR_MAX_BATCH_SIZE,
    ExportOptions,
    ExportResult,
    check_dynamic_batch,
    rename,
    specs_from_onnx,
    versioned,
)
from tritonkit.export.parity import check, compare
from tritonkit.export.torch_inputs import (
    DTYPES,
    InputSpec,
    numpy_dtype,
    parse_inputs,
    random_inputs,
    sample_inputs,
)
from tritonkit.export.torch_onnx import DEFAULT_OPSET, MAX_BATCH_DIM

logger = logging.getLogger(__name__)

ATOL, RTOL = 1e-4, 1e-3
FP16_ATOL, FP16_RTOL = 1e-2, 1e-2


def load_factory(spec: str) -> torch.nn.Module:
    """Call `pkg.module:callable` (no arguments) and return the nn.Module it builds."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise UsageError(f"--model is {spec!r}; expected pkg.module:callable (a class or a function)")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name != module_name.split(".")[0] or os.getcwd() in sys.path:
            raise UsageError(f"--model {spec}: cannot import `{module_name}`: {e}") from e
        sys.path.insert(0, os.getcwd())  # the console script does not put the working folder on the path
        return load_factory(spec)
    except Exception as e:
        raise UsageError(f"--model {spec}: importing `{module_name}` raised {type(e).__name__}: {e}") from e
    target = module
    for part in attr.split("."):
        if not hasattr(target, part):
            raise UsageError(f"--model {spec}: `{module_name}` has no `{attr}`")
        target = getattr(target, part)
    if not callable(target):
        raise UsageError(f"--model {spec}: `{attr}` is a {type(target).__name__}, not a callable")
    try:
        built = target()
    except Exception as e:
        raise UsageError(f"--model {spec}: calling `{attr}()` raised {type(e).__name__}: {e}") from e
    if not isinstance(built, torch.nn.Module):
        raise UsageError(f"--model {spec} returned a {type(built).__name__}, not a torch.nn.Module")
    return built


def load_weights(module: torch.nn.Module, path: Path) -> None:
    """Load a state_dict file, or a checkpoint dict holding one under state_dict / model_state_dict / model."""
    if not path.is_file():
        raise UsageError(f"--weights {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise UsageError(
            f"--weights {path} is not a state_dict file ({type(e).__name__}); "
            "save one with torch.save(model.state_dict(), path)"
        ) from e
    if isinstance(state, dict):
        for key in ("state_dict", "model_state_dict", "model"):
            if isinstance(state.get(key), dict):
                state = state[key]
                break
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UsageError(f"--weights {path} holds no state_dict (a dict of tensor names to tensors)")
    try:
        result = module.load_state_dict(state, strict=False)
    except RuntimeError as e:  # shapes that do not fit the module's parameters
        raise UsageError(f"--weights {path} does not fit {type(module).__name__}: {e}") from e
    if result.missing_keys or result.unexpected_keys:
        raise UsageError(
            f"--weights {path} does not fit {type(module).__name__}: "
            f"missing {result.missing_keys[:5]}, unexpected {result.unexpected_keys[:5]}"
        )


def _program_inputs(program, path: Path) -> list[InputSpec]:
    values = {n.name: n.meta.get("val") for n in program.graph.nodes if n.op == "placeholder"}
    to_triton = {dtype: name for name, dtype in DTYPES.items()}
    specs = []
    for name in program.graph_signature.user_inputs:
        value = values.get(name)
        if not isinstance(value, torch.Tensor) or value.dim() == 0:
            raise UsageError(f"{path}: input `{name}` is not a batched tensor")
        if not isinstance(value.shape[0], torch.SymInt):
            raise UsageError(
                f"{path} was saved with a fixed batch size of {value.shape[0]} for `{name}`; export it "
                f"with dynamic_shapes={{'{name}': {{0: torch.export.Dim('batch')}}}} so Triton can batch"
            )
        dims = tuple(d if isinstance(d, int) else -1 for d in value.shape[1:])
        if -1 in dims:
            raise UsageError(
                f"{path}: input `{name}` has a variable dimension besides the batch; "
                "tritonkit exports fixed shapes per row"
            )
        specs.append(InputSpec(name, dims, to_triton.get(value.dtype, str(value.dtype))))
    return specs


@dataclass
class Source:
    """A loaded PyTorch model, ready to run in eval mode and to export."""

    kind: str  # module, torchscript or program
    label: str
    module: torch.nn.Module
    inputs: list[InputSpec]
    forward_names: list[str] | None  # None: forward(*args) takes any names


def _forward_names(module, kind: str) -> list[str] | None:
    if kind == "torchscript":
        return [a.name for a in module.forward.schema.arguments[1:]]
    parameters = list(inspect.signature(module.forward).parameters.values())
    if any(p.kind == p.VAR_POSITIONAL for p in parameters):
        return None
    return [p.name for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]


def load_source(model_file: Path | None, factory: str | None, weights: Path | None, inputs: list[InputSpec]) -> Source:
    """Load the model from a file or a factory; check the --input-shape names against forward()."""
    if (model_file is None) == (factory is None):
        raise UsageError("give either MODEL_FILE (.pt TorchScript, .pt2 torch.export) or --model pkg.module:callable")
    if weights is not None and factory is None:
        raise UsageError("--weights goes with --model pkg.module:callable; a .pt/.pt2 file carries its own weights")
    if model_file is not None:
        model_file = Path(model_file)
        if not model_file.is_file():
            raise UsageError(f"model file {model_file} does not exist")
        if model_file.suffix == ".pt2":
            try:
                program = torch.export.load(str(model_file))
            except Exception as e:
                raise UsageError(f"{model_file} is not a torch.export program ({type(e).__name__}: {e})") from e
            if inputs:
                raise UsageError(
                    f"{model_file} records its inputs' shapes and dtypes; drop --input-shape/--input-dtype"
                )
            specs = _program_inputs(program, model_file)
            return Source("program", model_file.name, program.module(), specs, [s.name for s in specs])
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)  # torch 2.13 deprecates TorchScript
                module = torch.jit.load(str(model_file), map_location="cpu")
        except Exception as e:
            raise UsageError(
                f"{model_file} is not a TorchScript file ({type(e).__name__}); for a state_dict use "
                "--model pkg.module:callable --weights FILE, for torch.export save a .pt2"
            ) from e
        source = Source("torchscript", model_file.name, module, inputs, _forward_names(module, "torchscript"))
    else:
        module = load_factory(factory)
        if weights is not None:
            load_weights(module, Path(weights))
        label = factory + (f" + {Path(weights).name}" if weights else "")
        source = Source("module", label, module, inputs, _forward_names(module, "module"))
    if not source.inputs:
        expected = ", ".join(source.forward_names or []) or "each forward argument"
        raise UsageError(f"{source.label}: give --input-shape NAME=DIMS for {expected} (dims without the batch)")
    names = [s.name for s in source.inputs]
    if source.forward_names is not None and names != source.forward_names[: len(names)]:
        forward = ", ".join(source.forward_names)
        raise UsageError(
            f"--input-shape names {', '.join(names)} do not match forward({forward}) "
            f"of {source.label}: give them in that order"
        )
    return source


def _flatten(output, prefix: str = "output") -> list[tuple[str, torch.Tensor]]:
    if isinstance(output, torch.Tensor):
        return [(prefix, output)]
    if isinstance(output, dict):
        return [pair for key, value in output.items() for pair in _flatten(value, str(key))]
    if isinstance(output, (tuple, list)):
        return [pair for i, value in enumerate(output) for pair in _flatten(value, f"{prefix}_{i}")]
    raise ExportError(f"forward() returned a {type(output).__name__}; expected tensors (alone, in a tuple or a dict)")


def run_torch(module, arrays: dict[str, np.ndarray], inputs: list[InputSpec]) -> list[tuple[str, np.ndarray]]:
    """The module's outputs (default names and values) on `arrays`, in FP32 for float inputs."""
    tensors = [torch.from_numpy(np.ascontiguousarray(arrays[s.name])).to(s.torch_dtype) for s in inputs]
    with torch.no_grad():
        outputs = _flatten(module(*tensors))
    return [
        (name, value.detach().float().numpy() if value.is_floating_point() else value.numpy())
        for name, value in outputs
    ]


def export_graph(
    module,
    source: Source,
    example: list[torch.Tensor],
    input_names: list[str],
    output_names: list[str],
    path: Path,
    opset: int,
) -> None:
    """Write `module` as one ONNX file with a dynamic first dimension on every input and output."""
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    with warnings.catch_warnings():
        for category in (FutureWarning, UserWarning, DeprecationWarning):
            warnings.simplefilter("ignore", category)
        try:
            if source.kind == "torchscript":  # torch.export cannot trace a ScriptModule: the TorchScript exporter
                torch.onnx.export(
                    module,
                    tuple(example),
                    str(path),
                    input_names=input_names,
                    output_names=output_names,
                    opset_version=opset,
                    dynamo=False,
                    dynamic_axes={name: {0: "batch"} for name in [*input_names, *output_names]},
                )
                return
            batch = (
                torch.export.Dim.DYNAMIC
                if source.kind == "program"
                else torch.export.Dim("batch", min=1, max=MAX_BATCH_DIM)
            )
            torch.onnx.export(
                module,
                tuple(example),
                str(path),
                input_names=input_names,
                output_names=output_names,
                dynamic_shapes=tuple({0: batch} for _ in example),
                opset_version=opset,
                dynamo=True,
                external_data=False,
                verbose=False,
            )
        except Exception as e:
            reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ExportError(f"torch.onnx.export failed for {source.label}: {reason}") from e


def parity(
    path: Path,
    source_module,
    arrays: dict[str, np.ndarray],
    inputs: list[InputSpec],
    input_names: list[str],
    output_names: list[str],
    options: ExportOptions,
) -> list:
    """ONNX (first row alone, the rest as one batch) against the FP32 source on the same values."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feeds = {
        name: arrays[spec.name].astype(numpy_dtype(spec, options.fp16_graph)) for spec, name in zip(inputs, input_names)
    }
    source_arrays = {spec.name: feeds[name] for spec, name in zip(inputs, input_names)}  # FP16-rounded with --fp16
    expected = run_torch(source_module, source_arrays, inputs)
    first = session.run(output_names, {k: v[:1] for k, v in feeds.items()})
    rest = session.run(output_names, {k: v[1:] for k, v in feeds.items()})
    atol, rtol = (FP16_ATOL, FP16_RTOL) if options.fp16_graph else (ATOL, RTOL)
    results = []
    for name, (_, want), one, many in zip(output_names, expected, first, rest):
        got = np.concatenate([one, many])
        results.append(compare(name, want, got, *options.tolerance(want, atol, rtol)))
    return check(results)


def export_torch(
    options: ExportOptions,
    *,
    model_file: Path | None = None,
    factory: str | None = None,
    weights: Path | None = None,
    input_shapes: list[str] = (),
    input_dtypes: list[str] = (),
) -> ExportResult:
    """Export, parity-check and write a PyTorch model as the next version of `options.name`."""
    source = load_source(model_file, factory, weights, parse_inputs(list(input_shapes), list(input_dtypes)))
    inputs = source.inputs
    if options.fp16_graph and not any(s.dtype in ("FP32", "FP64") for s in inputs):
        logger.warning("--fp16: %s takes no float inputs; only its weights become FP16", source.label)
    arrays = random_inputs(inputs)
    rows = len(next(iter(arrays.values())))
    checked = f"{rows} random rows"
    if options.sample is not None:
        sample = sample_inputs(options.sample, inputs)
        arrays = {k: np.concatenate([v, sample[k].astype(v.dtype)]) for k, v in arrays.items()}
        checked += f" + {len(next(iter(sample.values())))} rows of {options.sample.name}"
    source_module = source.module
    if source.kind != "program":  # a torch.export program is fixed in the mode it was exported in
        source_module.eval()
    defaults = [name for name, _ in run_torch(source_module, {k: v[:2] for k, v in arrays.items()}, inputs)]
    input_names = rename([s.name for s in inputs], options.input_names, "--input-name")
    output_names = rename(defaults, options.output_names, "--output-name")
    exported = source_module
    if options.fp16_graph:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # deepcopy of ScriptModules and GraphModules warns about internals
            exported = copy.deepcopy(source_module).half()
    example = [
        torch.from_numpy(np.ascontiguousarray(arrays[s.name][:2].astype(numpy_dtype(s, options.fp16_graph))))
        for s in inputs
    ]
    tabular = all(len(s.dims) <= 1 for s in inputs)
    with versioned(options) as (number, scratch):
        if options.format == "torchscript":
            from tritonkit.export import torch_script

            written = torch_script.write(
                exported, source, source_module, example, arrays, (input_names, output_names), options, scratch
            )
            path, results, input_specs, output_specs = written.path, written.parity, written.inputs, written.outputs
        else:
            path = scratch / "model.onnx"
            export_graph(exported, source, example, input_names, output_names, path, options.opset or DEFAULT_OPSET)
            check_dynamic_batch(path)
            results = parity(path, source_module, arrays, inputs, input_names, output_names, options)
            input_specs, output_specs = specs_from_onnx(path)
        config = options.model_config(
            input_specs,
            output_specs,
            default_max_batch_size=(TABULAR_MAX_BATCH_SIZE if tabular else TENSOR_MAX_BATCH_SIZE),
        )
        config.write(options.model_dir)
    logger.info("exported %s version %d: %s", options.name, number, "; ".join(map(str, results)))
    return ExportResult(options.model_dir / str(number) / path.name, number, config, results, checked)
