"""The embedded server runs from its own environment, and its Python backends serve exact outputs whichever
numpy their stub runs: here numpy 2, layered over the server's environment. With numpy 2, Triton 2.51's stub
builds broken arrays both ways: `pb_utils.Tensor(name, array)` outputs arrive empty and `as_numpy()` inputs
read every row as the first, without a word; the kit's backends (onnxruntime, fil, pytorch) go through DLPack
for numbers."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
import xgboost

from tritonkit.clients import TritonClient
from tritonkit.export.churn import FEATURES, OUTPUTS
from tritonkit.server import EmbeddedServer, TritonInstall
from tritonkit.server.environment import ENV_VAR, ServerEnvironment

PURELIB = "import sysconfig; print(sysconfig.get_paths()['purelib'])"

# A Python model that answers with the major version of the numpy its stub imported (through DLPack, as the
# kit's backends build numeric outputs).
PROBE = """
import ctypes
import numpy as np
import triton_python_backend_utils as pb_utils

_USED = b"used_dltensor"
_set_name = ctypes.pythonapi.PyCapsule_SetName
_set_name.argtypes = [ctypes.py_object, ctypes.c_char_p]


class TritonPythonModel:
    def execute(self, requests):
        major = np.array([int(np.__version__.split(".")[0])], dtype=np.int32)
        responses = []
        for _ in requests:
            capsule = major.__dlpack__()
            tensor = pb_utils.Tensor.from_dlpack("major", capsule)
            _set_name(capsule, _USED)
            responses.append(pb_utils.InferenceResponse(output_tensors=[tensor]))
        return responses
"""
FIL_CONFIG = """backend: "fil"
max_batch_size: 64
input [ { name: "input__0" data_type: TYPE_FP32 dims: [ 4 ] } ]
output [ { name: "output__0" data_type: TYPE_FP32 dims: [ 2 ] } ]
instance_group [ { kind: KIND_CPU count: 1 } ]
parameters [
  { key: "model_type" value: { string_value: "xgboost_json" } },
  { key: "output_class" value: { string_value: "true" } },
  { key: "predict_proba" value: { string_value: "true" } },
  { key: "nthread" value: { string_value: "1" } }
]
"""
TORCH_CONFIG = """backend: "pytorch"
max_batch_size: 64
input [ { name: "INPUT__0" data_type: TYPE_FP32 dims: [ 4 ] } ]
output [ { name: "OUTPUT__0" data_type: TYPE_FP32 dims: [ 2 ] } ]
instance_group [ { kind: KIND_CPU count: 1 } ]
"""
PROBE_CONFIG = """backend: "python"
max_batch_size: 0
input [ { name: "x" data_type: TYPE_INT32 dims: [ 1 ] } ]
output [ { name: "major" data_type: TYPE_INT32 dims: [ 1 ] } ]
"""


def _python_path(python: Path) -> str:
    return subprocess.run([str(python), "-c", PURELIB], capture_output=True, text=True, check=True).stdout.strip()


@pytest.fixture(scope="module")
def numpy2_environment(tmp_path_factory) -> Path:
    """The server's environment with a numpy 2 of its own in front: an environment the kit did not build."""
    base = ServerEnvironment.default().ensure(["trees", "torch"])  # a given environment gets no group added
    path = tmp_path_factory.mktemp("numpy2-env")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True, timeout=120)
    site = Path(_python_path(path / "bin" / "python3"))
    (site / "server-env.pth").write_text(_python_path(base.python) + "\n")
    done = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(site), "numpy>=2,<3"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    if done.returncode != 0:
        pytest.skip(f"numpy 2 could not be installed: {done.stderr.strip()[-300:]}")
    return path


@pytest.fixture(scope="module")
def numpy2_repository(churn_repository, tmp_path_factory) -> Path:
    """churn and dtypes (the onnxruntime backend), a small XGBoost model (fil), a TorchScript linear layer
    (pytorch) and the numpy probe. Not the tokenizer: its BYTES input needs numpy<2 in the stub (as_numpy() of
    a BYTES tensor kills a stub that runs numpy 2; DLPack has no strings)."""
    repository = tmp_path_factory.mktemp("numpy2-repository")
    for name in ("churn", "dtypes"):
        shutil.copytree(churn_repository / name, repository / name)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((200, 4)).astype(np.float32)
    trees = xgboost.train(
        {"objective": "binary:logistic", "max_depth": 3, "nthread": 1},
        xgboost.DMatrix(x, label=(x[:, 0] + x[:, 1] > 0).astype(int)),
        num_boost_round=10,
    )
    (repository / "trees" / "1").mkdir(parents=True)
    trees.save_model(str(repository / "trees" / "1" / "xgboost.json"))
    (repository / "trees" / "config.pbtxt").write_text(FIL_CONFIG)
    torch.manual_seed(0)
    (repository / "linear" / "1").mkdir(parents=True)
    torch.jit.script(torch.nn.Linear(4, 2)).save(str(repository / "linear" / "1" / "model.pt"))
    (repository / "linear" / "config.pbtxt").write_text(TORCH_CONFIG)
    (repository / "probe" / "1").mkdir(parents=True)
    (repository / "probe" / "1" / "model.py").write_text(PROBE)
    (repository / "probe" / "config.pbtxt").write_text(PROBE_CONFIG)
    return repository


