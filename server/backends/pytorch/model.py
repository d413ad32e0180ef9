"""A Python-based Triton backend named `pytorch`: serves `<version>/model.pt` (TorchScript) through torch.

NVIDIA's container serves `backend: "pytorch"` (platform pytorch_libtorch) with its native LibTorch
backend; the embedded server resolves the same name to this file, so one config.pbtxt loads in both.
Instances run where the config puts them: KIND_GPU on `cuda:<device id>`, KIND_CPU on the CPU,
KIND_MODEL on the first GPU when there is one. Config inputs map to forward()'s positional arguments
as the native backend maps them: by name when the names are forward()'s, by `NAME__<index>`, else in
config order; outputs (a tensor, or a tuple or list of tensors) by `NAME__<index>`, else in order.

Several requests per `execute` (dynamic batching) are concatenated, moved to the device once, run
once and split back in order; a request whose input does not fit the model gets its own error
response and the others in its batch are still served. Inputs are read through DLPack (as_numpy when
that fails); outputs are copied to host memory once per execution and always handed to Triton with
`pb_utils.Tensor.from_dlpack`, which stays exact under numpy 2 (`pb_utils.Tensor(name, ndarray)`
arrives empty there). The same DLPack path as the onnxruntime and fil backends, without their capsule
renaming: torch's capsule destructor leaves a capsule alone once a consumer renamed it (no report, flat
stub RSS, whichever numpy the stub runs).

This file runs inside Triton's Python backend stub, not inside the tritonkit package: it imports
only torch and `triton_python_backend_utils`. Parameters read from config.pbtxt (the native
backend's names): INTRA_OP_THREAD_COUNT, INTER_OP_THREAD_COUNT.
"""

import json
import os
import re

import torch
import torch.utils.dlpack
import triton_python_backend_utils as pb_utils

_TRITON_TO_TORCH = {
    "TYPE_FP32": torch.float32,
    "TYPE_FP16": torch.float16,
    "TYPE_BF16": torch.bfloat16,
    "TYPE_FP64": torch.float64,
    "TYPE_INT64": torch.int64,
    "TYPE_INT32": torch.int32,
    "TYPE_INT16": torch.int16,
    "TYPE_INT8": torch.int8,
    "TYPE_UINT8": torch.uint8,
    "TYPE_BOOL": torch.bool,
}
_INDEXED = re.compile(r"^.+__(\d+)$")


def _slots(names, forward_names=None):
    """Where each config tensor goes: its position among forward()'s arguments or the returned tensors."""
    if forward_names is not None and sorted(names) == sorted(forward_names):
        return [forward_names.index(name) for name in names]
    matches = [_INDEXED.match(name) for name in names]
    if all(matches) and sorted(int(m.group(1)) for m in matches) == list(range(len(names))):
        return [int(m.group(1)) for m in matches]
    return list(range(len(names)))


def _device(args, model_name):
    kind = args.get("model_instance_kind", "CPU")
    if kind == "GPU":
        if not torch.cuda.is_available():
            raise pb_utils.TritonModelException(
                f"model '{model_name}': instance kind GPU, but torch {torch.__version__} sees no CUDA device"
            )
        return torch.device("cuda", int(args.get("model_instance_device_id", 0)))
    if kind == "MODEL" and torch.cuda.is_available():
        return torch.device("cuda", 0)
    return torch.device("cpu")


def _tensors(config, role, model_name):
    specs = []
    for tensor in config.get(role, []):
        dtype = _TRITON_TO_TORCH.get(tensor["data_type"])
        if dtype is None:
            raise pb_utils.TritonModelException(
                f"model '{model_name}': {role} '{tensor['name']}' is {tensor['data_type']}; the pytorch backend "
                f"takes {', '.join(_TRITON_TO_TORCH)}"
            )
        reshape = tensor.get("reshape")  # what the model sees; an empty reshape leaves out its shape
        dims = tensor.get("dims", []) if reshape is None else reshape.get("shape", [])
        specs.append((tensor["name"], dtype, [int(d) for d in dims]))
    if not specs:
        raise pb_utils.TritonModelException(
            f"model '{model_name}': config.pbtxt lists no {role}s; TorchScript records no tensor names or "
            "shapes, so the pytorch backend needs them in the config"
        )
    return specs


def _set_threads(params):
    intra = int(params.get("INTRA_OP_THREAD_COUNT") or 0)
    inter = int(params.get("INTER_OP_THREAD_COUNT") or 0)
    if intra > 0:
        torch.set_num_threads(intra)
    if inter > 0:
        try:
            torch.set_num_interop_threads(inter)
        except RuntimeError:  # already set, or parallel work already ran in this process
            pass


