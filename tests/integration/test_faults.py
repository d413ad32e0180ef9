"""Faults against the real embedded Triton: server crash and restart mid-run, client killed and resumed,
models that fail to load, a reload under traffic, and outputs that cannot be written.

Each test that breaks a server starts its own (the session server stays untouched); what must hold
is always the same: every row exactly once, or a clear error that leaves no final file behind.
"""

from __future__ import annotations

import json
import os
import random
import resource
import shutil
import signal
import subprocess
import sys
import threading
import time

import pandas as pd
import pytest

from tritonkit.clients import TritonClient
from tritonkit.clients.score import ScoreOptions, score
from tritonkit.errors import ModelLoadError, ModelNotFoundError
from tritonkit.export.churn import synthetic_customers
from tritonkit.server import EmbeddedServer

TRITONKIT = [sys.executable, "-m", "tritonkit.cli"]
ADMIN_KEY = "faults-admin-key-0123456789abcdef"
RECORD = {
    "tenure_months": 3.0,
    "monthly_charges": 95.5,
    "support_calls": 4.0,
    "days_since_login": 21.0,
    "num_products": 1.0,
}


@pytest.fixture
def churn_only(churn_repository, tmp_path):
    """A repository of its own holding churn version 1 (tests add versions and broken models to it)."""
    repository = tmp_path / "repository"
    shutil.copytree(churn_repository / "churn", repository / "churn")
    return repository


@pytest.fixture(scope="module")
def customers(tmp_path_factory):
    frame = synthetic_customers(30_000, seed=21).drop(columns=["churned"])
    path = tmp_path_factory.mktemp("faults-data") / "customers.parquet"
    frame.to_parquet(path)
    return path, frame


def parts_done(output) -> int:
    return len(list(output.with_name(output.name + ".parts").glob("chunk-*")))


