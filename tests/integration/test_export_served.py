"""Models exported by `tritonkit export sklearn|torch`, served by the real embedded Triton, equal their sources."""

from __future__ import annotations

import importlib
import json
import sys
import textwrap
import urllib.request

import joblib
import numpy as np
import onnxruntime as ort
import pytest
import torch
from sklearn.ensemble import RandomForestClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from tritonkit.clients import TritonClient
from tritonkit.export.churn import FEATURES, synthetic_customers
from tritonkit.export.options import ExportOptions
from tritonkit.export.sklearn import export_sklearn
from tritonkit.export.torch_source import export_torch
from tritonkit.server import EmbeddedServer

NETS = textwrap.dedent('''
    import torch

    class ChurnNet(torch.nn.Module):
        """Standardisation and a small MLP; returns the churn probability and the 0/1 label."""

        def __init__(self):
            super().__init__()
            self.register_buffer("mean", torch.tensor([36.0, 70.0, 1.5, 10.0, 3.0]))
            self.register_buffer("std", torch.tensor([20.0, 30.0, 1.2, 10.0, 1.4]))
            self.mlp = torch.nn.Sequential(torch.nn.Linear(5, 16), torch.nn.ReLU(), torch.nn.Linear(16, 1))

        def forward(self, features):
            probability = torch.sigmoid(self.mlp((features - self.mean) / self.std))
            return probability, (probability >= 0.5).to(torch.int64)

    class Scorer(torch.nn.Module):
        """Two inputs (floats and token ids) and a batch-only output, for the TorchScript path."""

        def __init__(self):
            super().__init__()
            self.dense = torch.nn.Linear(3, 4)
            self.embedding = torch.nn.Embedding(10, 4)

        def forward(self, x, ids):
            hidden = self.dense(x) + self.embedding(ids).mean(1)
            return hidden, hidden.sum(-1)
''')


@pytest.fixture(scope="module")
def nets(tmp_path_factory):
    """The module file a user would write, importable as `export_served_nets`."""
    folder = tmp_path_factory.mktemp("nets")
    (folder / "export_served_nets.py").write_text(NETS)
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(folder))
        yield importlib.import_module("export_served_nets")
    sys.modules.pop("export_served_nets", None)


@pytest.fixture(scope="module")
def pipeline():
    data = synthetic_customers(2_000, seed=3)
    return Pipeline(
        [("scale", StandardScaler()), ("forest", RandomForestClassifier(100, random_state=0, n_jobs=1))]
    ).fit(data[FEATURES].to_numpy(np.float32), data["churned"])


@pytest.fixture(scope="module")
def repository(tmp_path_factory, pipeline, nets):
    """churn_rf (versions 1 and 2), churn_net (module + state_dict, warmup, response cache), scorer_fp16."""
    folder = tmp_path_factory.mktemp("export-served")
    repo = folder / "repository"
    joblib.dump(pipeline, folder / "churn_rf.joblib")
    for _ in range(2):
        export_sklearn(folder / "churn_rf.joblib", ExportOptions(repo, "churn_rf", instances=1))
    torch.manual_seed(0)
    torch.save(nets.ChurnNet().state_dict(), folder / "churn_net.pt")
    export_torch(
        ExportOptions(repo, "churn_net", instances=1, warmup_batch_size=8, response_cache=True),
        factory="export_served_nets:ChurnNet",
        weights=folder / "churn_net.pt",
        input_shapes=["features=5"],
    )
    torch.jit.script(nets.Scorer()).save(str(folder / "scorer.pt"))
    export_torch(
        ExportOptions(repo, "scorer_fp16", instances=1, fp16=True, output_names=("hidden", "score")),
        model_file=folder / "scorer.pt",
        input_shapes=["x=3", "ids=6"],
        input_dtypes=["ids=INT64"],
    )
    return repo


@pytest.fixture(scope="module")
def server(repository, tmp_path_factory):
    log = tmp_path_factory.mktemp("export-served-logs") / "triton.log"
    with EmbeddedServer(repository, http_port=0, grpc_port=0, metrics_port=0, log_file=log) as running:
        yield running


@pytest.fixture(scope="module")
def rows() -> np.ndarray:
    """300 customers the models were not fitted on, as one FP32 [300, 5] array."""
    return synthetic_customers(300, seed=11)[FEATURES].to_numpy(np.float32)


def _in_process(path, feeds):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return dict(zip([o.name for o in session.get_outputs()], session.run(None, feeds)))


