"""Overload against the real Triton: a bounded queue answers fast, clients back off, budgets are honoured.

The repository holds `sleepy`, a Python-backend model written here: y = x, after sleeping max(x)
seconds per execution; one instance, batches of one, and a queue of at most 2 waiting requests.
`sleepy_timeout` is the same model whose queue instead refuses requests that waited over 200 ms.
Both configs are written through the kit's typed ModelConfig: the queue policy Triton enforces is
the one the kit generates.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tritonkit.clients import TritonClient
from tritonkit.clients.bulk import AsyncInferer
from tritonkit.clients.endpoint import Endpoint, RetryPolicy
from tritonkit.clients.score import ScoreOptions, score
from tritonkit.errors import DeadlineExceededError, OverloadedError, ServerError
from tritonkit.model_config import DynamicBatching, InstanceGroup, ModelConfig, QueuePolicy, TensorSpec
from tritonkit.server import EmbeddedServer, free_port

TRITONKIT = [sys.executable, "-m", "tritonkit.cli"]
SLOW_S = 1.0  # one execution of `sleepy` in the flood test
QUEUE = 2
SLEEPY = '''"""y = x, after sleeping max(x) seconds: a deliberately slow model."""
import time

import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        xs = [pb_utils.get_input_tensor_by_name(r, "x").as_numpy() for r in requests]
        time.sleep(float(max(x.max() for x in xs)))
        return [pb_utils.InferenceResponse([pb_utils.Tensor("y", x.copy())]) for x in xs]
'''


def write_sleepy(repository: Path, name: str, policy: QueuePolicy) -> None:
    (repository / name / "1").mkdir(parents=True)
    (repository / name / "1" / "model.py").write_text(SLEEPY)
    ModelConfig(
        name,
        backend="python",
        max_batch_size=1,
        inputs=[TensorSpec("x", "FP32", [1])],
        outputs=[TensorSpec("y", "FP32", [1])],
        dynamic_batching=DynamicBatching(default_queue_policy=policy),
        instance_groups=[InstanceGroup(count=1, kind="KIND_CPU")],
    ).write(repository / name)


@pytest.fixture(scope="module")
def slow_server(tmp_path_factory):
    repository = tmp_path_factory.mktemp("slow-repository")
    write_sleepy(repository, "sleepy", QueuePolicy(max_queue_size=QUEUE))
    write_sleepy(repository, "sleepy_timeout", QueuePolicy(timeout_action="REJECT", default_timeout_us=200_000))
    with EmbeddedServer(
        repository,
        http_port=0,
        grpc_port=0,
        metrics_port=0,
        exit_timeout_s=5,
        log_file=repository.parent / "triton.log",
    ) as running:
        yield running


def url_of(server, protocol: str) -> str:
    return server.grpc_url if protocol == "grpc" else server.http_url


def fill_queue(server, seconds: float, model: str = "sleepy", callers: int = QUEUE + 1) -> list[threading.Thread]:
    """Occupies the instance and the queue for about `seconds` (extra callers may be refused: fine)."""

    def block() -> None:
        with TritonClient(server.grpc_url, timeout_s=30) as client:
            try:
                client.predict(model, {"x": seconds})
            except OverloadedError:
                pass

    threads = [threading.Thread(target=block) for _ in range(callers)]
    for thread in threads:
        thread.start()
    time.sleep(0.3)
    return threads


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_full_queue_refuses_excess_at_once_with_overloaded_error_while_accepted_finish(slow_server, protocol):
    flood = 8
    barrier = threading.Barrier(flood)
    results: list[tuple[str, float, object]] = [None] * flood

    def call(i: int) -> None:
        with TritonClient(url_of(slow_server, protocol), protocol=protocol, timeout_s=60) as client:
            client.metadata("sleepy")
            barrier.wait()
            start = time.perf_counter()
            try:
                outcome = client.predict("sleepy", {"x": SLOW_S})
            except ServerError as e:
                outcome = e
            results[i] = (time.perf_counter() - start, outcome)

    threads = [threading.Thread(target=call, args=(i,)) for i in range(flood)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    accepted = [o for _, o in results if not isinstance(o, Exception)]
    refused = [(s, o) for s, o in results if isinstance(o, Exception)]
    assert refused and accepted, results
    assert len(accepted) <= flood - 1
    for prediction in accepted:
        assert prediction.outputs["y"].tolist() == [[pytest.approx(SLOW_S)]]
    for seconds, error in refused:
        assert isinstance(error, OverloadedError), error
        assert error.model == "sleepy" and error.exit_code == 10
        assert "`sleepy` is overloaded" in str(error) and "queue is full" in str(error)
        assert seconds < SLOW_S, f"a refusal took {seconds:.2f} s: it waited for the model"


def test_queue_timeout_refuses_with_overloaded_error_when_request_waited_too_long(slow_server):
    blockers = fill_queue(slow_server, 1.0, model="sleepy_timeout", callers=1)
    with TritonClient(slow_server.grpc_url, timeout_s=30) as client:
        with pytest.raises(OverloadedError) as refused:
            client.predict("sleepy_timeout", {"x": 0.0})
    assert "`sleepy_timeout` is overloaded: the request waited longer than its queue allows" in str(refused.value)
    for thread in blockers:
        thread.join()


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_call_raises_deadline_exceeded_naming_budget_when_model_answers_after_it(slow_server, protocol):
    with TritonClient(url_of(slow_server, protocol), protocol=protocol, timeout_s=30) as client:
        client.metadata("sleepy")
        start = time.perf_counter()
        with pytest.raises(DeadlineExceededError) as late:
            client.predict("sleepy", {"x": 1.5}, timeout_ms=300)
        assert time.perf_counter() - start < 1.5, "the call waited for the answer instead of giving up"
        assert late.value.budget_ms == 300 and late.value.model == "sleepy" and late.value.exit_code == 11
        assert "300 ms budget" in str(late.value)
        # The same client goes on, and gets its own answer, not the late one.
        prediction = client.predict("sleepy", {"x": 0.0}, timeout_ms=20_000)
        assert prediction.outputs["y"].tolist() == [[0.0]]


def test_predict_command_exits_11_naming_budget_when_budget_exceeded(slow_server):
    result = subprocess.run(
        [
            *TRITONKIT,
            "predict",
            "--model",
            "sleepy",
            "--url",
            slow_server.grpc_url,
            "--input",
            '{"x": 2.0}',
            "--timeout-ms",
            "250",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 11, result.stderr
    assert "250 ms budget" in result.stderr and "Traceback" not in result.stderr


def test_realtime_retry_rides_out_a_full_queue_when_policy_given(slow_server):
    blockers = fill_queue(slow_server, 0.8)
    client = TritonClient(slow_server.grpc_url, timeout_s=30, retry=RetryPolicy(base_s=0.1, max_s=0.5))
    prediction = client.predict("sleepy", {"x": 0.0})
    assert prediction.outputs["y"].tolist() == [[0.0]]
    for thread in blockers:
        thread.join()
    client.close()


def test_bulk_score_backs_off_and_scores_every_row_when_queue_keeps_overflowing(slow_server, tmp_path):
    frame = pd.DataFrame({"key": np.arange(24), "x": np.full(24, 0.02, np.float32)})
    frame.to_parquet(tmp_path / "in.parquet")
    report = score(
        ScoreOptions(
            model="sleepy",
            input=tmp_path / "in.parquet",
            output=tmp_path / "out.parquet",
            endpoint=slow_server.grpc_url,
            concurrency=8,
            id_column="key",
        )
    )
    assert report.retries > 0, "8 in flight against a queue of 2 should have been refused some of the time"
    assert (report.rows_read, report.rows_scored, report.rows_rejected) == (24, 24, 0)
    assert list(pd.read_parquet(tmp_path / "out.parquet").key) == list(range(24))


def test_bulk_gives_up_at_total_deadline_with_overloaded_error_when_queue_stays_full(slow_server):
    client = TritonClient(slow_server.grpc_url)
    meta = client.metadata("sleepy")
    blockers = fill_queue(slow_server, 2.0)

    async def once():
        retry = RetryPolicy(attempts=1000, base_s=0.05, max_s=0.2, max_total_s=1.0)
        inferer = AsyncInferer(Endpoint(slow_server.grpc_url, timeout_s=120, retry=retry), meta)
        try:
            with pytest.raises(OverloadedError) as refused:
                await inferer.infer({"x": np.zeros((1, 1), np.float32)})
            return inferer.retries, refused.value
        finally:
            await inferer.close()

    start = time.perf_counter()
    retries, error = asyncio.run(once())
    assert time.perf_counter() - start < 5, "it retried past its total deadline"
    assert retries > 0 and "`sleepy` is overloaded" in str(error) and "queue is full" in str(error)
    for thread in blockers:
        thread.join()
    client.close()


def test_bulk_gives_up_with_unavailable_at_total_deadline_when_no_server_listens():
    from tritonkit.clients.metadata import ModelMeta, TensorMeta

    meta = ModelMeta("m", ("1",), "", (TensorMeta("x", "FP32", (-1, 1)),), (TensorMeta("y", "FP32", (-1, 1)),), 8)

    async def once():
        retry = RetryPolicy(attempts=1000, base_s=0.05, max_s=0.2, max_total_s=1.0)
        inferer = AsyncInferer(Endpoint(f"127.0.0.1:{free_port()}", timeout_s=120, retry=retry), meta)
        try:
            await inferer.infer({"x": np.zeros((1, 1), np.float32)})
        finally:
            await inferer.close()

    start = time.perf_counter()
    with pytest.raises(ServerError) as down:
        asyncio.run(once())
    assert time.perf_counter() - start < 10, "the total deadline did not stop the retries"
    assert down.value.status == "UNAVAILABLE" and "still unavailable after" in str(down.value)


def _successes(server, model: str) -> int:
    import tritonclient.grpc as grpcclient

    with grpcclient.InferenceServerClient(server.grpc_url) as client:
        stats = client.get_inference_statistics(model, as_json=True)["model_stats"][0]
    return int(stats["inference_stats"]["success"].get("count", 0))


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_locust_run_stops_users_after_their_request_answers_when_run_time_ends(slow_server, tmp_path, protocol):
    """A user cut off mid-request cancels it, and Triton 2.51 can crash on a cancellation (issue 8034):
    every request the kit's Locust users send is answered and counted, none left in flight at the end."""
    root = Path(__file__).resolve().parents[2]
    (tmp_path / "rows.csv").write_text("x\n0.4\n")  # each request holds `sleepy` 0.4 s: a stop lands mid-request
    before = _successes(slow_server, "sleepy")
    env = {
        "TRITONKIT_MODEL": "sleepy",
        "TRITONKIT_PROTOCOL": protocol,
        "TRITONKIT_DATA": str(tmp_path / "rows.csv"),
        "TRITONKIT_TIMEOUT_MS": "30000",
    }
    command = [sys.executable, "-m", "locust", "-f", str(root / "benchmarks" / "locustfile.py")]
    command += ["--host", url_of(slow_server, protocol), "--headless", "-u", "2", "-r", "2", "-t", "2s"]
    command += ["--json-file", str(tmp_path / "run"), "--only-summary"]  # run.json, written once all users stopped
    done = subprocess.run(command, capture_output=True, text=True, timeout=90, env={**os.environ, **env}, cwd=root)
    assert done.returncode == 0, done.stderr[-3000:]
    (entry,) = json.loads((tmp_path / "run.json").read_text())
    counted, answered = entry["num_requests"], _successes(slow_server, "sleepy") - before
    assert entry["num_failures"] == 0 and counted > 0
    assert counted == answered, f"Triton answered {answered} requests, Locust counted {counted}"
