"""A Python-based Triton backend named `fil`: serves a FIL-layout tree model with the library's own predict on CPU.

NVIDIA's container runs `backend: "fil"` with its native Forest Inference Library backend (GPU, or
CPU). The embedded server has no such backend, so Triton resolves the name to this file and the
same model folder loads in both. It reads what the native backend reads: `model_type` (xgboost,
xgboost_json, xgboost_ubj, lightgbm; treelite_checkpoint is refused), the default file name per
type, `output_class`, `predict_proba` and `threshold`; input `input__0` [N, features] FP32, output
`output__0`: per-class probabilities (`predict_proba`; binary models as [p0, p1], or [p1] when the
config gives one output value), the class index (classifiers without `predict_proba`), or the value
(regressors). Several requests per `execute` (dynamic batching) run once and split back in order;
a request whose input does not fit gets its own error.

This file runs inside Triton's Python backend stub: it imports only numpy, the tree library and
`triton_python_backend_utils`. Each instance loads its booster once (`initialize`) with `nthread`
threads (as NVIDIA's backend: all cores when the parameter is absent), logged as the library reports
it back. XGBoost predicts with `inplace_predict` straight on the request's FP32 array (no DMatrix copy),
LightGBM with its own `predict(num_threads=...)`. A single request per `execute` (the bulk case:
requests of max_batch_size rows) runs on its input as it arrives, without a concatenation.
"""

import ctypes
import json
import os

import numpy as np
import triton_python_backend_utils as pb_utils

FILE_NAMES = {
    "xgboost": "xgboost.model",
    "xgboost_json": "xgboost.json",
    "xgboost_ubj": "xgboost.ubj",
    "lightgbm": "model.txt",
    "treelite_checkpoint": "checkpoint.tl",
}
# DLPack's name for a consumed capsule (see `output_tensor`), kept alive with the module
_USED_CAPSULE = b"used_dltensor"
_capsule_set_name = ctypes.pythonapi.PyCapsule_SetName
_capsule_set_name.argtypes = [ctypes.py_object, ctypes.c_char_p]
_capsule_set_name.restype = ctypes.c_int


def _true(value):
    return str(value).strip().lower() in ("true", "1", "yes")


def load(model_type, path, threads):
    """(rows -> the library's raw prediction ([N] or [N, classes]), the threads the library will use)."""
    if model_type.startswith("xgboost"):
        import xgboost

        booster = xgboost.Booster(model_file=path)
        booster.set_param({"nthread": threads})
        generic = json.loads(booster.save_config())["learner"].get("generic_param", {})
        return (lambda rows: booster.inplace_predict(rows)), int(generic.get("nthread") or generic.get("n_jobs") or 0)
    if model_type == "lightgbm":
        import lightgbm

        booster = lightgbm.Booster(model_file=path)
        return (lambda rows: booster.predict(rows, num_threads=threads)), threads
    raise ValueError(
        f"model_type {model_type!r} is not served here; expected one of xgboost, xgboost_json, "
        "xgboost_ubj, lightgbm (treelite_checkpoint runs in NVIDIA's FIL backend only)"
    )


def threads_of(params):
    """The `nthread` parameter; all cores when it is absent or 0 (NVIDIA's FIL backend does the same)."""
    value = int(params.get("nthread") or 0)
    return value if value > 0 else (os.cpu_count() or 1)


def shape_output(raw, classifier, predict_proba, threshold, width):
    """The raw prediction as FIL's output__0 [N, width]."""
    raw = np.asarray(raw, dtype=np.float32)
    if not classifier:
        return raw.reshape(len(raw), -1)
    proba = np.stack([1 - raw, raw], axis=1) if raw.ndim == 1 else raw
    if predict_proba:
        return np.clip(proba[:, -width:], 0, 1)
    if proba.shape[1] == 2:
        return (proba[:, 1] > threshold).astype(np.float32).reshape(-1, 1)
    return proba.argmax(axis=1).astype(np.float32).reshape(-1, 1)


