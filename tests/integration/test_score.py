"""`tritonkit score` against the real embedded server: parity, rejects, formats, resume, shards."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import numpy as np
import onnxruntime as ort
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tritonkit.clients.endpoint import Endpoint
from tritonkit.clients.score import ScoreOptions, score
from tritonkit.errors import UsageError
from tritonkit.export.churn import FEATURES, OUTPUTS, synthetic_customers

TRITONKIT = [sys.executable, "-m", "tritonkit.cli"]


@pytest.fixture(scope="module")
def customers(tmp_path_factory):
    """30,000 synthetic customers as Parquet (no label column), with ids that are not row numbers."""
    frame = synthetic_customers(30_000, seed=11).drop(columns=["churned"])
    frame["customer_id"] = frame["customer_id"] * 7 + 1000
    path = tmp_path_factory.mktemp("data") / "customers.parquet"
    frame.to_parquet(path, row_group_size=7_000)
    return path, frame


def in_process(repository, frame: pd.DataFrame) -> dict[str, np.ndarray]:
    session = ort.InferenceSession(str(repository / "churn" / "1" / "model.onnx"))
    return dict(zip(OUTPUTS, session.run(OUTPUTS, {f: frame[[f]].to_numpy(np.float32) for f in FEATURES})))


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_score_output_equals_onnxruntime_in_input_order_when_parquet(
    server, churn_repository, customers, tmp_path, protocol
):
    path, frame = customers
    url = server.grpc_url if protocol == "grpc" else server.http_url
    report = score(
        ScoreOptions(
            model="churn",
            input=path,
            output=tmp_path / "out.parquet",
            endpoint=Endpoint(url, protocol=protocol, timeout_s=120),
            id_column="customer_id",
            chunk_rows=8_192,
            batch_size=1_000,
            threshold=0.5,
            segments=["Low", "Medium", "High"],
            segment_bounds=[0.3, 0.6],
        )
    )
    assert (report.rows_read, report.rows_scored, report.rows_rejected) == (30_000, 30_000, 0)
    assert report.complete and report.model_version == "1"
    out = pd.read_parquet(tmp_path / "out.parquet")
    assert list(out.customer_id) == list(frame.customer_id)
    expected = in_process(churn_repository, frame)
    np.testing.assert_allclose(out.probability.to_numpy(), expected["probability"][:, 0], rtol=0, atol=1e-6)
    np.testing.assert_array_equal(out.label.to_numpy(), expected["label"][:, 0])
    np.testing.assert_array_equal(out.predicted_label.to_numpy(), (out.probability >= 0.5).astype(int))
    segments = np.array(["Low", "Medium", "High"])[expected["risk_segment"][:, 0]]
    np.testing.assert_array_equal(out.segment.astype(str).to_numpy(), segments)
    assert set(out.model_name) == {"churn"} and set(out.model_version) == {"1"}
    assert out.predicted_at.notna().all()
    assert not (tmp_path / "out.parquet.parts").exists()


def test_score_rejects_bad_rows_with_row_number_and_reason_when_csv_is_dirty(server, tmp_path):
    frame = synthetic_customers(1_000, seed=2).drop(columns=["churned"]).astype({"support_calls": object})
    frame.loc[3, "support_calls"] = "many"
    frame.loc[10, "monthly_charges"] = np.nan  # empty cell in CSV
    frame.loc[20, "days_since_login"] = np.inf
    frame.to_csv(tmp_path / "in.csv", index=False)
    result = subprocess.run(
        [
            *TRITONKIT,
            "score",
            "--model",
            "churn",
            "--input",
            str(tmp_path / "in.csv"),
            "--output",
            str(tmp_path / "out.csv"),
            "--url",
            server.grpc_url,
            "--id-column",
            "customer_id",
            "--report",
            str(tmp_path / "report.json"),
            "--no-progress",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 8, result.stderr
    report = json.loads((tmp_path / "report.json").read_text())
    assert (report["rows_read"], report["rows_scored"], report["rows_rejected"]) == (1_000, 997, 3)
    rejects = [json.loads(line) for line in (tmp_path / "out.csv.rejects.jsonl").read_text().splitlines()]
    assert [r["row"] for r in rejects] == [3, 10, 20]
    assert rejects[0]["reason"] == "`support_calls` is 'many'; input `support_calls` expects FP32"
    assert "`monthly_charges` is missing" in rejects[1]["reason"]
    assert "not finite" in rejects[2]["reason"]
    out = pd.read_csv(tmp_path / "out.csv")
    assert len(out) == 997 and not set(out.customer_id) & {3, 10, 20}


def test_score_feeds_vector_input_from_list_column_and_from_stacked_columns(server, tmp_path):
    rows = [[1.0, 2.0, 3.0, 4.0], [0.5, 0.5, 0.5, 0.5], [1.0, 2.0], None, [9.0, 8.0, 7.0, 6.0]]
    pq.write_table(pa.table({"x": pa.array(rows, pa.list_(pa.float64())), "k": list("abcde")}), tmp_path / "v.parquet")
    report = score(
        ScoreOptions(
            model="vector",
            input=tmp_path / "v.parquet",
            output=tmp_path / "v.jsonl",
            endpoint=server.grpc_url,
            id_column="k",
        )
    )
    assert (report.rows_scored, report.rows_rejected) == (3, 2)
    out = [json.loads(line) for line in (tmp_path / "v.jsonl").read_text().splitlines()]
    assert [o["k"] for o in out] == ["a", "b", "e"]
    assert out[2]["y"] == [18.0, 16.0, 14.0, 12.0]
    rejects = [json.loads(line) for line in (tmp_path / "v.jsonl.rejects.jsonl").read_text().splitlines()]
    assert [(r["row"], r["id"]) for r in rejects] == [(2, "c"), (3, "d")]
    assert "`x` has 2 values" in rejects[0]["reason"] and "expects 4" in rejects[0]["reason"]

    (tmp_path / "s.jsonl").write_text(
        "\n".join([json.dumps({"a": i, "b": i + 1, "c": i + 2, "d": i + 3}) for i in range(5)] + ["{broken"])
    )
    report = score(
        ScoreOptions(
            model="vector",
            input=tmp_path / "s.jsonl",
            output=tmp_path / "s.parquet",
            endpoint=server.grpc_url,
            maps=["a,b,c,d=x"],
        )
    )
    assert (report.rows_read, report.rows_scored, report.rows_rejected) == (6, 5, 1)
    out = pq.read_table(tmp_path / "s.parquet").to_pydict()
    assert out["row"] == [0, 1, 2, 3, 4] and out["y"][4] == [8.0, 10.0, 12.0, 14.0]


def test_score_refuses_with_clear_message_when_columns_missing_or_output_exists(server, customers, tmp_path):
    path, _ = customers
    with pytest.raises(UsageError, match=r"input `x` \(FP32 \[-1, 4\]\) needs column 'x'.*--map COLUMN=x"):
        score(ScoreOptions(model="vector", input=path, output=tmp_path / "o.parquet", endpoint=server.grpc_url))
    (tmp_path / "exists.parquet").write_text("")
    with pytest.raises(UsageError, match="already exists"):
        score(ScoreOptions(model="churn", input=path, output=tmp_path / "exists.parquet", endpoint=server.grpc_url))


def test_shards_cover_every_row_exactly_once_when_run_separately(server, customers, tmp_path):
    path, frame = customers
    seen = []
    for index in range(3):
        out = tmp_path / f"shard-{index}.parquet"
        report = score(
            ScoreOptions(
                model="churn",
                input=path,
                output=out,
                endpoint=server.grpc_url,
                chunk_rows=4_000,
                shard=(index, 3),
                id_column="customer_id",
            )
        )
        assert report.complete
        seen.extend(pd.read_parquet(out).customer_id)
    assert len(seen) == len(frame) and set(seen) == set(frame.customer_id)


def test_resume_after_kill_9_ends_with_every_row_exactly_once(server, churn_repository, tmp_path):
    frame = synthetic_customers(120_000, seed=4).drop(columns=["churned"])
    path = tmp_path / "big.parquet"
    frame.to_parquet(path)
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
        "2000",
        "--batch-size",
        "500",
        "--concurrency",
        "2",
        "--no-progress",
    ]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    parts = tmp_path / "out.parquet.parts"
    deadline = time.monotonic() + 60
    while len(list(parts.glob("chunk-*.arrow"))) < 5 and time.monotonic() < deadline:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    finished = len(list(parts.glob("chunk-*.arrow")))
    assert 5 <= finished < 60, "the run should have been killed midway"
    assert not out.exists()
    again = subprocess.run([*command, "--report", str(tmp_path / "r.json")], capture_output=True, text=True)
    assert again.returncode == 2 and "--resume" in again.stderr
    resumed = subprocess.run(
        [*command, "--resume", "--report", str(tmp_path / "r.json")], capture_output=True, text=True, timeout=300
    )
    assert resumed.returncode == 0, resumed.stderr
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["rows_read"] == report["rows_scored"] == 120_000
    assert report["rows_resumed"] >= finished * 2000
    result = pd.read_parquet(out)
    assert list(result.customer_id) == list(frame.customer_id)
    expected = in_process(churn_repository, frame)
    np.testing.assert_allclose(result.probability.to_numpy(), expected["probability"][:, 0], rtol=0, atol=1e-6)


def test_score_writes_store_so_lookup_hits_and_freshness_passes_when_store_given(server, customers, tmp_path):
    from tritonkit.clients.hybrid import HybridClient, check_freshness
    from tritonkit.clients.store import open_store

    path, frame = customers
    url = f"sqlite:///{tmp_path / 'preds.db'}"
    report = score(
        ScoreOptions(
            model="churn",
            input=path,
            output=tmp_path / "o.parquet",
            endpoint=server.grpc_url,
            id_column="customer_id",
            store=url,
        )
    )
    assert report.complete
    out = pd.read_parquet(tmp_path / "o.parquet")
    with open_store(url) as store:
        entity = str(frame.customer_id.iloc[123])
        result = HybridClient(store, None, "churn", fallback="none").lookup(entity)
        assert result.status == "hit" and result.source == "batch"
        assert result.outputs["probability"] == pytest.approx(float(out.probability.iloc[123]), abs=1e-6)
        freshness = check_freshness(store, "churn", max_age_s=3600, total_entities=len(frame))
        assert freshness.status == "fresh"
