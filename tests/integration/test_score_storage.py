"""`tritonkit score` on object storage, against an S3-compatible emulator (moto's server mode) on loopback,
and per-run outputs: templates, shards, rejects, kill -9 and --resume, the lease lock, credentials."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pandas as pd
import pyarrow.parquet as pq
import pytest

pytest.importorskip("moto.server", reason="moto[server] is a test dependency: pip install -e .[dev]")
boto3 = pytest.importorskip("boto3")

from tritonkit.clients import storage
from tritonkit.clients.runlock import ObjectLock
from tritonkit.clients.score import ScoreOptions, score
from tritonkit.errors import OutputInUseError
from tritonkit.export.churn import synthetic_customers

TRITONKIT = [sys.executable, "-m", "tritonkit.cli"]
SECRET = "tk-secret-1f0c7e2d"  # moto accepts any credentials: this one must never be printed
KEY_ID = "AKIATRITONKITTEST01"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """moto's S3 emulator on a free loopback port, the AWS variables pointing at it, and a bucket `lake`."""
    port = free_port()
    log = open(tmp_path_factory.mktemp("moto") / "moto.log", "w")  # noqa: SIM115 - closed below
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)], stdout=log, stderr=log
    )
    env = {
        "AWS_ACCESS_KEY_ID": KEY_ID,
        "AWS_SECRET_ACCESS_KEY": SECRET,
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        client = boto3.client("s3")
        deadline = time.monotonic() + 30
        while True:
            try:
                client.create_bucket(Bucket="lake")
                break
            except Exception:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise
                time.sleep(0.2)
        yield client
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        server.terminate()
        server.wait(timeout=10)
        log.close()


def keys(client, prefix: str) -> list[str]:
    found = client.list_objects_v2(Bucket="lake", Prefix=prefix).get("Contents", [])
    return sorted(o["Key"] for o in found if not o["Key"].endswith("/"))


def upload(client, frame: pd.DataFrame, key: str, tmp_path) -> None:
    local = tmp_path / key.replace("/", "_")
    frame.to_parquet(local)
    client.upload_file(str(local), "lake", key)


def read(client, key: str, tmp_path) -> pd.DataFrame:
    local = tmp_path / ("got_" + key.replace("/", "_"))
    client.download_file("lake", key, str(local))
    return pd.read_parquet(local) if key.endswith(".parquet") else pd.read_json(local, lines=True)


def test_score_writes_templated_shards_and_rejects_to_s3_covering_every_row_once(server, s3, tmp_path):
    frame = synthetic_customers(6_000, seed=21).drop(columns=["churned"])
    frame.loc[17, "monthly_charges"] = float("nan")
    upload(s3, frame.iloc[:3_000], "in/a/part-0.parquet", tmp_path)
    upload(s3, frame.iloc[3_000:], "in/a/part-1.parquet", tmp_path)
    template = "s3://lake/out/{date}/{run_id}/shard-{shard}-of-{shards}.parquet"
    seen = []
    for index in range(2):
        report = score(
            ScoreOptions(
                model="churn",
                input="s3://lake/in/a/",
                output=template,
                endpoint=server.grpc_url,
                id_column="customer_id",
                chunk_rows=1_000,
                shard=(index, 2),
                run_id="20261126T134500Z",
            )
        )
        key = f"out/2026-11-26/20261126T134500Z/shard-{index}-of-2.parquet"
        assert report.output == f"s3://lake/{key}" and report.complete
        seen += list(read(s3, key, tmp_path).customer_id)
    assert sorted(seen + [int(frame.customer_id[17])]) == sorted(frame.customer_id)
    rejects = read(s3, "out/2026-11-26/20261126T134500Z/shard-0-of-2.parquet.rejects.jsonl", tmp_path)
    assert list(rejects.row) == [17] and "monthly_charges" in rejects.reason[0]
    assert keys(s3, "out/") == sorted(
        f"out/2026-11-26/20261126T134500Z/shard-{i}-of-2.parquet{s}" for i in range(2) for s in ("", ".rejects.jsonl")
    ), "no parts, lock or temporaries left"


def test_score_resumes_on_s3_after_kill_9_with_every_row_exactly_once(server, s3, tmp_path):
    frame = synthetic_customers(60_000, seed=22).drop(columns=["churned"])
    upload(s3, frame, "in/big.parquet", tmp_path)
    command = [*TRITONKIT, "score", "--model", "churn", "--input", "s3://lake/in/big.parquet", "--url", server.grpc_url]
    command += ["--output", "s3://lake/big/{run_id}.parquet", "--id-column", "customer_id", "--no-progress"]
    command += ["--chunk-rows", "2000", "--batch-size", "500", "--concurrency", "1"]
    env = {**os.environ, "TRITONKIT_RUN_ID": "nightly-7"}
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while len([k for k in keys(s3, "big/") if "/chunk-" in k]) < 4 and time.monotonic() < deadline:
        assert process.poll() is None, process.stderr.read()
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    finished = len([k for k in keys(s3, "big/") if "/chunk-" in k])
    assert 4 <= finished < 30, "the run should have been killed midway"
    assert "big/nightly-7.parquet" not in keys(s3, "big/"), "no output object before the run is complete"
    again = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert again.returncode == 2 and "--resume" in again.stderr
    no_id = {k: v for k, v in env.items() if k != "TRITONKIT_RUN_ID"}
    refused = subprocess.run([*command, "--resume"], env=no_id, capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2 and "TRITONKIT_RUN_ID" in refused.stderr
    report = tmp_path / "r.json"
    resumed = subprocess.run(
        [*command, "--resume", "--report", str(report)], env=env, capture_output=True, text=True, timeout=300
    )
    assert resumed.returncode == 0, resumed.stderr
    result = json.loads(report.read_text())
    assert result["rows_read"] == result["rows_scored"] == 60_000 and result["rows_resumed"] >= finished * 2000
    assert list(read(s3, "big/nightly-7.parquet", tmp_path).customer_id) == list(frame.customer_id)
    assert keys(s3, "big/") == ["big/nightly-7.parquet", "big/nightly-7.parquet.rejects.jsonl"]


def test_object_lock_refuses_a_live_holder_and_takes_over_a_dead_or_silent_one(s3):
    out = storage.locate("s3://lake/locked/out.parquet")
    lock = out.sibling(".out.parquet.lock")
    now = time.time()
    live = {"pid": os.getpid(), "host": socket.gethostname(), "started_at": now, "heartbeat_at": now, "token": "x"}
    lock.write_bytes(json.dumps(live).encode())
    with pytest.raises(OutputInUseError, match=rf"in use by another run \(pid {os.getpid()} on host"):
        ObjectLock(out).acquire()
    for holder in (
        live | {"pid": 2**22 + 7},  # this host, a pid that is gone (kill -9)
        live | {"host": "elsewhere", "heartbeat_at": now - ObjectLock.LEASE_S - 1},  # silent past the lease
        live | {"host": "elsewhere", "run_id": "nightly-7"},  # the same run, retried
    ):
        lock.write_bytes(json.dumps(holder).encode())
        taken = ObjectLock(out, run_id="nightly-7").acquire()
        assert json.loads(lock.read_bytes())["token"] == taken.token
        taken.release()
        assert not lock.exists()


def test_score_never_prints_credentials_and_refuses_them_in_uris(server, s3, tmp_path):
    frame = synthetic_customers(500, seed=23).drop(columns=["churned"])
    upload(s3, frame, "in/small.parquet", tmp_path)
    runs = [
        ["--input", "s3://lake/in/small.parquet", "--output", "s3://lake/small/out.parquet"],  # succeeds
        ["--input", "s3://no-such-bucket/in.parquet", "--output", "s3://lake/small/o2.parquet"],  # fails reading
        ["--input", "s3://lake/in/small.parquet", "--output", "s3://no-such-bucket/out.parquet"],  # fails writing
        ["--input", f"s3://{KEY_ID}:{SECRET}@lake/in/small.parquet", "--output", "s3://lake/small/o3.parquet"],
    ]
    codes = []
    for args in runs:
        command = [*TRITONKIT, "score", "--model", "churn", *args, "--url", server.grpc_url, "--no-progress"]
        result = subprocess.run([*command, "--report", str(tmp_path / "r.json")], capture_output=True, text=True)
        codes.append(result.returncode)
        shown = result.stdout + result.stderr + ((tmp_path / "r.json").read_text() if result.returncode == 0 else "")
        assert SECRET not in shown and KEY_ID not in shown, shown
        assert "Traceback" not in shown, shown
    assert codes[0] == 0 and all(code != 0 for code in codes[1:]), codes


def test_score_exit_code_for_rejected_rows_is_chosen_by_rejects_exit_code(server, tmp_path):
    frame = synthetic_customers(100, seed=24).drop(columns=["churned"])
    frame.loc[3, "tenure_months"] = float("nan")
    frame.to_parquet(tmp_path / "in.parquet")
    for code in (None, 0, 3):
        command = [*TRITONKIT, "score", "--model", "churn", "--input", str(tmp_path / "in.parquet"), "--no-progress"]
        command += ["--output", str(tmp_path / f"out-{code}.parquet"), "--url", server.grpc_url]
        command += [] if code is None else ["--rejects-exit-code", str(code)]
        result = subprocess.run(command, capture_output=True, text=True, timeout=120)
        assert result.returncode == (8 if code is None else code), result.stderr
        assert "1 of 100 rows were rejected" in " ".join(result.stderr.split())
        assert pq.read_table(tmp_path / f"out-{code}.parquet").num_rows == 99