@pytest.fixture(scope="module")
def numpy2_server(numpy2_environment, numpy2_repository, tmp_path_factory):
    log = tmp_path_factory.mktemp("numpy2-logs") / "triton.log"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(ENV_VAR, str(numpy2_environment))
        with EmbeddedServer(numpy2_repository, http_port=0, grpc_port=0, metrics_port=0, log_file=log) as running:
            yield running


def test_server_runs_from_its_own_environment_when_started(server):
    install = TritonInstall.locate()
    assert install.python == ServerEnvironment.default().python
    assert Path(sys.prefix) not in install.binary.parents, "tritonserver should come from the server's environment"
    assert ServerEnvironment.default().installed()["base"]


def test_stub_runs_numpy_2_when_its_environment_holds_it(numpy2_server):
    with TritonClient(numpy2_server.grpc_url) as client:
        out, _, _ = client.infer_arrays("probe", {"x": np.zeros(1, np.int32)})
    assert out["major"].tolist() == [2]


def test_churn_outputs_equal_onnxruntime_when_the_stub_runs_numpy_2(numpy2_server, numpy2_repository, churn_rows):
    with TritonClient(numpy2_server.grpc_url) as client:
        served, _, _ = client.infer_arrays("churn", churn_rows)
    session = ort.InferenceSession(str(numpy2_repository / "churn" / "1" / "model.onnx"))
    in_process = dict(zip(OUTPUTS, session.run(OUTPUTS, {f: churn_rows[f] for f in FEATURES})))
    assert served["probability"].shape == (256, 1)
    np.testing.assert_allclose(served["probability"], in_process["probability"], rtol=0, atol=1e-6)
    np.testing.assert_array_equal(served["label"], in_process["label"])
    np.testing.assert_array_equal(served["risk_segment"], in_process["risk_segment"])


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_every_datatype_round_trips_when_the_stub_runs_numpy_2(numpy2_server, protocol):
    arrays = {
        "a": np.array([[1.5, -2.0], [0.0, 4.0]], np.float32),
        "b": np.array([[1, 2], [3, 4]], np.float16),
        "c": np.array([[7], [-9]], np.int64),
        "d": np.array([[2], [5]], np.int32),
        "e": np.array([[True], [False]]),
    }
    url = numpy2_server.grpc_url if protocol == "grpc" else numpy2_server.http_url
    with TritonClient(url, protocol=protocol) as client:
        out, _, _ = client.infer_arrays("dtypes", arrays)
    np.testing.assert_array_equal(out["a_out"], arrays["a"] * 3)
    np.testing.assert_array_equal(out["b_out"], arrays["b"] + np.float16(3))
    np.testing.assert_array_equal(out["c_out"], arrays["c"] + 3)
    np.testing.assert_array_equal(out["d_out"], arrays["d"] * 3)
    np.testing.assert_array_equal(out["e_out"], ~arrays["e"])


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_fil_and_pytorch_outputs_equal_their_libraries_when_the_stub_runs_numpy_2(
    numpy2_server, numpy2_repository, protocol
):
    x = np.random.default_rng(2).standard_normal((37, 4)).astype(np.float32)
    url = numpy2_server.grpc_url if protocol == "grpc" else numpy2_server.http_url
    with TritonClient(url, protocol=protocol) as client:
        trees, _, _ = client.infer_arrays("trees", {"input__0": x})
        linear, _, _ = client.infer_arrays("linear", {"INPUT__0": x})
    booster = xgboost.Booster(model_file=str(numpy2_repository / "trees" / "1" / "xgboost.json"))
    p = booster.inplace_predict(x)
    np.testing.assert_allclose(trees["output__0"], np.stack([1 - p, p], axis=1), rtol=0, atol=1e-6)
    module = torch.jit.load(str(numpy2_repository / "linear" / "1" / "model.pt"))
    with torch.inference_mode():
        expected = module(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(linear["OUTPUT__0"], expected, rtol=0, atol=1e-6)
