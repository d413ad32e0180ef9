"""`tritonkit score --watch`: new files scored once each, across kill -9 and restarts, on the real server."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tritonkit.clients.score import ScoreOptions
from tritonkit.clients.watch import Watcher
from tritonkit.errors import UsageError
from tritonkit.export.churn import synthetic_customers

TRITONKIT = [sys.executable, "-m", "tritonkit.cli"]


def drop(folder: Path, name: str, frame: pd.DataFrame) -> None:
    """Writes next to the folder's files under a skipped name, then renames into place (how producers should)."""
    tmp = folder / f".{name}.tmp"
    if name.endswith(".csv"):
        frame.to_csv(tmp, index=False)
    else:
        frame.to_parquet(tmp)
    os.replace(tmp, folder / name)


def customers(rows: int, seed: int, first_id: int) -> pd.DataFrame:
    frame = synthetic_customers(rows, seed=seed).drop(columns=["churned"])
    frame["customer_id"] = np.arange(first_id, first_id + rows)
    return frame


def wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def test_watch_once_scores_each_file_once_and_skips_in_progress_names(server, tmp_path):
    incoming, out = tmp_path / "in", tmp_path / "out"
    incoming.mkdir()
    drop(incoming, "day1.parquet", customers(3_000, 1, 0))
    drop(incoming, "day2.csv", customers(2_000, 2, 10_000))
    (incoming / "day3.parquet.tmp").write_bytes(b"still being copied")
    (incoming / "notes.txt").write_text("not data")
    command = [
        *TRITONKIT,
        "score",
        "--model",
        "churn",
        "--watch",
        str(incoming),
        "--output",
        str(out),
        "--url",
        server.grpc_url,
        "--id-column",
        "customer_id",
        "--once",
    ]
    first = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert first.returncode == 0, first.stderr
    lines = [json.loads(line) for line in first.stdout.splitlines()]
    assert sorted(Path(line["file"]).name for line in lines) == ["day1.parquet", "day2.csv"]
    assert sorted(p.name for p in out.iterdir()) == [
        "day1.parquet",
        "day1.rejects.jsonl",
        "day1.report.json",
        "day2.parquet",
        "day2.rejects.jsonl",
        "day2.report.json",
    ]
    # CSV ids are text, exactly as written (see tritonkit.clients.ids)
    assert list(pd.read_parquet(out / "day2.parquet").customer_id) == [str(i) for i in range(10_000, 12_000)]
    before = (out / "day1.parquet").stat().st_mtime_ns
    again = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0 and again.stdout == "", again.stdout
    assert (out / "day1.parquet").stat().st_mtime_ns == before


def test_watch_survives_kill_9_mid_file_and_scores_every_row_exactly_once(server, tmp_path):
    incoming, out = tmp_path / "in", tmp_path / "out"
    incoming.mkdir()
    command = [
        *TRITONKIT,
        "score",
        "--model",
        "churn",
        "--watch",
        str(incoming),
        "--output",
        str(out),
        "--url",
        server.grpc_url,
        "--id-column",
        "customer_id",
        "--poll-s",
        "0.1",
        "--settle-s",
        "0.1",
        "--chunk-rows",
        "2000",
        "--batch-size",
        "500",
        "--concurrency",
        "2",
    ]
    watcher = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        drop(incoming, "a.parquet", customers(4_000, 3, 0))
        wait_for(lambda: (out / "a.parquet").exists(), 60, "a.parquet to be scored")
        big = customers(120_000, 4, 100_000)
        drop(incoming, "b.parquet", big)
        wait_for(lambda: len(list((out / "b.parquet.parts").glob("chunk-*"))) >= 4, 60, "b.parquet half-way")
        watcher.send_signal(signal.SIGKILL)
        watcher.wait()
        assert not (out / "b.parquet").exists(), "b.parquet should have been killed midway"
        a_scored_at = (out / "a.parquet").stat().st_mtime_ns

        watcher = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        drop(incoming, "c.csv", customers(1_000, 5, 900_000))
        # a file's report is written after its line is printed: once both are there, both lines are out
        wait_for(lambda: (out / "b.report.json").exists() and (out / "c.report.json").exists(), 120, "b and c")
        watcher.send_signal(signal.SIGTERM)
        stdout, stderr = watcher.communicate(timeout=30)
        assert watcher.returncode == 0, stderr
    finally:
        if watcher.poll() is None:
            watcher.kill()
    scored = [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]
    assert sorted(Path(s["file"]).name for s in scored) == ["b.parquet", "c.csv"], "a must not be scored again"
    assert (out / "a.parquet").stat().st_mtime_ns == a_scored_at
    b = pd.read_parquet(out / "b.parquet")
    assert list(b.customer_id) == list(big.customer_id)
    report = json.loads((out / "b.report.json").read_text())
    assert report["rows_read"] == report["rows_scored"] == 120_000 and report["rows_resumed"] >= 8_000
    assert not (out / "b.parquet.parts").exists()


def test_watch_refuses_output_inside_the_watched_folder_and_stem_clashes(tmp_path):
    base = ScoreOptions(model="churn", input=tmp_path, output=tmp_path)
    with pytest.raises(UsageError, match="is the watched folder"):
        Watcher(base, tmp_path, tmp_path)
    (tmp_path / "x.csv").write_text("a\n1\n")
    (tmp_path / "x.parquet").write_bytes(b"")
    with pytest.raises(UsageError, match="x.csv and x.parquet would both be scored into x.parquet"):
        Watcher(base, tmp_path, tmp_path / "out").pending()
