"""`tritonkit score` against bad input and careless use (issue 15): undecodable ids, edited inputs on resume,
empty inputs, leftovers of killed runs, two runs on one output, a store that lost data, booleans, an
output inside the input folder."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tritonkit.clients.realtime import TritonClient
from tritonkit.clients.score import ScoreOptions, score
from tritonkit.errors import OutputInUseError, UsageError
from tritonkit.export.churn import FEATURES, synthetic_customers

TRITONKIT = [sys.executable, "-m", "tritonkit.cli"]
HEADER = ",".join(["customer_id", *FEATURES])


class Interrupted(Exception):
    """Stands for a crash after some chunks: their parts stay for --resume."""


def stop_after(chunks: int):
    seen = []

    def progress(rows: int) -> None:
        seen.append(rows)
        if len(seen) >= chunks:
            raise Interrupted(f"stopped after {chunks} chunks")

    return progress


def customers_csv(path, ids, seed=1) -> pd.DataFrame:
    frame = synthetic_customers(len(ids), seed=seed).drop(columns=["churned", "customer_id"])
    lines = [HEADER.encode()]
    for customer, row in zip(ids, frame.itertuples(index=False)):
        lines.append(customer + b"," + ",".join(f"{v:.3f}" for v in row).encode())
    path.write_bytes(b"\n".join(lines) + b"\n")
    return frame


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_score_rejects_the_row_and_keeps_text_ids_when_a_csv_id_is_not_utf8(server, tmp_path):
    from tritonkit.clients.store import open_store

    folder = tmp_path / "in"
    folder.mkdir()
    customers_csv(folder / "a.csv", [b"c0", b"c\xc01", b"007"])
    customers_csv(folder / "b.csv", [b"c3", b"", b"c5"], seed=2)
    url = f"sqlite:///{tmp_path / 'p.db'}"
    out = tmp_path / "out.parquet"
    options = ScoreOptions(
        model="churn", input=folder, output=out, endpoint=server.grpc_url, id_column="customer_id", store=url
    )
    report = score(options)
    assert (report.rows_read, report.rows_scored, report.rows_rejected) == (6, 4, 2)
    assert pq.read_table(out).column("customer_id").to_pylist() == ["c0", "007", "c3", "c5"]
    rejects = [json.loads(line) for line in out.with_name(out.name + ".rejects.jsonl").read_text().splitlines()]
    assert [(r["row"], r["id"]) for r in rejects] == [(1, None), (4, None)]
    assert "not UTF-8" in rejects[0]["reason"] and "is missing" in rejects[1]["reason"]
    with open_store(url) as store:
        assert store.get("churn", "c0") is not None and store.get("churn", "007") is not None
        assert store.count_fresh("churn", 3600)["batch"] == 4  # no "b'c0'", no "None"


def test_score_reads_json_lines_ids_as_text_and_rejects_ids_that_are_neither_text_nor_integer(server, tmp_path):
    record = dict(zip(FEATURES, [3.0, 50.0, 1.0, 4.0, 2.0]))
    lines = [{"customer_id": i, **record} for i in (7, "x8", 9.5, True, None)]
    (tmp_path / "in.jsonl").write_text("\n".join(json.dumps(r) for r in lines))
    out = tmp_path / "out.parquet"
    report = score(
        ScoreOptions(
            model="churn", input=tmp_path / "in.jsonl", output=out, endpoint=server.grpc_url, id_column="customer_id"
        )
    )
    assert (report.rows_scored, report.rows_rejected) == (2, 3)
    assert pq.read_table(out).column("customer_id").to_pylist() == ["7", "x8"]
    rejects = [json.loads(line) for line in out.with_name(out.name + ".rejects.jsonl").read_text().splitlines()]
    assert [r["row"] for r in rejects] == [2, 3, 4]
    assert "an id is text or an integer" in rejects[0]["reason"] and "is missing" in rejects[2]["reason"]


def test_resume_refuses_an_edited_chunk_when_the_edit_keeps_size_and_mtime_and_accepts_a_touch(server, tmp_path):
    source = tmp_path / "in.csv"
    customers_csv(source, [str(i).encode() for i in range(1_000)])
    out = tmp_path / "out.parquet"
    options = ScoreOptions(
        model="churn", input=source, output=out, endpoint=server.grpc_url, id_column="customer_id", chunk_rows=200
    )
    with pytest.raises(Interrupted):
        score(options, progress=stop_after(2))
    original, stat = source.read_bytes(), source.stat()
    lines = original.split(b"\n")
    cells = lines[5].split(b",")  # row 4: chunk 0, finished by the run above
    cells[2] = b"9" * len(cells[2])
    lines[5] = b",".join(cells)
    source.write_bytes(b"\n".join(lines))
    os.utime(source, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert source.stat().st_size == stat.st_size and source.stat().st_mtime_ns == stat.st_mtime_ns
    options.resume = True
    with pytest.raises(UsageError, match=r"chunk 0 of the input \(rows 0-199\) changed since the run began"):
        score(options)
    source.write_bytes(original)  # the same content again, with a new modification time: resumes
    report = score(options)
    assert report.rows_resumed >= 400 and report.rows_scored == 1_000
    assert pq.read_table(out).column("customer_id").to_pylist() == [str(i) for i in range(1_000)]


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_score_writes_empty_output_and_zero_report_when_input_has_no_rows(server, tmp_path, fmt):
    source = tmp_path / f"empty.{fmt}"
    if fmt == "csv":
        source.write_text(HEADER + "\n")
    else:
        columns = {"customer_id": pa.array([], pa.int64())} | {f: pa.array([], pa.float64()) for f in FEATURES}
        pq.write_table(pa.table(columns), source)
    out = tmp_path / "out.parquet"
    command = [*TRITONKIT, "score", "--model", "churn", "--input", str(source), "--output", str(out)]
    command += ["--url", server.grpc_url, "--id-column", "customer_id", "--report", str(tmp_path / "r.json")]
    result = subprocess.run([*command, "--no-progress"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "r.json").read_text())
    assert (report["rows_read"], report["rows_scored"], report["rows_rejected"]) == (0, 0, 0)
    table = pq.read_table(out)
    assert table.num_rows == 0 and {"customer_id", "probability", "model_version"} <= set(table.column_names)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [source.name, "out.parquet", "out.parquet.rejects.jsonl", "r.json"]
    )


def test_score_removes_temporaries_left_by_killed_runs_when_started_again(server, tmp_path):
    frame = synthetic_customers(1_000, seed=3).drop(columns=["churned"])
    frame.to_parquet(tmp_path / "in.parquet")
    out = tmp_path / "out.parquet"
    pid = dead_pid()
    stale = [tmp_path / f".out.parquet.tmp-{pid}", tmp_path / f".out.parquet.rejects.jsonl.tmp-{pid}"]
    for path in stale:
        path.write_bytes(b"half a file")
    options = ScoreOptions(model="churn", input=tmp_path / "in.parquet", output=out, endpoint=server.grpc_url)
    options.chunk_rows = 200
    with pytest.raises(Interrupted):
        score(options, progress=stop_after(2))
    assert not any(p.exists() for p in stale), "a fresh run removes them"
    parts = out.with_name(out.name + ".parts")
    stale = [tmp_path / f".out.parquet.tmp-{pid}", parts / f".chunk-00000003.arrow.tmp-{pid}"]
    for path in stale:
        path.write_bytes(b"half a file")
    options.resume = True
    report = score(options)
    assert report.rows_scored == 1_000 and not any(p.exists() for p in stale), "--resume removes them"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.parquet", "out.parquet", "out.parquet.rejects.jsonl"]


def test_score_refuses_a_second_run_on_the_same_output_naming_the_holder_then_runs_once_it_died(server, tmp_path):
    frame = synthetic_customers(500, seed=3).drop(columns=["churned"])
    frame.to_parquet(tmp_path / "in.parquet")
    out = tmp_path / "out.parquet"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from tritonkit.clients.runlock import OutputLock; "
            f"OutputLock({str(out)!r}).acquire(); print('held', flush=True); time.sleep(120)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        options = ScoreOptions(model="churn", input=tmp_path / "in.parquet", output=out, endpoint=server.grpc_url)
        with pytest.raises(
            OutputInUseError, match=rf"in use by another run \(pid {holder.pid} on host \S+, started 20"
        ):
            score(options)
        assert not out.exists() and not out.with_name(out.name + ".parts").exists()
    finally:
        holder.kill()
        holder.wait()
    assert score(options).rows_scored == 500  # the lock died with its holder (kill -9)


def test_resume_writes_finished_chunks_to_the_store_again_when_the_store_lost_them(server, tmp_path):
    from tritonkit.clients.hybrid import check_freshness
    from tritonkit.clients.store import open_store

    frame = synthetic_customers(1_000, seed=5).drop(columns=["churned"])
    frame.to_parquet(tmp_path / "in.parquet")
    db = tmp_path / "p.db"
    options = ScoreOptions(
        model="churn",
        input=tmp_path / "in.parquet",
        output=tmp_path / "out.parquet",
        endpoint=server.grpc_url,
        id_column="customer_id",
        chunk_rows=200,
        store=f"sqlite:///{db}",
    )
    with pytest.raises(Interrupted):
        score(options, progress=stop_after(2))
    db.unlink()  # the store lost everything: a Redis restarted without persistence, a replaced file
    options.resume = True
    report = score(options)
    assert report.rows_resumed >= 400
    with open_store(options.store) as store:
        assert store.get("churn", str(frame.customer_id.iloc[0])) is not None
        freshness = check_freshness(store, "churn", max_age_s=3600, total_entities=len(frame), min_coverage=1.0)
    assert freshness.status == "fresh" and freshness.coverage == 1.0


def test_booleans_are_one_and_zero_for_numeric_inputs_in_predict_csv_json_lines_and_parquet(server, tmp_path):
    with TritonClient(server.grpc_url) as client:
        assert client.predict("vector", {"x": [True, False, 1, 0]}).outputs["y"].tolist() == [[2.0, 0.0, 2.0, 0.0]]
    (tmp_path / "in.csv").write_text("a,b,c,d\ntrue,False,1,0\nTRUE,false,yes,0\n")
    (tmp_path / "in.jsonl").write_text(
        '{"a": true, "b": false, "c": 1, "d": 0}\n{"a": true, "b": false, "c": "yes", "d": 0}\n'
    )
    pq.write_table(
        pa.table({"a": [True, True], "b": [False, False], "c": [1, None], "d": [0, 0]}), tmp_path / "in.parquet"
    )
    for fmt in ("csv", "jsonl", "parquet"):
        out = tmp_path / f"{fmt}.jsonl"
        report = score(
            ScoreOptions(
                model="vector",
                input=tmp_path / f"in.{fmt}",
                output=out,
                endpoint=server.grpc_url,
                maps=["a,b,c,d=x"],
            )
        )
        assert (report.rows_scored, report.rows_rejected) == (1, 1), fmt
        assert json.loads(out.read_text())["y"] == [2.0, 0.0, 2.0, 0.0], fmt


def test_resume_works_when_the_output_folder_is_inside_the_input_folder(server, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    frame = synthetic_customers(1_000, seed=6).drop(columns=["churned"])
    frame.iloc[:500].to_parquet(folder / "a.parquet")
    frame.iloc[500:].to_parquet(folder / "b.parquet")
    out = folder / "scored" / "out.parquet"
    options = ScoreOptions(
        model="churn", input=folder, output=out, endpoint=server.grpc_url, id_column="customer_id", chunk_rows=200
    )
    with pytest.raises(Interrupted):
        score(options, progress=stop_after(2))
    options.resume = True
    report = score(options)
    assert (report.rows_read, report.rows_scored) == (1_000, 1_000)
    assert list(pq.read_table(out).column("customer_id").to_pylist()) == list(frame.customer_id)
