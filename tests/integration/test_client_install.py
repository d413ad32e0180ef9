"""`pip install tritonkit` alone, as the batch image and applications install it: the client on numpy 2,
pyarrow 26 and pandas 3. Its commands work against the real embedded Triton (started from the server's own
environment), `serve` and `guard` need no extra, the gateway's packages are there, and the commands of the
extras say which pip install adds them.

The client environment is `.venv-client` (`make client-env`), named by TRITONKIT_CLIENT_VENV, which
`make test` sets; without the variable (a plain `pytest` run) this module is skipped.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pandas as pd
import pytest

from tritonkit.export.churn import FEATURES, OUTPUTS, synthetic_customers
from tritonkit.server import free_port

CLIENT_VENV = os.environ.get("TRITONKIT_CLIENT_VENV")
pytestmark = pytest.mark.skipif(
    not CLIENT_VENV, reason="TRITONKIT_CLIENT_VENV names the client-only environment (make test sets it)"
)
RECORD = {"tenure_months": 3, "monthly_charges": 95.5, "support_calls": 4, "days_since_login": 21, "num_products": 1}
VERSIONS = """
import importlib.util, json, numpy, pandas, pyarrow
absent = [m for m in ("torch", "onnx", "onnxruntime", "sklearn", "pyspark", "locust", "matplotlib", "pytriton")
          if importlib.util.find_spec(m) is None]
print(json.dumps({"numpy": numpy.__version__, "pyarrow": pyarrow.__version__, "pandas": pandas.__version__,
                  "absent": absent}))
"""


@pytest.fixture(scope="module")
def client_bin() -> Path:
    path = Path(CLIENT_VENV) / "bin"
    assert (path / "tritonkit").exists(), f"{path / 'tritonkit'} is missing: run `make client-env`"
    return path


def client(client_bin: Path, *args: str, cwd: Path | None = None, timeout: float = 180):
    """Runs the client install's `tritonkit` (no PYTHONPATH: nothing of this environment leaks in)."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    command = [str(client_bin / "tritonkit"), *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=cwd, env=env)


def in_process(repository: Path, frame: pd.DataFrame) -> dict[str, np.ndarray]:
    session = ort.InferenceSession(str(repository / "churn" / "1" / "model.onnx"))
    return dict(zip(OUTPUTS, session.run(OUTPUTS, {f: frame[[f]].to_numpy(np.float32) for f in FEATURES})))


def test_client_install_holds_numpy_2_pyarrow_26_pandas_3_and_no_extra(client_bin):
    done = subprocess.run([str(client_bin / "python"), "-c", VERSIONS], capture_output=True, text=True, check=True)
    found = json.loads(done.stdout)
    assert int(found["numpy"].split(".")[0]) >= 2, found
    assert int(found["pyarrow"].split(".")[0]) >= 26, found
    assert int(found["pandas"].split(".")[0]) >= 3, found
    assert found["absent"] == ["torch", "onnx", "onnxruntime", "sklearn", "pyspark", "locust", "matplotlib", "pytriton"]


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_client_predict_equals_onnxruntime_when_served_from_the_server_environment(
    client_bin, server, churn_repository, protocol
):
    url = server.grpc_url if protocol == "grpc" else server.http_url
    done = client(client_bin, "predict", "-m", "churn", "--url", url, "--protocol", protocol, "-i", json.dumps(RECORD))
    assert done.returncode == 0, done.stderr
    prediction = json.loads(done.stdout)
    expected = in_process(churn_repository, pd.DataFrame([RECORD]))
    assert prediction["model_version"] == "1"
    assert abs(prediction["outputs"]["probability"][0] - float(expected["probability"][0, 0])) < 1e-6
    assert prediction["outputs"]["risk_segment"] == [int(expected["risk_segment"][0, 0])]