class TritonPythonModel:
    """Serves one FIL-layout model version."""

    def initialize(self, args):
        config = json.loads(args["model_config"])
        self.model_name = args["model_name"]
        params = {k: v.get("string_value", "") for k, v in config.get("parameters", {}).items()}
        model_type = params.get("model_type", "xgboost")
        filename = config.get("default_model_filename") or FILE_NAMES.get(model_type, "")
        path = os.path.join(args["model_repository"], args["model_version"], filename)
        if not os.path.exists(path):
            raise pb_utils.TritonModelException(f"model '{self.model_name}': no {model_type} model file at {path}")
        try:
            self.predict, threads = load(model_type, path, threads_of(params))
        except ValueError as e:
            raise pb_utils.TritonModelException(f"model '{self.model_name}': {e}") from None
        pb_utils.Logger.log_info(
            f"fil: model '{self.model_name}' instance {args.get('model_instance_name', '')}: {model_type} "
            f"from {path}, loaded once; nthread {threads}"
        )
        self.classifier = _true(params.get("output_class", "false"))
        self.predict_proba = _true(params.get("predict_proba", "false"))
        self.threshold = float(params.get("threshold") or 0.5)
        [spec] = config["input"]
        self.features = int(spec["dims"][-1])
        self.width = int(config["output"][0]["dims"][-1])

    def _read(self, request):
        tensor = pb_utils.get_input_tensor_by_name(request, "input__0")
        if tensor is None:
            raise ValueError(f"model '{self.model_name}': input 'input__0' is missing")
        rows = np.from_dlpack(tensor)  # as_numpy() reads every row as the first when the stub's numpy is 2.x
        if rows.dtype != np.float32 or rows.ndim != 2 or rows.shape[1] != self.features:
            raise ValueError(
                f"model '{self.model_name}': input 'input__0' is {rows.dtype} {list(rows.shape)}, "
                f"expected float32 [-1, {self.features}]"
            )
        return rows

    def _respond(self, output):
        return pb_utils.InferenceResponse(output_tensors=[output_tensor("output__0", output)])

    def _run(self, rows):
        raw = self.predict(rows)
        return shape_output(raw, self.classifier, self.predict_proba, self.threshold, self.width)

    def execute(self, requests):
        responses = [None] * len(requests)
        valid = []
        for i, request in enumerate(requests):
            try:
                valid.append((i, self._read(request)))
            except ValueError as e:
                responses[i] = _error(str(e))
        if not valid:
            return responses
        try:
            output = self._run(valid[0][1] if len(valid) == 1 else np.concatenate([rows for _, rows in valid]))
        except Exception as e:  # noqa: BLE001 - the libraries raise their own error types
            for i, _ in valid:
                responses[i] = _error(f"model '{self.model_name}': inference failed: {e}")
            return responses
        bounds = np.cumsum([len(rows) for _, rows in valid])[:-1]
        for (i, _), part in zip(valid, np.split(output, bounds) if len(valid) > 1 else [output]):
            responses[i] = self._respond(part)
        return responses


def output_tensor(name, value):
    """A numeric output through DLPack, exact whichever numpy the stub runs (with numpy 2,
    `pb_utils.Tensor(name, array)` arrives empty); the consumed capsule gets DLPack's "used_dltensor" back from
    the stub's "used_dlpack", which numpy's capsule destructor would report on every response (numpy 2) or
    until the stub is declared unhealthy (numpy 1.26). As in server/backends/onnxruntime/model.py."""
    value = np.ascontiguousarray(value)
    if not value.flags.writeable:  # numpy refuses to export read-only arrays through DLPack
        value = value.copy()
    capsule = value.__dlpack__()
    tensor = pb_utils.Tensor.from_dlpack(name, capsule)
    _capsule_set_name(capsule, _USED_CAPSULE)
    return tensor


def _error(message):
    code = getattr(pb_utils.TritonError, "INVALID_ARG", None)
    error = pb_utils.TritonError(message) if code is None else pb_utils.TritonError(message, code)
    return pb_utils.InferenceResponse(output_tensors=[], error=error)
