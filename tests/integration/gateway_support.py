"""Support for the gateway tests: the test models, a gateway process, HTTP calls and /metrics readings."""

from __future__ import annotations

import http.client
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import onnx
from onnx import TensorProto, helper
from prometheus_client.parser import text_string_to_metric_families

from tritonkit.benchmarks.spawn import stop_group

CLOCK_INPUTS = ("x", "hour_of_day", "day_of_week", "is_weekend")
SLOW_SLEEP_S = 2.0


def build_clock_model(repository: Path) -> None:
    """`clock`: echoes its entity feature x and its three request-time features (FP32 [1] each)."""
    names = {"x": "x_out", "hour_of_day": "hour", "day_of_week": "dow", "is_weekend": "weekend"}
    graph = helper.make_graph(
        [helper.make_node("Identity", [i], [o]) for i, o in names.items()],
        "clock",
        [helper.make_tensor_value_info(i, TensorProto.FLOAT, ["batch", 1]) for i in names],
        [helper.make_tensor_value_info(o, TensorProto.FLOAT, ["batch", 1]) for o in names.values()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    (repository / "clock" / "1").mkdir(parents=True)
    onnx.save(model, repository / "clock" / "1" / "model.onnx")
    inputs = " ".join(f'{{ name: "{i}" data_type: TYPE_FP32 dims: [ 1 ] }},' for i in names).rstrip(",")
    outputs = " ".join(f'{{ name: "{o}" data_type: TYPE_FP32 dims: [ 1 ] }},' for o in names.values()).rstrip(",")
    (repository / "clock" / "config.pbtxt").write_text(
        f'backend: "onnxruntime"\nmax_batch_size: 64\ninput [ {inputs} ]\noutput [ {outputs} ]\ndynamic_batching {{ }}\n'
    )


def build_slow_model(repository: Path) -> None:
    """`slow`: a Python-backend model that takes SLOW_SLEEP_S to answer y = x."""
    (repository / "slow" / "1").mkdir(parents=True)
    (repository / "slow" / "1" / "model.py").write_text(
        f"""import time

import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        time.sleep({SLOW_SLEEP_S})
        return [
            pb_utils.InferenceResponse([pb_utils.Tensor("y", pb_utils.get_input_tensor_by_name(r, "x").as_numpy())])
            for r in requests
        ]
"""
    )
    (repository / "slow" / "config.pbtxt").write_text(
        'backend: "python"\nmax_batch_size: 8\n'
        'input [ { name: "x" data_type: TYPE_FP32 dims: [ 1 ] } ]\n'
        'output [ { name: "y" data_type: TYPE_FP32 dims: [ 1 ] } ]\n'
    )


def gateway_repository(churn_repository: Path, target: Path) -> Path:
    shutil.copytree(churn_repository / "churn", target / "churn")
    build_clock_model(target)
    build_slow_model(target)
    return target


class GatewayProcess:
    """`tritonkit gateway ...` as a child process, on a given port; stopped with SIGTERM."""

    def __init__(self, args: list[str], port: int, log: Path):
        self.args, self.port, self.log = args, port, log
        self.process: subprocess.Popen | None = None

    def start(self, timeout_s: float = 60.0) -> GatewayProcess:
        command = [sys.executable, "-m", "tritonkit.cli", "gateway", *self.args, "--port", str(self.port)]
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the gateway exited ({self.process.returncode}): {self.log.read_text()[-2000:]}")
            try:
                if call(self.port, "GET", "/healthz")[0] == 200:
                    return self
            except OSError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"the gateway did not answer /healthz in {timeout_s} s: {self.log.read_text()[-2000:]}")

    def stop(self) -> None:
        if self.process is not None:
            stop_group(self.process)


def call(port: int, method: str, path: str, body=None, timeout_s: float = 30.0) -> tuple[int, dict, object]:
    """(status, headers, JSON or text) of one real HTTP request to the gateway."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout_s)
    try:
        payload = body if isinstance(body, (bytes, type(None))) else json.dumps(body).encode()
        connection.request(method, path, body=payload, headers={"content-type": "application/json"} if payload else {})
        response = connection.getresponse()
        data = response.read()
        headers = {k.lower(): v for k, v in response.getheaders()}
    finally:
        connection.close()
    if headers.get("content-type", "").startswith("application/json"):
        return response.status, headers, json.loads(data)
    return response.status, headers, data.decode()


def metrics(port: int) -> dict[tuple[str, tuple], float]:
    """Every sample on /metrics: (name, sorted label items) -> value."""
    status, _, text = call(port, "GET", "/metrics")
    assert status == 200
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(readings: dict, name: str, **labels) -> float:
    return readings.get((name, tuple(sorted(labels.items()))), 0.0)


def wait_for(check, timeout_s: float = 30.0, interval_s: float = 0.2, message=None):
    """Calls `check()` until it returns something truthy; returns it (fails the test after `timeout_s`, showing
    `message` when given, else the last result)."""
    deadline = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval_s)
    shown = message[-1] if isinstance(message, list) and message else message if message is not None else last
    raise AssertionError(f"condition not met within {timeout_s} s; last: {shown!r}")