def test_client_score_output_equals_onnxruntime_when_parquet(client_bin, server, churn_repository, tmp_path):
    frame = synthetic_customers(3_000, seed=5).drop(columns=["churned"])
    frame.to_parquet(tmp_path / "customers.parquet")
    done = client(
        client_bin,
        *("score", "-m", "churn", "--url", server.grpc_url, "-i", "customers.parquet", "-o", "scored.parquet"),
        *("--id-column", "customer_id", "--no-progress", "--report", "report.json"),
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads((tmp_path / "report.json").read_text())
    assert (report["rows_read"], report["rows_scored"], report["rows_rejected"]) == (3_000, 3_000, 0)
    out = pd.read_parquet(tmp_path / "scored.parquet")
    assert list(out.customer_id) == list(frame.customer_id)
    expected = in_process(churn_repository, frame)
    np.testing.assert_allclose(out.probability.to_numpy(), expected["probability"][:, 0], rtol=0, atol=1e-6)
    np.testing.assert_array_equal(out.label.to_numpy(), expected["label"][:, 0])


def test_client_serve_starts_triton_from_the_server_environment_without_an_extra(
    client_bin, churn_repository, tmp_path
):
    repository = tmp_path / "repo"
    shutil.copytree(churn_repository / "churn", repository / "churn")
    grpc_port = free_port()
    ports = ("--http-port", str(free_port()), "--grpc-port", str(grpc_port), "--metrics-port", str(free_port()))
    command = [str(client_bin / "tritonkit"), "serve", "--model-repository", str(repository), *ports]
    process = subprocess.Popen(
        [*command, "--log-file", str(tmp_path / "triton.log")],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        lines = []
        while not lines or "Triton ready" not in lines[-1]:
            line = process.stdout.readline()
            assert line, "serve exited before Triton was ready:\n" + "".join(lines)
            lines.append(line)
        done = client(client_bin, "predict", "-m", "churn", "--url", f"127.0.0.1:{grpc_port}", "-i", json.dumps(RECORD))
        assert done.returncode == 0, done.stderr
        assert 0.0 < json.loads(done.stdout)["outputs"]["probability"][0] < 1.0
        process.send_signal(signal.SIGTERM)
        rest = process.communicate(timeout=60)[0]
    finally:
        process.kill()
    assert process.returncode == 0, rest


@pytest.mark.parametrize(
    ("args", "extra"),
    [
        (["export", "churn", "--repository", "repo"], "export"),
        (["export", "sklearn", "model.joblib", "--name", "m"], "export"),
        (["export", "xgboost", "model.json", "--name", "m"], "export"),
        (["bench", "--quick"], "bench"),
        (["score", "-m", "churn", "-i", "in.parquet", "-o", "out", "--engine", "spark"], "spark"),
    ],
)
def test_client_command_names_the_pip_install_when_its_extra_is_missing(client_bin, tmp_path, args, extra):
    done = client(client_bin, *args, cwd=tmp_path)
    assert done.returncode == 2, done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].endswith(f"pip install 'tritonkit[{extra}]'"), done.stderr
    assert not (tmp_path / "repo").exists()


def test_client_lists_every_command_and_models_when_asked(client_bin, server):
    done = client(client_bin, "--help")
    assert done.returncode == 0
    commands = ("serve", "server-env", "guard", "gateway", "predict", "models", "score", "lookup", "freshness", "plan")
    for command in (*commands, "export"):
        assert command in done.stdout
    described = client(client_bin, "models", "--url", server.grpc_url, "--model", "churn", "--json")
    assert described.returncode == 0, described.stderr
    assert json.loads(described.stdout)[0]["name"] == "churn"


def test_client_install_loads_the_gateway_and_the_guard_when_imported(client_bin):
    modules = "tritonkit.clients.gateway.server, tritonkit.clients.store, tritonkit.server.guard, xxhash, yaml"
    done = subprocess.run(
        [str(client_bin / "python"), "-c", f"import {modules}"], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr


def test_client_guard_forwards_predict_to_triton_when_started_alone(client_bin, server):
    listen = f"127.0.0.1:{free_port()}"
    command = [str(client_bin / "tritonkit"), "guard", "--upstream", server.triton_http_url, "--listen", listen]
    process = subprocess.Popen([*command, "--metrics-listen", ""], stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout.readline().startswith(f"guard on http://{listen}")
        done = client(
            client_bin, "predict", "-m", "churn", "--url", listen, "--protocol", "http", "-i", json.dumps(RECORD)
        )
        assert done.returncode == 0, done.stderr
        assert 0.0 < json.loads(done.stdout)["outputs"]["probability"][0] < 1.0
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    finally:
        process.kill()
