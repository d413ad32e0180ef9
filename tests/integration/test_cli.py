"""`tritonkit serve` and `tritonkit predict` as a user runs them: real processes, real ports."""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tritonkit.errors import ModelLoadError, PortInUseError, RepositoryError
from tritonkit.server import EmbeddedServer, free_port

TRITONKIT = [sys.executable, "-m", "tritonkit.cli"]
RECORD = '{"tenure_months": 3, "monthly_charges": 95.5, "support_calls": 4, "days_since_login": 21, "num_products": 1}'


def run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([*TRITONKIT, *args], capture_output=True, text=True, timeout=timeout)


def test_predict_prints_json_with_version_and_latency_when_served(server):
    for protocol, url in (("grpc", server.grpc_url), ("http", server.http_url)):
        result = run("predict", "--model", "churn", "--url", url, "--protocol", protocol, "--input", RECORD)
        assert result.returncode == 0, result.stderr
        body = json.loads(result.stdout)
        assert body["model_version"] == "1" and body["latency_ms"] > 0
        assert set(body["outputs"]) == {"probability", "label", "risk_segment"}


def test_predict_exits_with_one_line_error_when_input_is_bad(server):
    result = run("predict", "--model", "churn", "--url", server.grpc_url, "--input", '{"tenure_months": "x"}')
    assert result.returncode == 4
    assert "missing input" in result.stderr and "Traceback" not in result.stderr
    result = run("predict", "--model", "churn", "--url", server.grpc_url, "--input", "{not json")
    assert result.returncode == 2 and "--input is not valid JSON" in result.stderr


def test_predict_exits_with_not_found_when_model_unknown(server):
    result = run("predict", "--model", "nosuch", "--url", server.grpc_url, "--input", RECORD)
    assert result.returncode == 5 and "model `nosuch` is not served by" in result.stderr


def test_server_start_raises_port_in_use_when_port_taken(churn_repository):
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        with pytest.raises(PortInUseError, match=f"grpc port {port} on 127.0.0.1 is already in use"):
            EmbeddedServer(churn_repository, http_port=0, grpc_port=port, metrics_port=0).start()


def test_server_start_raises_repository_error_when_missing_or_empty(tmp_path):
    with pytest.raises(RepositoryError, match="does not exist"):
        EmbeddedServer(tmp_path / "nope", http_port=0, grpc_port=0, metrics_port=0).start()
    with pytest.raises(RepositoryError, match="is empty"):
        EmbeddedServer(tmp_path, http_port=0, grpc_port=0, metrics_port=0).start()


def test_server_start_names_model_and_reason_when_model_fails_to_load(tmp_path):
    broken = tmp_path / "repo" / "broken"
    (broken / "1").mkdir(parents=True)
    (broken / "1" / "model.onnx").write_bytes(b"this is not an onnx file")
    (broken / "config.pbtxt").write_text(
        'backend: "onnxruntime"\nmax_batch_size: 8\n'
        'input [ { name: "x" data_type: TYPE_FP32 dims: [ 4 ] } ]\n'
        'output [ { name: "y" data_type: TYPE_FP32 dims: [ 4 ] } ]\n'
    )
    with pytest.raises(ModelLoadError) as failure:
        EmbeddedServer(tmp_path / "repo", http_port=0, grpc_port=0, metrics_port=0, startup_timeout_s=60).start()
    assert failure.value.model == "broken"
    assert "INVALID_PROTOBUF" in failure.value.reason or "Protobuf parsing failed" in failure.value.reason


def test_serve_exits_with_clear_error_when_repository_empty(tmp_path):
    result = run(
        "serve",
        "--model-repository",
        str(tmp_path),
        "--http-port",
        "0",
        "--grpc-port",
        "0",
        "--metrics-port",
        "0",
        "--kit-metrics-port",
        "0",
        "--log-file",
        str(tmp_path / "t.log"),
    )
    assert result.returncode == 3
    assert "is empty" in result.stderr and "Traceback" not in result.stderr


def test_serve_stops_cleanly_when_sent_sigterm(churn_repository, tmp_path):
    repository = tmp_path / "repo"
    shutil.copytree(churn_repository / "churn", repository / "churn")
    grpc_port = free_port()
    process = subprocess.Popen(
        [
            *TRITONKIT,
            "serve",
            "--model-repository",
            str(repository),
            "--http-port",
            str(free_port()),
            "--grpc-port",
            str(grpc_port),
            "--metrics-port",
            str(free_port()),
            "--kit-metrics-port",
            "0",
            "--log-file",
            str(tmp_path / "t.log"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        first = process.stdout.readline()
        assert "Triton ready" in first, first + process.stdout.read()
        predicted = run("predict", "--model", "churn", "--url", f"127.0.0.1:{grpc_port}", "--input", RECORD)
        assert predicted.returncode == 0, predicted.stderr
        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        rest = process.communicate(timeout=60)[0]
    finally:
        process.kill()
    assert process.returncode == 0, rest
    assert "Triton stopped" in rest
    assert time.monotonic() - started < 30
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", grpc_port)) != 0, "the gRPC port is still open"


def test_tritonkit_module_runs_as_console_entry_point():
    result = run("--help")
    assert result.returncode == 0 and "serve" in result.stdout and "predict" in result.stdout
    assert Path(sys.executable).with_name("tritonkit").exists()
