"""The edges of the clients against real sockets: budgets while connecting, bad command-line input, stale
fallback over both protocols, and `tritonkit models` on a repository and a server."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time

import pytest

from tritonkit.clients import TritonClient
from tritonkit.clients.hybrid import HybridClient
from tritonkit.clients.store import Entry, open_store
from tritonkit.server import free_port

TRITONKIT = [sys.executable, "-m", "tritonkit.cli"]
RECORD = {"tenure_months": 3, "monthly_charges": 95.5, "support_calls": 4, "days_since_login": 21, "num_products": 1}


def run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([*TRITONKIT, *args], capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def silent_port():
    """A port whose listener accepts connections and never answers (a hung server, a black-holed proxy)."""
    listener = socket.create_server(("127.0.0.1", 0))
    accepted, stop = [], threading.Event()

    def accept():
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield listener.getsockname()[1]
    stop.set()
    thread.join()
    for connection in accepted:
        connection.close()
    listener.close()


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_predict_gives_up_at_its_budget_when_the_server_accepts_and_never_answers(silent_port, protocol):
    url = f"127.0.0.1:{silent_port}"
    result = run("predict", "-m", "churn", "--url", url, "--protocol", protocol, "--timeout-ms", "500",
                 "--input", json.dumps(RECORD), timeout=15)  # fmt: skip
    assert result.returncode == 11, result.stderr
    assert "500 ms budget" in result.stderr and "Traceback" not in result.stderr


def test_score_gives_up_within_its_retry_window_when_the_server_never_answers(silent_port, tmp_path):
    source = tmp_path / "in.jsonl"
    source.write_text(json.dumps(RECORD) + "\n")
    started = time.monotonic()
    result = run("score", "-m", "churn", "--url", f"127.0.0.1:{silent_port}", "--timeout-ms", "500",
                 "--retry-s", "2", "--input", str(source), "--output", str(tmp_path / "o.parquet"), timeout=30)  # fmt: skip
    assert result.returncode in (5, 11), result.stderr
    assert "Traceback" not in result.stderr and time.monotonic() - started < 30


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("@{missing}", "--input @.*missing.json: cannot read it as UTF-8 JSON"),
        ("@{folder}", "--input @.*: cannot read it as UTF-8 JSON"),
        ("@{latin1}", "--input @.*latin1.json: cannot read it as UTF-8 JSON"),
        ("[1, 2]", "--input must be a JSON object"),
    ],
)
def test_predict_exits_2_with_one_line_when_input_file_is_missing_a_folder_or_not_utf8(tmp_path, value, message):
    latin1 = tmp_path / "latin1.json"
    latin1.write_bytes('{"name": "café"}'.encode("latin-1"))
    value = value.format(missing=tmp_path / "missing.json", folder=tmp_path, latin1=latin1)
    result = run("predict", "-m", "churn", "--url", "127.0.0.1:1", "--input", value)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    import re

    assert re.search(message, result.stderr), result.stderr


def test_predict_refuses_a_port_out_of_range_instead_of_connecting_elsewhere():
    result = run("predict", "-m", "churn", "--url", "127.0.0.1:99999", "--input", json.dumps(RECORD))
    assert result.returncode == 2 and "port from 1 to 65535" in result.stderr


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_hybrid_lookup_returns_stale_entry_when_live_server_is_dead_over_either_protocol(tmp_path, protocol):
    store = open_store(f"sqlite://{tmp_path / 'preds.db'}")
    outputs = {"probability": 0.25, "label": 0}
    store.put_many([Entry("7", "churn", "1", outputs, time.time() - 7200, "batch")])
    with TritonClient(f"127.0.0.1:{free_port()}", protocol=protocol, timeout_s=2) as down:
        client = HybridClient(store, down, "churn", max_age_s=3600)
        result = client.lookup("7", RECORD)
    assert (result.status, result.source, result.outputs) == ("stale", "batch", outputs)
    assert result.detail.startswith("live call failed") and client.stats.fallback_errors == 1
    store.close()


def test_models_describes_a_repository_without_a_server_when_given_a_folder(churn_repository):
    result = run("models", "--repository", str(churn_repository), "--json")
    assert result.returncode == 0, result.stderr
    found = {m["name"]: m for m in json.loads(result.stdout)}
    churn = found["churn"]
    assert churn["versions"] == ["1"] and churn["state"] == "on disk" and churn["backend"] == "onnxruntime"
    assert churn["max_batch_size"] == 4096 and "tenure_months FP32 [-1, 1]" in churn["inputs"]
    assert churn["dynamic_batching"].startswith("delay 0 us") and "KIND_CPU" in churn["instances"]


def test_models_describes_served_models_and_says_how_when_the_index_is_closed(server):
    named = run("models", "--url", server.grpc_url, "--model", "churn", "--model", "vector", "--json")
    assert named.returncode == 0, named.stderr
    found = {m["name"]: m for m in json.loads(named.stdout)}
    assert found["churn"]["state"] == "READY" and found["vector"]["inputs"] == ["x FP32 [-1, 4]"]
    listed = run("models", "--url", server.grpc_url)  # the repository index is behind the admin key by default
    assert listed.returncode == 2 and "name them with --model" in listed.stderr
