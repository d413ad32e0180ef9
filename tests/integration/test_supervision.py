"""`tritonkit serve` supervising Triton: a crash is reported as a crash, and restarted unless --restart no.

Each test runs its own `tritonkit serve` on free ports with a one-model repository, and kills only
the Triton that serve started (found as serve's child process).
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import urllib.request

import psutil
import pytest
from guard_support import exchange, post, wait_for

from tritonkit.errors import ServerCrashedError
from tritonkit.server import EmbeddedServer, free_port
from tritonkit.server.supervisor import RestartPolicy, Supervisor

TRITONKIT = [sys.executable, "-m", "tritonkit.cli"]
GOOD = json.dumps({"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}).encode()


@pytest.fixture
def vector_only(churn_repository, tmp_path):
    shutil.copytree(churn_repository / "vector", tmp_path / "repository" / "vector")
    return tmp_path / "repository"


class Serve:
    """`tritonkit serve` in a subprocess, its stderr lines collected as they come."""

    def __init__(self, repository, tmp_path, *args: str):
        self.ports = {name: free_port() for name in ("http", "grpc", "metrics", "kit-metrics")}
        options = [x for name, port in self.ports.items() for x in (f"--{name}-port", str(port))]
        self.process = subprocess.Popen(
            [*TRITONKIT, "serve", "--model-repository", str(repository), "--log-file", str(tmp_path / "t.log")]
            + options
            + list(args),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.stderr: list[str] = []
        threading.Thread(target=self._collect, daemon=True).start()
        ready = self.process.stdout.readline()
        assert "Triton ready" in ready, ready + self.process.stdout.read() + "".join(self.stderr)

    def _collect(self) -> None:
        for line in self.process.stderr:
            self.stderr.append(line)
            self.lines.put(line)

    def await_line(self, text: str, timeout_s: float = 90) -> None:
        wait_for(lambda: any(text in line for line in self.stderr), timeout_s, f"{text!r} on serve's stderr")

    def triton(self) -> psutil.Process:
        (child,) = [c for c in psutil.Process(self.process.pid).children() if "tritonserver" in c.name()]
        return child

    def kit_metric(self, name: str) -> float:
        url = f"http://127.0.0.1:{self.ports['kit-metrics']}/metrics"
        text = urllib.request.urlopen(url, timeout=10).read().decode()
        return float(next(line.split()[-1] for line in text.splitlines() if line.startswith(name + " ")))

    def infer_status(self) -> int:
        return exchange(self.ports["http"], post("/v2/models/vector/infer", GOOD))[0].status

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def test_serve_restarts_triton_and_counts_it_when_triton_is_sigkilled(vector_only, tmp_path):
    serve = Serve(vector_only, tmp_path)
    try:
        first = serve.triton()
        os.killpg(first.pid, signal.SIGKILL)  # Triton and its stubs, as the OOM killer or a crash would
        serve.await_line("Triton crashed: it was killed by SIGKILL")
        serve.await_line("Triton restarted (restart 1")
        assert serve.triton().pid != first.pid
        assert serve.kit_metric("tritonkit_triton_restarts_total") == 1
        assert serve.infer_status() == 200
        serve.process.send_signal(signal.SIGTERM)
        serve.process.wait(timeout=60)
    finally:
        serve.close()
    assert serve.process.returncode == 0, "".join(serve.stderr)


def test_serve_exits_14_with_crash_report_when_restart_is_no_and_triton_segfaults(vector_only, tmp_path):
    serve = Serve(vector_only, tmp_path, "--restart", "no")
    try:
        serve.triton().send_signal(signal.SIGSEGV)
        serve.process.wait(timeout=60)
    finally:
        serve.close()
    stderr = "".join(serve.stderr)
    assert serve.process.returncode == ServerCrashedError.exit_code == 14, stderr
    assert "Triton crashed: it was killed by SIGSEGV (signal 11)" in stderr
    assert "the last lines of its log" in stderr and "Signal (11) received." in stderr
    assert "not restarted (--restart no)" in stderr and "Traceback" not in stderr
    assert stderr.count("Triton crashed") == 1


def test_guard_answers_502_while_triton_is_down_and_serves_again_after_restart(vector_only, tmp_path):
    with EmbeddedServer(
        vector_only, http_port=0, grpc_port=0, metrics_port=0, log_file=tmp_path / "t.log", exit_timeout_s=5
    ) as server:
        supervisor = Supervisor(server, RestartPolicy(backoff_s=3.0))
        runner = threading.Thread(target=supervisor.run, daemon=True)
        runner.start()
        os.killpg(server.pid, signal.SIGKILL)
        wait_for(lambda: not server.running(), 10, "Triton to die")
        (down,) = exchange(server.http_port, post("/v2/models/vector/infer", GOOD))
        assert down.status == 502 and "unavailable" in json.loads(down.body)["error"]
        wait_for(lambda: supervisor.restarts == 1 and server.running(), 120, "the restart")
        (up,) = exchange(server.http_port, post("/v2/models/vector/infer", GOOD))
        assert up.status == 200 and server.kit_metrics.restarts == 1 and server.kit_metrics.upstream_errors >= 1
        supervisor.request_stop()
        runner.join(timeout=60)
        assert not runner.is_alive()
