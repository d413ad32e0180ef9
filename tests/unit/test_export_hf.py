"""`export hf` on a tiny randomly initialised BERT: pooling, the ensemble it writes, versions, parity failures."""

from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import numpy_helper

transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

from tritonkit import pbtxt
from tritonkit.errors import ExportError, UsageError
from tritonkit.export import hf
from tritonkit.model_config import ModelConfig

WORDS = [
    "the",
    "a",
    "cat",
    "dog",
    "sat",
    "on",
    "mat",
    "ran",
    "fast",
    "slow",
    "red",
    "blue",
    "big",
    "small",
    "tree",
    "house",
]
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"]
HIDDEN, MAX_POSITIONS, MAX_LENGTH = 32, 64, 16
SENTENCES = ["the cat sat on the mat", "a dog", "", "red blue big small tree house " * 6, "unknown words here"]


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    """A Hugging Face folder: random 2-layer BertModel (safetensors), config.json and a word-level tokenizer.json."""
    folder = tmp_path_factory.mktemp("tiny-bert")
    torch.manual_seed(0)
    config = transformers.BertConfig(
        vocab_size=len(SPECIALS) + len(WORDS),
        hidden_size=HIDDEN,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=MAX_POSITIONS,
    )
    transformers.BertModel(config).eval().save_pretrained(folder)
    vocab = {token: i for i, token in enumerate(SPECIALS + WORDS)}
    tokenizer = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="[UNK]"))
    tokenizer.normalizer = tokenizers.normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    tokenizer.post_processor = tokenizers.processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])]
    )
    tokenizer.save(str(folder / "tokenizer.json"))
    return folder


@pytest.fixture(scope="module")
def source(tiny_dir) -> torch.nn.Module:
    return transformers.AutoModel.from_pretrained(str(tiny_dir), local_files_only=True).eval()


@pytest.fixture(scope="module")
def exported(tiny_dir, tmp_path_factory):
    """(repository, result) of one export of the tiny model."""
    repository = tmp_path_factory.mktemp("repo")
    return repository, hf.export_hf(tiny_dir, repository, "tiny", max_batch_size=8, max_length=MAX_LENGTH)