class TritonPythonModel:
    """Serves one TorchScript model version with torch on the instance's device."""

    def initialize(self, args):
        config = json.loads(args["model_config"])
        self.model_name = args["model_name"]
        path = os.path.join(
            args["model_repository"], args["model_version"], config.get("default_model_filename") or "model.pt"
        )
        if not os.path.exists(path):
            raise pb_utils.TritonModelException(f"model '{self.model_name}': no TorchScript file at {path}")
        _set_threads({k: v.get("string_value", "") for k, v in config.get("parameters", {}).items()})
        self.device = _device(args, self.model_name)
        self.module = torch.jit.load(path, map_location=self.device).eval()
        self.batching = config.get("max_batch_size", 0) > 0
        self.inputs = _tensors(config, "input", self.model_name)
        self.outputs = _tensors(config, "output", self.model_name)
        schema = getattr(getattr(self.module, "forward", None), "schema", None)
        forward_names = [a.name for a in schema.arguments[1:]] if schema is not None else None
        self.input_slots = _slots([name for name, _, _ in self.inputs], forward_names)
        self.output_slots = _slots([name for name, _, _ in self.outputs])
        pb_utils.Logger.log_info(f"model '{self.model_name}': TorchScript on {self.device}")

    def _input(self, request, name):
        tensor = pb_utils.get_input_tensor_by_name(request, name)
        if tensor is None:
            raise ValueError(f"model '{self.model_name}': input '{name}' is missing")
        try:
            return torch.from_dlpack(tensor.to_dlpack())
        except Exception:  # noqa: BLE001 - the stub raises its own types; numpy is the plain way in
            return torch.from_numpy(tensor.as_numpy())

    def _read(self, request):
        """Returns (tensors in config order, batch size) or raises ValueError naming the bad input."""
        tensors, batch = [], None
        for name, dtype, dims in self.inputs:
            value = self._input(request, name)
            if value.dtype != dtype:
                raise ValueError(f"model '{self.model_name}': input '{name}' has dtype {value.dtype}, expected {dtype}")
            shape = list(value.shape)
            expected = ([-1] if self.batching else []) + dims
            if len(shape) != len(expected) or any(d != -1 and d != s for d, s in zip(expected, shape)):
                raise ValueError(f"model '{self.model_name}': input '{name}' has shape {shape}, expected {expected}")
            if self.batching:
                if batch is not None and shape[0] != batch:
                    raise ValueError(
                        f"model '{self.model_name}': input '{name}' has batch size {shape[0]}, "
                        f"other inputs have {batch}"
                    )
                batch = shape[0]
            tensors.append(value)
        return tensors, batch

    def _run(self, tensors):
        """The model's outputs, in config order, as host tensors of the config's dtypes."""
        args = [None] * len(tensors)
        for slot, value in zip(self.input_slots, tensors):
            args[slot] = value.to(self.device)
        with torch.inference_mode():
            result = self.module(*args)
        returned = [result] if isinstance(result, torch.Tensor) else list(result)
        if len(returned) <= max(self.output_slots) or not all(isinstance(t, torch.Tensor) for t in returned):
            raise RuntimeError(
                f"forward() returned {type(result).__name__} of {len(returned)}; the config lists "
                f"{len(self.outputs)} outputs (tensors)"
            )
        outputs = []
        for slot, (_, dtype, _) in zip(self.output_slots, self.outputs):
            value = returned[slot]
            outputs.append(value.to(device="cpu", dtype=dtype).contiguous())
        return outputs

    def _respond(self, outputs):
        tensors = [
            pb_utils.Tensor.from_dlpack(name, torch.utils.dlpack.to_dlpack(value.contiguous()))
            for (name, _, _), value in zip(self.outputs, outputs)
        ]
        return pb_utils.InferenceResponse(output_tensors=tensors)

    def _run_one(self, tensors):
        try:
            return self._respond(self._run(tensors))
        except Exception as e:  # noqa: BLE001 - TorchScript raises its own exception types
            lines = str(e).strip().splitlines() or [type(e).__name__]  # TorchScript's traceback ends in the error
            return _error(f"model '{self.model_name}': inference failed: {lines[-1].strip()}")

    def execute(self, requests):
        responses = [None] * len(requests)
        valid = []  # (position, tensors, batch size)
        for i, request in enumerate(requests):
            try:
                tensors, batch = self._read(request)
            except ValueError as e:
                responses[i] = _error(str(e))
                continue
            valid.append((i, tensors, batch))
        if len(valid) == 1 or (valid and not self.batching):
            for i, tensors, _ in valid:
                responses[i] = self._run_one(tensors)
        elif valid:
            merged = [torch.cat([tensors[k] for _, tensors, _ in valid]) for k in range(len(self.inputs))]
            try:
                outputs = self._run(merged)
            except Exception:  # noqa: BLE001 - retried request by request right below
                # One request's values broke the merged run: serve each alone so only it fails.
                for i, tensors, _ in valid:
                    responses[i] = self._run_one(tensors)
            else:
                sizes = [batch for _, _, batch in valid]
                per_output = [torch.split(out, sizes) for out in outputs]
                for k, (i, _, _) in enumerate(valid):
                    responses[i] = self._respond([parts[k] for parts in per_output])
        return responses

    def finalize(self):
        self.module = None


def _error(message):
    code = getattr(pb_utils.TritonError, "INVALID_ARG", None)  # error codes exist from Triton 23.09 on
    error = pb_utils.TritonError(message) if code is None else pb_utils.TritonError(message, code)
    return pb_utils.InferenceResponse(output_tensors=[], error=error)