def wait_for(condition, timeout_s: float = 60, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def test_bulk_run_completes_every_row_once_when_server_is_killed_and_restarted(churn_only, customers, tmp_path):
    path, frame = customers
    out = tmp_path / "out.parquet"
    with EmbeddedServer(
        churn_only, http_port=0, grpc_port=0, metrics_port=0, exit_timeout_s=5, log_file=tmp_path / "triton.log"
    ) as server:
        outcome = {}

        def run() -> None:
            try:
                outcome["report"] = score(
                    ScoreOptions(
                        model="churn",
                        input=path,
                        output=out,
                        endpoint=server.grpc_url,
                        id_column="customer_id",
                        chunk_rows=1_000,
                        batch_size=250,
                        concurrency=1,
                    )
                )
            except BaseException as e:
                outcome["error"] = e

        thread = threading.Thread(target=run)
        thread.start()
        wait_for(lambda: parts_done(out) >= 3 or not thread.is_alive(), what="the first chunks")
        server.kill()
        killed_at = parts_done(out)
        assert thread.is_alive() and killed_at < 30, "the run should still be going when the server dies"
        time.sleep(1.0)  # requests fail (connection refused) and back off meanwhile
        server.start()  # same ports
        thread.join(timeout=240)
    assert "error" not in outcome, outcome.get("error")
    report = outcome["report"]
    assert report.retries > 0
    assert (report.rows_read, report.rows_scored, report.rows_rejected) == (30_000, 30_000, 0)
    result = pd.read_parquet(out)
    assert list(result.customer_id) == list(frame.customer_id)


def test_resume_after_kill_9_at_random_points_ends_with_every_row_exactly_once(server, customers, tmp_path):
    path, frame = customers
    out = tmp_path / "out.parquet"
    command = [
        *TRITONKIT,
        "score",
        "--model",
        "churn",
        "--input",
        str(path),
        "--output",
        str(out),
        "--url",
        server.grpc_url,
        "--id-column",
        "customer_id",
        "--chunk-rows",
        "500",
        "--batch-size",
        "250",
        "--concurrency",
        "1",
        "--no-progress",
        "--report",
        str(tmp_path / "r.json"),
    ]
    chunks = 60
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    kills = 0
    for attempt in range(3):  # killed up to twice at random points, then left to finish
        process = subprocess.Popen(
            [*command, *(["--resume"] if attempt else [])], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )
        if attempt < 2:
            # A random chunk in the first third of what is left, then a random moment: mid-request,
            # mid-write or between chunks.
            before = parts_done(out)
            target = rng.randint(before + 1, before + max(1, (chunks - before) // 3))
            wait_for(
                lambda target=target, process=process: parts_done(out) >= target or process.poll() is not None,
                what=f"chunk {target}",
            )
            time.sleep(rng.uniform(0, 0.02))
            if process.poll() is None:
                process.send_signal(signal.SIGKILL)
                kills += 1
        stderr = process.communicate(timeout=300)[1]
        if process.returncode == 0:
            break
        assert process.returncode == -signal.SIGKILL, f"seed {seed}: {stderr}"
        if out.exists():  # killed between the final rename and the clean-up: the output must be whole
            assert pd.read_parquet(out).customer_id.tolist() == frame.customer_id.tolist(), f"seed {seed}"
    assert process.returncode == 0, f"seed {seed}: {stderr}"
    assert kills >= 1, f"seed {seed}: every run finished before it could be killed"
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["rows_read"] == report["rows_scored"] == 30_000 and report["rows_resumed"] > 0, seed
    result = pd.read_parquet(out)
    assert list(result.customer_id) == list(frame.customer_id), f"seed {seed}: rows lost or doubled"
    assert not out.with_name(out.name + ".parts").exists()


def reload_traffic(server, protocol: str, stop: threading.Event, seen: list, errors: list) -> None:
    url = server.grpc_url if protocol == "grpc" else server.http_url
    with TritonClient(url, protocol=protocol, timeout_s=30) as client:
        while not stop.is_set():
            try:
                seen.append(client.predict("churn", RECORD).model_version)
            except Exception as e:
                errors.append(e)


def test_reload_with_new_version_under_traffic_fails_no_request_and_ends_on_new_version(churn_only, tmp_path):
    broken = churn_only / "broken"
    (broken / "1").mkdir(parents=True)
    (broken / "1" / "model.onnx").write_bytes(b"not an onnx file")
    (broken / "config.pbtxt").write_text(
        (churn_only / "churn" / "config.pbtxt").read_text().replace('name: "churn"', 'name: "broken"')
    )
    with EmbeddedServer(
        churn_only,
        http_port=0,
        grpc_port=0,
        metrics_port=0,
        exit_timeout_s=5,
        model_control_mode="explicit",
        extra_args=["--load-model=churn"],
        admin_key=ADMIN_KEY,
        log_file=tmp_path / "triton.log",
    ) as server:
        admin = TritonClient(server.grpc_url, headers=server.admin_headers("grpc"))
        # A model that fails to load: a clear error naming it and why; the server keeps serving the rest.
        with pytest.raises(ModelLoadError) as failed:
            admin.load_model("broken")
        assert failed.value.model == "broken" and "INVALID_PROTOBUF" in failed.value.reason, failed.value.reason
        assert "model `broken` failed to load" in str(failed.value)

        stop, seen, errors = threading.Event(), [], []
        threads = [
            threading.Thread(target=reload_traffic, args=(server, protocol, stop, seen, errors))
            for protocol in ("grpc", "http")
        ]
        for thread in threads:
            thread.start()
        wait_for(lambda: len(seen) >= 20, what="traffic on version 1")
        shutil.copytree(churn_only / "churn" / "1", churn_only / "churn" / "2")
        admin.load_model("churn")  # returns once version 2 serves and version 1 is retired
        count = len(seen)
        wait_for(lambda: len(seen) >= count + 20, what="traffic after the reload")
        stop.set()
        for thread in threads:
            thread.join()
        admin.close()
    assert errors == [], f"{len(errors)} of {len(seen) + len(errors)} requests failed during the reload: {errors[:3]}"
    # Each traffic thread may have had one request on version 1 in flight when the reload returned.
    assert seen[0] == "1" and set(seen[count + 2 :]) == {"2"}


def test_predict_raises_model_not_found_naming_model_when_model_is_not_loaded(churn_only, tmp_path):
    with EmbeddedServer(
        churn_only,
        http_port=0,
        grpc_port=0,
        metrics_port=0,
        exit_timeout_s=5,
        model_control_mode="explicit",
        log_file=tmp_path / "triton.log",
    ) as server:
        for protocol, url in (("grpc", server.grpc_url), ("http", server.http_url)):
            with TritonClient(url, protocol=protocol) as client, pytest.raises(ModelNotFoundError) as missing:
                client.predict("churn", RECORD)
            assert missing.value.model == "churn" and "or not loaded" in str(missing.value)


def drop_file_permissions() -> list[str]:
    """A command prefix under which chmod-ed folders are really unwritable, root included (or skip)."""
    if os.geteuid() != 0:
        return []
    if shutil.which("setpriv") is None:
        pytest.skip("running as root without setpriv: a read-only folder would still be writable")
    return ["setpriv", "--bounding-set=-dac_override,-dac_read_search,-fowner"]


def test_score_exits_with_clear_error_and_no_output_when_folder_is_not_writable(server, customers, tmp_path):
    path, _ = customers
    folder = tmp_path / "locked"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        result = subprocess.run(
            [
                *drop_file_permissions(),
                *TRITONKIT,
                "score",
                "--model",
                "churn",
                "--input",
                str(path),
                "--output",
                str(folder / "out.parquet"),
                "--url",
                server.grpc_url,
                "--no-progress",
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        folder.chmod(0o755)
    assert result.returncode == 12, result.stderr
    message = " ".join(result.stderr.split())  # rich wraps long lines
    assert f"cannot write {folder}" in message and "Permission denied" in message and "Traceback" not in message
    assert list(folder.iterdir()) == []


@pytest.mark.parametrize("limit", [400_000, 100_000], ids=["output-fills", "parts-fill"])
def test_score_exits_with_clear_error_leaving_no_final_file_when_disk_fills_then_resumes(
    server, customers, tmp_path, limit
):
    path, frame = customers
    out = tmp_path / "out.csv"
    command = [
        *TRITONKIT,
        "score",
        "--model",
        "churn",
        "--input",
        str(path),
        "--output",
        str(out),
        "--url",
        server.grpc_url,
        "--id-column",
        "customer_id",
        "--chunk-rows",
        "5000",
        "--no-progress",
    ]

    def small_disk() -> None:  # no file may grow past `limit` bytes: 400 kB holds a part, not the 2 MB output
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    full = subprocess.run(command, capture_output=True, text=True, timeout=120, preexec_fn=small_disk)
    assert full.returncode == 12, full.stderr
    message = " ".join(full.stderr.split())  # rich wraps long lines
    assert f"cannot write {out}: " in message and "File too large" in message and "Traceback" not in message
    assert not out.exists(), "a half-written output was left under the final name"
    parts = out.with_name(out.name + ".parts")
    leftovers = [p.name for p in [*tmp_path.iterdir(), *parts.iterdir()] if p.name.startswith(".")]
    assert leftovers == [], "temporary files left behind"
    if limit == 400_000:
        assert parts_done(out) > 0 and "--resume" in message, "finished chunks should stay for --resume"
    resumed = subprocess.run([*command, "--resume"], capture_output=True, text=True, timeout=120)
    assert resumed.returncode == 0, resumed.stderr
    assert list(pd.read_csv(out).customer_id) == list(frame.customer_id)


def test_server_stops_when_the_process_that_started_it_is_killed_with_sigkill(churn_only, tmp_path):
    """No orphaned Triton keeps the ports after its parent dies without cleaning up."""
    script = (
        "import sys, time\nfrom tritonkit.server import EmbeddedServer\n"
        f"server = EmbeddedServer({str(churn_only)!r}, http_port=0, grpc_port=0, metrics_port=0).start()\n"
        "print(server.pid, flush=True)\ntime.sleep(600)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        triton = int(parent.stdout.readline())
        os.kill(triton, 0)  # running
        parent.send_signal(signal.SIGKILL)
        parent.wait()

        def gone() -> bool:
            try:
                os.kill(triton, 0)
            except ProcessLookupError:
                return True
            with open(f"/proc/{triton}/stat") as stat:  # a zombie waiting for init counts as gone
                return stat.read().split(")")[-1].split()[0] == "Z"

        wait_for(gone, 60, "tritonserver to exit after its parent was killed")
    finally:
        if parent.poll() is None:
            parent.kill()