def reference(model, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
    """sentence-transformers' recipe written out in numpy: mask-weighted mean of the last hidden state, unit norm."""
    with torch.no_grad():
        hidden = (
            model(input_ids=torch.from_numpy(input_ids), attention_mask=torch.from_numpy(attention_mask))
            .last_hidden_state.numpy()
            .astype(np.float64)
        )
    mask = attention_mask[..., None].astype(np.float64)
    pooled = (hidden * mask).sum(axis=1) / np.maximum(mask.sum(axis=1), 1e-9)
    return pooled / np.linalg.norm(pooled, axis=1, keepdims=True)


def test_sentence_embedder_equals_numpy_mean_pooling_when_rows_are_padded(source, tiny_dir):
    tokenizer = hf.build_tokenizer(tiny_dir, MAX_LENGTH, pad_id=0)
    arrays = hf.tokenize(tokenizer, SENTENCES)
    assert arrays["attention_mask"].min() == 0, "the batch should contain padding"
    with torch.no_grad():
        got = hf.SentenceEmbedder(source)(*(torch.from_numpy(arrays[n]) for n in hf.INPUTS)).numpy()
    np.testing.assert_allclose(got, reference(source, arrays["input_ids"], arrays["attention_mask"]), atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-6)
    alone = hf.tokenize(tokenizer, SENTENCES[1:2])
    with torch.no_grad():
        unpadded = hf.SentenceEmbedder(source)(*(torch.from_numpy(alone[n]) for n in hf.INPUTS)).numpy()
    np.testing.assert_allclose(got[1], unpadded[0], atol=1e-6)


def test_tokenizer_truncates_at_max_length_when_text_is_long(tiny_dir):
    arrays = hf.tokenize(hf.build_tokenizer(tiny_dir, MAX_LENGTH, pad_id=0), SENTENCES)
    assert arrays["input_ids"].shape == (len(SENTENCES), MAX_LENGTH)
    assert arrays["attention_mask"][3].sum() == MAX_LENGTH and arrays["attention_mask"][1].sum() == 4


def test_export_hf_writes_ensemble_tokenizer_and_encoder_when_model_is_tiny(exported, source):
    repository, result = exported
    assert result.version == 1 and result.parity.ok
    assert result.parity.parity.max_abs_error <= 1e-4 and result.parity.min_cosine >= 0.9999
    assert {p.name for p in (repository / "tiny_tokenizer" / "1").iterdir()} == {"model.py", "tokenizer.json"}
    assert (repository / "tiny" / "1").is_dir()
    encoder = ModelConfig.read(repository / "tiny_encoder")
    assert (encoder.backend, encoder.max_batch_size) == ("onnxruntime", 8)
    assert [(t.name, t.dtype, t.dims) for t in encoder.inputs] == [
        ("input_ids", "INT64", (-1,)),
        ("attention_mask", "INT64", (-1,)),
    ]
    assert [(t.name, t.dtype, t.dims) for t in encoder.outputs] == [("sentence_embedding", "FP32", (HIDDEN,))]
    tokenizer = ModelConfig.read(repository / "tiny_tokenizer")
    assert tokenizer.backend == "python" and tokenizer.inputs[0].dtype == "BYTES"
    assert encoder.dynamic_batching is not None and tokenizer.dynamic_batching is not None
    ensemble = pbtxt.parse((repository / "tiny" / "config.pbtxt").read_text())
    assert ensemble.platform == "ensemble" and ensemble.max_batch_size == 8
    steps = ensemble.ensemble_scheduling.step
    assert [s.model_name for s in steps] == ["tiny_tokenizer", "tiny_encoder"]
    assert dict(steps[0].output_map) == dict(steps[1].input_map) == {n: n for n in hf.INPUTS}
    assert dict(steps[1].output_map) == {"sentence_embedding": "sentence_embedding"}


@pytest.mark.parametrize("batch, length", [(1, 1), (3, 7), (5, MAX_LENGTH)])
def test_exported_onnx_equals_transformers_when_batch_and_sequence_vary(exported, source, batch, length):
    _, result = exported
    rng = np.random.default_rng(batch * 100 + length)
    ids = rng.integers(4, 20, (batch, length)).astype(np.int64)
    mask = np.ones_like(ids)
    mask[0, max(1, length // 2) :] = 0
    session = ort.InferenceSession(str(result.encoder_path), providers=["CPUExecutionProvider"])
    got = session.run(["sentence_embedding"], {"input_ids": ids, "attention_mask": mask})[0]
    assert got.shape == (batch, HIDDEN) and got.dtype == np.float32
    np.testing.assert_allclose(got, reference(source, ids, mask), atol=1e-5)


def _reuse_export(monkeypatch, onnx_path: Path, drift: float = 1.0) -> None:
    """Makes export_hf copy an already exported ONNX file (its word embeddings scaled by `drift`): no re-export."""
    model = onnx.load(str(onnx_path))
    if drift != 1.0:  # stands in for a lossy conversion
        largest = max(model.graph.initializer, key=lambda t: int(np.prod(t.dims)))
        largest.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(largest) * drift, largest.name))

    def copy_export(module, path, max_length, opset=hf.DEFAULT_OPSET):
        onnx.save(model, str(path))
        return path

    monkeypatch.setattr(hf, "export_onnx", copy_export)


def test_export_hf_adds_next_version_and_keeps_old_when_exported_again(exported, tiny_dir, tmp_path, monkeypatch):
    _reuse_export(monkeypatch, exported[1].encoder_path)
    first = hf.export_hf(tiny_dir, tmp_path, "tiny", max_length=MAX_LENGTH)
    before = _snapshot(tmp_path)
    second = hf.export_hf(tiny_dir, tmp_path, "tiny", max_length=MAX_LENGTH)
    assert (first.version, second.version) == (1, 2) and second.parity.ok
    for model in ("tiny", "tiny_tokenizer", "tiny_encoder"):
        assert sorted(p.name for p in (tmp_path / model).iterdir()) == ["1", "2", "config.pbtxt"]
    after = _snapshot(tmp_path)
    assert {k: v for k, v in after.items() if k in before} == before
    with pytest.raises(ExportError, match="version 2 of `tiny.*already exists"):
        hf.export_hf(tiny_dir, tmp_path, "tiny", max_length=MAX_LENGTH, version=2)
    assert _snapshot(tmp_path) == after
    pinned = hf.export_hf(tiny_dir, tmp_path, "tiny", max_length=MAX_LENGTH, version=2, replace=True)
    assert pinned.version == 2 and not (tmp_path / "tiny_encoder" / "3").exists()


def _snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() if p.is_file() else b"<dir>" for p in sorted(root.rglob("*"))}


def test_export_hf_raises_and_leaves_repository_as_it_was_when_parity_fails(exported, tiny_dir, monkeypatch):
    repository, result = exported
    before = _snapshot(repository)
    _reuse_export(monkeypatch, result.encoder_path, drift=1.5)
    with pytest.raises(ExportError, match=r"does not match transformers.*max abs error .* min cosine"):
        hf.export_hf(tiny_dir, repository, "tiny", max_length=MAX_LENGTH)
    assert _snapshot(repository) == before
    fresh = repository.parent / "fresh-repo"
    with pytest.raises(ExportError):
        hf.export_hf(tiny_dir, fresh, "tiny", max_length=MAX_LENGTH)
    assert not fresh.exists()


