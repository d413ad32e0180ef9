"""The tokenizer step of a text-embedding ensemble: a Triton Python-backend model (`backend: "python"`).

`tritonkit export hf` copies this file to `<repo>/<name>_tokenizer/<N>/model.py`, beside the model's
own `tokenizer.json` (saved there with truncation at --max-length and padding to the longest text).
Input `text` (BYTES [1], UTF-8) per row; outputs `input_ids` and `attention_mask` (INT64 [-1]).
All texts of one `execute` call (the requests the dynamic batcher gathered) are tokenized in one
call and padded to one common length, so the encoder after it can batch those requests together;
padding never changes an embedding because the encoder pools over the attention mask. A request
whose text is not valid UTF-8 gets its own error response and the others in its batch are served.

This file runs inside Triton's Python backend stub, not inside the tritonkit package: it imports
only numpy, `tokenizers` and `triton_python_backend_utils`. In NVIDIA's Triton container the Python
backend is present but `tokenizers` is not: `pip install tokenizers` in the image.
"""

import ctypes
import json
import os

import numpy as np
import triton_python_backend_utils as pb_utils
from tokenizers import Tokenizer

TOKENIZER_FILE = "tokenizer.json"
TEXT = "text"
OUTPUTS = ("input_ids", "attention_mask")
# DLPack's name for a consumed capsule (kept alive here: a capsule keeps the pointer, not a copy)
_USED_CAPSULE = b"used_dltensor"
_capsule_set_name = ctypes.pythonapi.PyCapsule_SetName
_capsule_set_name.argtypes = [ctypes.py_object, ctypes.c_char_p]
_capsule_set_name.restype = ctypes.c_int


class TritonPythonModel:
    """Turns raw text into padded, truncated token ids and attention masks."""

    def initialize(self, args):
        config = json.loads(args["model_config"])
        self.model_name = args["model_name"]
        path = os.path.join(args["model_repository"], args["model_version"], TOKENIZER_FILE)
        if not os.path.exists(path):
            raise pb_utils.TritonModelException(f"model '{self.model_name}': no {TOKENIZER_FILE} at {path}")
        self.tokenizer = Tokenizer.from_file(path)
        if self.tokenizer.truncation is None or self.tokenizer.padding is None:
            raise pb_utils.TritonModelException(
                f"model '{self.model_name}': {path} must set truncation and padding "
                "(re-export with `tritonkit export hf`)"
            )
        self.batching = config.get("max_batch_size", 0) > 0

    def _texts(self, request):
        """The request's texts as str, one per row; raises ValueError naming the bad row."""
        tensor = pb_utils.get_input_tensor_by_name(request, TEXT)
        if tensor is None:
            raise ValueError(f"model '{self.model_name}': input '{TEXT}' is missing")
        rows = tensor.as_numpy().reshape(-1)
        texts = []
        for row, value in enumerate(rows):
            if isinstance(value, bytes):
                try:
                    value = value.decode("utf-8")
                except UnicodeDecodeError as e:
                    raise ValueError(
                        f"model '{self.model_name}': input '{TEXT}' row {row} is not UTF-8 ({e})"
                    ) from None
            texts.append(str(value))
        return texts

    def execute(self, requests):
        responses = [None] * len(requests)
        valid = []  # (position, texts)
        for i, request in enumerate(requests):
            try:
                valid.append((i, self._texts(request)))
            except ValueError as e:
                responses[i] = _error(str(e))
        if not valid:
            return responses
        encodings = self.tokenizer.encode_batch([text for _, texts in valid for text in texts])
        width = len(encodings[0].ids) if encodings else 0
        ids = np.array([e.ids for e in encodings], dtype=np.int64).reshape(len(encodings), width)
        mask = np.array([e.attention_mask for e in encodings], dtype=np.int64).reshape(len(encodings), width)
        start = 0
        for i, texts in valid:
            end = start + len(texts)
            rows = [ids[start:end], mask[start:end]]
            if not self.batching:
                rows = [r.reshape(-1) for r in rows]
            tensors = [output_tensor(name, r) for name, r in zip(OUTPUTS, rows)]
            responses[i] = pb_utils.InferenceResponse(output_tensors=tensors)
            start = end
        return responses

    def finalize(self):
        self.tokenizer = None


def output_tensor(name, value):
    """An INT64 output through DLPack, as server/backends/onnxruntime/model.py builds them (with numpy 2,
    pb_utils.Tensor(name, array) arrives empty); the consumed capsule gets DLPack's name back (the stub's
    "used_dlpack" makes numpy's capsule destructor complain, or loop until the stub is unhealthy with numpy
    1.26). The BYTES input still
    needs numpy<2 in the stub, which the server's environment holds: DLPack has no strings."""
    capsule = np.ascontiguousarray(value).__dlpack__()
    tensor = pb_utils.Tensor.from_dlpack(name, capsule)
    _capsule_set_name(capsule, _USED_CAPSULE)
    return tensor


def _error(message):
    code = getattr(pb_utils.TritonError, "INVALID_ARG", None)  # error codes exist from Triton 23.09 on
    error = pb_utils.TritonError(message) if code is None else pb_utils.TritonError(message, code)
    return pb_utils.InferenceResponse(output_tensors=[], error=error)
