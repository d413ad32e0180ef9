"""`tritonkit export torch --format torchscript`, served by the kit's Python-based `pytorch` backend, equals torch."""

from __future__ import annotations

import importlib
import json
import shutil
import sys
import textwrap
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import numpy as np
import pytest
import torch

from tritonkit.clients import TritonClient
from tritonkit.errors import TritonKitError
from tritonkit.export.options import ExportOptions
from tritonkit.export.torch_source import export_torch
from tritonkit.model_config import ModelConfig
from tritonkit.server import EmbeddedServer

NETS = textwrap.dedent('''
    import torch

    class Scorer(torch.nn.Module):
        """Floats and token ids in; a vector, a batch-only total and a bool mask out, as a dict."""

        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.dense = torch.nn.Linear(3, 4)
            self.embedding = torch.nn.Embedding(10, 4)

        def forward(self, x, ids):
            hidden = self.dense(x) + self.embedding(ids).mean(1)
            return {"hidden": hidden, "total": hidden.sum(-1), "positive": hidden > 0}

    class Branchy(torch.nn.Module):
        """Row by row, data-dependent control flow: scripting keeps the loop and both branches, tracing would not."""

        def forward(self, x):
            out = torch.empty_like(x)
            for i in range(x.size(0)):
                if bool(x[i].sum() > 0):
                    out[i] = x[i] * 2.0
                else:
                    out[i] = x[i] - 1.0
            return out
''')


@pytest.fixture(scope="module")
def nets(tmp_path_factory):
    """The module file a user would write, importable as `torchscript_served_nets`."""
    folder = tmp_path_factory.mktemp("ts-nets")
    (folder / "torchscript_served_nets.py").write_text(NETS)
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(folder))
        yield importlib.import_module("torchscript_served_nets")
    sys.modules.pop("torchscript_served_nets", None)


def _export_scorer(repo, name: str, **options) -> ModelConfig:
    result = export_torch(
        ExportOptions(repo, name, format="torchscript", **options),
        factory="torchscript_served_nets:Scorer",
        input_shapes=["x=3", "ids=2"],
        input_dtypes=["ids=INT64"],
    )
    return result.config


@pytest.fixture(scope="module")
def repository(tmp_path_factory, nets):
    """ts_scorer (batching with a 100 ms window), ts_scorer_by_name (inputs listed in reverse), ts_branchy."""
    folder = tmp_path_factory.mktemp("ts-served")
    repo = folder / "repository"
    config = _export_scorer(repo, "ts_scorer", instances=1, max_queue_delay_us=100_000)
    shutil.copytree(repo / "ts_scorer" / "1", repo / "ts_scorer_by_name" / "1")
    replace(config, name="ts_scorer_by_name", inputs=config.inputs[::-1]).write(repo / "ts_scorer_by_name")
    torch.jit.script(nets.Branchy()).save(str(folder / "branchy.pt"))
    export_torch(
        ExportOptions(repo, "ts_branchy", format="torchscript", instances=1, dynamic_batching=False),
        model_file=folder / "branchy.pt",
        input_shapes=["x=4"],
    )
    return repo


@pytest.fixture(scope="module")
def server(repository, tmp_path_factory):
    log = tmp_path_factory.mktemp("ts-served-logs") / "triton.log"
    with EmbeddedServer(repository, http_port=0, grpc_port=0, metrics_port=0, log_file=log) as running:
        yield running


def _rows(n: int, seed: int = 3) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"x": rng.standard_normal((n, 3)).astype(np.float32), "ids": rng.integers(0, 10, (n, 2)).astype(np.int64)}