def test_export_hf_fp16_keeps_fp32_output_within_fp16_tolerance(tiny_dir, tmp_path, source):
    result = hf.export_hf(tiny_dir, tmp_path, "tiny", max_length=MAX_LENGTH, fp16=True)
    assert result.parity.ok and result.parity.parity.atol == hf.TOLERANCES[True][0]
    session = ort.InferenceSession(str(result.encoder_path), providers=["CPUExecutionProvider"])
    assert session.get_outputs()[0].type == "tensor(float)"
    weights = onnx.load(str(result.encoder_path)).graph.initializer
    assert any(t.data_type == onnx.TensorProto.FLOAT16 for t in weights)


def test_export_hf_raises_usage_error_when_tokenizer_json_is_missing(tiny_dir, tmp_path):
    folder = tmp_path / "no-tokenizer"
    folder.mkdir()
    for item in tiny_dir.iterdir():
        if item.name != "tokenizer.json":
            (folder / item.name).write_bytes(item.read_bytes())
    with pytest.raises(UsageError, match="lacks tokenizer.json"):
        hf.export_hf(folder, tmp_path / "repo", "tiny")
    assert not (tmp_path / "repo").exists()


def test_export_hf_raises_usage_error_when_max_length_exceeds_positions(tiny_dir, tmp_path):
    with pytest.raises(UsageError, match=f"--max-length is 128; .* 1 to {MAX_POSITIONS} tokens"):
        hf.export_hf(tiny_dir, tmp_path / "repo", "tiny", max_length=128)


# ---- the tokenizer's Triton model.py, run against a stand-in for triton_python_backend_utils ----------


class _Tensor:
    def __init__(self, name, array):
        self.name, self.array = name, array

    def as_numpy(self):
        return self.array

    @classmethod
    def from_dlpack(cls, name, capsule):
        """As the stub: a tensor from a DLPack capsule (the model builds its numeric outputs this way)."""

        class Producer:  # np.from_dlpack takes an object with __dlpack__, not a bare capsule
            def __dlpack__(self, **_):
                return capsule

            def __dlpack_device__(self):
                return (1, 0)  # kDLCPU

        return cls(name, np.from_dlpack(Producer()))


class _Response:
    def __init__(self, output_tensors, error=None):
        self.outputs, self.error = {t.name: t.array for t in output_tensors}, error


class _Error(Exception):
    INVALID_ARG = 3

    def __init__(self, message, code=None):
        super().__init__(message)


@pytest.fixture
def tokenizer_model(exported, monkeypatch):
    repository, result = exported
    fake = types.SimpleNamespace(
        Tensor=_Tensor,
        InferenceResponse=_Response,
        TritonError=_Error,
        TritonModelException=RuntimeError,
        get_input_tensor_by_name=lambda request, name: request.get(name),
    )
    monkeypatch.setitem(sys.modules, "triton_python_backend_utils", fake)
    spec = importlib.util.spec_from_file_location("tokenizer_model", hf.TOKENIZER_MODEL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    model = module.TritonPythonModel()
    model.initialize(
        {
            "model_config": '{"max_batch_size": 8}',
            "model_name": "tiny_tokenizer",
            "model_repository": str(repository / "tiny_tokenizer"),
            "model_version": str(result.version),
        }
    )
    return model


def _text(*rows) -> dict:
    return {"text": _Tensor("text", np.array([[r] for r in rows], dtype=object))}


def test_tokenizer_model_pads_batch_to_one_length_and_fails_only_bad_request(tokenizer_model, tiny_dir):
    responses = tokenizer_model.execute([_text(b"a dog"), _text(b"\xff\xfe"), _text(b"the cat sat on the mat", b"")])
    assert responses[1].error is not None and "row 0 is not UTF-8" in str(responses[1].error)
    first, third = responses[0].outputs, responses[2].outputs
    assert first["input_ids"].shape == (1, 8) and third["input_ids"].shape == (2, 8)
    assert first["input_ids"].dtype == np.int64 and third["attention_mask"].dtype == np.int64
    expected = hf.tokenize(hf.build_tokenizer(tiny_dir, MAX_LENGTH, pad_id=0), ["a dog"])
    np.testing.assert_array_equal(first["input_ids"][:, :4], expected["input_ids"])
    np.testing.assert_array_equal(first["attention_mask"], [[1, 1, 1, 1, 0, 0, 0, 0]])