def test_sklearn_export_equals_onnxruntime_and_scikit_learn_when_served_over_grpc(server, repository, pipeline, rows):
    with TritonClient(server.grpc_url) as client:
        served, version, _ = client.infer_arrays("churn_rf", {"features": rows})
    assert version == "2", "the latest of the two exported versions is served"
    local = _in_process(repository / "churn_rf" / "2" / "model.onnx", {"features": rows})
    assert served["label"].shape == (300, 1) and served["label"].dtype == np.int64
    assert served["probabilities"].shape == (300, 2) and served["probabilities"].dtype == np.float32
    np.testing.assert_allclose(served["probabilities"], local["probabilities"], rtol=0, atol=1e-6)
    expected = pipeline.predict_proba(rows)
    np.testing.assert_allclose(served["probabilities"], expected, rtol=0, atol=1e-5)
    # A 50/50 vote goes either way with the float32 summation order (threads, batch layout): compare the rest.
    decided = np.abs(expected[:, 1] - expected[:, 0]) > 1e-5
    np.testing.assert_array_equal(served["label"].ravel()[decided], local["label"].ravel()[decided])
    np.testing.assert_array_equal(served["label"].ravel()[decided], pipeline.predict(rows)[decided])
    assert np.isin(served["label"], [0, 1]).all()
    assert decided.sum() > 250 and served["probabilities"][:, 1].std() > 0.05


def test_torch_export_equals_onnxruntime_and_torch_when_served_over_grpc(server, repository, nets, rows):
    with TritonClient(server.grpc_url) as client:
        served, version, _ = client.infer_arrays("churn_net", {"features": rows})
    assert version == "1"
    local = _in_process(repository / "churn_net" / "1" / "model.onnx", {"features": rows})
    model = nets.ChurnNet()
    model.load_state_dict(torch.load(repository.parent / "churn_net.pt"))
    with torch.no_grad():
        probability, label = model.eval()(torch.from_numpy(rows))
    np.testing.assert_allclose(served["output_0"], local["output_0"], rtol=0, atol=1e-6)
    np.testing.assert_allclose(served["output_0"], probability.numpy(), rtol=0, atol=1e-5)
    np.testing.assert_array_equal(served["output_1"], label.numpy())
    assert served["output_0"].shape == (300, 1) and served["output_0"].std() > 0.01


def test_fp16_export_answers_in_fp16_close_to_fp32_torch_when_served(server, repository, nets):
    rng = np.random.default_rng(5)
    x = rng.standard_normal((64, 3)).astype(np.float16)
    ids = rng.integers(0, 10, (64, 6)).astype(np.int64)
    with TritonClient(server.grpc_url) as client:
        assert {t.name: t.datatype for t in client.metadata("scorer_fp16").inputs} == {"x": "FP16", "ids": "INT64"}
        served, _, _ = client.infer_arrays("scorer_fp16", {"x": x, "ids": ids})
    local = _in_process(repository / "scorer_fp16" / "1" / "model.onnx", {"x": x, "ids": ids})
    source = torch.jit.load(str(repository.parent / "scorer.pt"))
    with torch.no_grad():
        hidden, score = source(torch.from_numpy(x.astype(np.float32)), torch.from_numpy(ids))
    assert served["hidden"].dtype == np.float16 and served["hidden"].shape == (64, 4)
    np.testing.assert_array_equal(served["hidden"], local["hidden"])
    np.testing.assert_allclose(served["hidden"], hidden.numpy(), rtol=0, atol=1e-2 * max(1, hidden.abs().max()))
    assert served["score"].reshape(-1).shape == (64,), "a batch-only output comes back one value per row"
    np.testing.assert_allclose(
        served["score"].reshape(-1), score.numpy(), rtol=0, atol=2e-2 * max(1, score.abs().max())
    )


def _config(server, model: str) -> dict:
    with urllib.request.urlopen(f"http://{server.http_url}/v2/models/{model}/config") as response:
        return json.load(response)


def test_served_configs_carry_export_defaults_when_loaded(server):
    churn_rf = _config(server, "churn_rf")
    assert churn_rf["max_batch_size"] == 4096 and churn_rf["backend"] == "onnxruntime"
    assert int(churn_rf["dynamic_batching"].get("max_queue_delay_microseconds", 0)) == 0
    assert churn_rf["instance_group"][0]["kind"] == "KIND_CPU" and churn_rf["instance_group"][0]["count"] == 1
    assert churn_rf["parameters"]["intra_op_thread_count"]["string_value"] == "1"
    churn_net = _config(server, "churn_net")
    assert churn_net["model_warmup"][0]["batch_size"] == 8
    assert churn_net["response_cache"]["enable"] is True