def _expected(nets, rows: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    with torch.no_grad():
        out = nets.Scorer().eval()(torch.from_numpy(rows["x"]), torch.from_numpy(rows["ids"]))
    return {name: value.numpy() for name, value in out.items()}


def _assert_equal(served: dict[str, np.ndarray], expected: dict[str, np.ndarray]) -> None:
    n = len(expected["hidden"])
    assert served["hidden"].dtype == np.float32 and served["hidden"].shape == (n, 4)
    assert served["positive"].dtype == np.bool_ and served["positive"].shape == (n, 4)
    np.testing.assert_allclose(served["hidden"], expected["hidden"], rtol=0, atol=1e-6)
    np.testing.assert_allclose(served["total"].reshape(-1), expected["total"], rtol=0, atol=1e-5)
    np.testing.assert_array_equal(served["positive"], expected["positive"])


def test_pytorch_backend_equals_torch_when_one_request_holds_all_rows(server, nets):
    rows = _rows(64)
    with TritonClient(server.grpc_url) as client:
        served, version, _ = client.infer_arrays("ts_scorer", rows)
    assert version == "1"
    _assert_equal(served, _expected(nets, rows))
    assert served["positive"].any() and not served["positive"].all()


def _statistics(server, model: str) -> tuple[int, int]:
    with urllib.request.urlopen(f"http://{server.http_url}/v2/models/{model}/stats") as response:
        stats = json.load(response)["model_stats"][0]
    return stats["execution_count"], stats["inference_count"]


def test_pytorch_backend_batches_requests_and_fails_only_the_bad_one_when_sent_together(server, nets):
    rows = _rows(24, seed=4)
    rows["ids"][5] = [99, 1]  # out of the embedding's range: the merged run fails, this request alone after
    executions, inferences = _statistics(server, "ts_scorer")

    def call(i: int):
        with TritonClient(server.grpc_url) as client:
            try:
                return client.infer_arrays("ts_scorer", {k: v[i : i + 1] for k, v in rows.items()})[0]
            except TritonKitError as e:
                return e

    with ThreadPoolExecutor(24) as pool:
        answers = list(pool.map(call, range(24)))
    assert isinstance(answers[5], TritonKitError) and "index out of range" in str(answers[5])
    good = [i for i in range(24) if i != 5]
    assert not any(isinstance(answers[i], Exception) for i in good)
    served = {name: np.concatenate([answers[i][name] for i in good]) for name in ("hidden", "total", "positive")}
    _assert_equal(served, _expected(nets, {k: v[good] for k, v in rows.items()}))
    executions_after, inferences_after = _statistics(server, "ts_scorer")
    assert inferences_after - inferences == 24
    assert executions_after - executions < 24, "concurrent requests were merged into batches"


def test_pytorch_backend_maps_inputs_by_forward_names_when_config_lists_them_in_another_order(server, nets):
    rows = _rows(16, seed=5)
    with TritonClient(server.grpc_url) as client:
        assert [t.name for t in client.metadata("ts_scorer_by_name").inputs] == ["ids", "x"]
        served, _, _ = client.infer_arrays("ts_scorer_by_name", rows)
    _assert_equal(served, _expected(nets, rows))


def test_torchscript_source_keeps_its_loop_and_branches_when_exported_and_served(server):
    x = np.concatenate([np.full((3, 4), 0.5, np.float32), np.full((4, 4), -0.5, np.float32)])
    with TritonClient(server.grpc_url) as client:
        served, _, _ = client.infer_arrays("ts_branchy", {"x": x})
    np.testing.assert_array_equal(served["output"], np.concatenate([x[:3] * 2, x[3:] - 1]))


def test_served_config_names_the_pytorch_backend_and_its_parameters_when_loaded(server):
    with urllib.request.urlopen(f"http://{server.http_url}/v2/models/ts_scorer/config") as response:
        config = json.load(response)
    assert config["backend"] == "pytorch" and config["runtime"] == "model.py"
    assert config["parameters"]["INTRA_OP_THREAD_COUNT"]["string_value"] == "1"
    assert [o["data_type"] for o in config["output"]] == ["TYPE_FP32", "TYPE_FP32", "TYPE_BOOL"]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs an NVIDIA GPU: torch sees no CUDA device")
def test_pytorch_backend_on_gpu_instance_equals_cpu_torch_when_a_gpu_is_present(nets, tmp_path):
    config = _export_scorer(tmp_path / "repository", "ts_scorer_gpu", kind="KIND_GPU")
    assert [(g.count, g.kind) for g in config.instance_groups] == [(1, "KIND_GPU")]
    rows = _rows(256, seed=6)
    log = tmp_path / "triton.log"
    with EmbeddedServer(tmp_path / "repository", http_port=0, grpc_port=0, metrics_port=0, log_file=log) as gpu:
        with TritonClient(gpu.grpc_url) as client:
            served, _, _ = client.infer_arrays("ts_scorer_gpu", rows)
    _assert_equal(served, _expected(nets, rows))
    assert "model 'ts_scorer_gpu': TorchScript on cuda:0" in log.read_text()
