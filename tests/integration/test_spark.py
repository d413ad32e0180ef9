"""`tritonkit score --engine spark` and tritonkit.spark on a real local Spark against the real embedded Triton."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import onnx
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from onnx import TensorProto, helper

from tritonkit.clients.score import ScoreOptions, score
from tritonkit.errors import UsageError
from tritonkit.export.churn import synthetic_customers
from tritonkit.server import EmbeddedServer

pytestmark = [
    pytest.mark.skipif(
        shutil.which("java") is None and not os.environ.get("JAVA_HOME"),
        reason="Spark needs Java 17 or later, and this machine has no Java",
    ),
    pytest.mark.filterwarnings("ignore:PySpark does not yet fully support pandas:FutureWarning"),
]

POST = {"threshold": 0.5, "segments": ["Low", "Medium", "High"], "segment_bounds": [0.3, 0.6]}


@pytest.fixture(scope="module")
def spark():
    """One local Spark for the module: 2 task slots (2 Python workers), small Arrow batches, no UI."""
    from tritonkit.spark import session

    spark = session(
        "local[2]",
        {
            "spark.ui.enabled": "false",
            "spark.sql.shuffle.partitions": "2",
            "spark.sql.execution.arrow.maxRecordsPerBatch": "2000",
            # small, short jobs: the quick JIT tier and a serial GC cost the JVM less CPU
            "spark.driver.extraJavaOptions": "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC",
        },
    )
    spark.sparkContext.setLogLevel("ERROR")
    yield spark
    spark.stop()


@pytest.fixture(scope="module")
def customers(tmp_path_factory):
    """24,000 customers in three Parquet files, ids that are not row numbers."""
    frame = synthetic_customers(24_000, seed=5).drop(columns=["churned"])
    frame["customer_id"] = frame["customer_id"] * 3 + 500
    folder = tmp_path_factory.mktemp("spark-data") / "customers"
    folder.mkdir()
    for i in range(3):
        frame.iloc[i * 8_000 : (i + 1) * 8_000].to_parquet(folder / f"part-{i}.parquet", row_group_size=3_000)
    return folder, frame


@pytest.fixture(scope="module")
def lookup_server(tmp_path_factory):
    """A second embedded Triton serving `lookup`: y = [0, 10, 20, 30][i], an error for i outside [-4, 3].

    No dynamic batching, so a request with a bad index fails alone and score / Spark split it down to the row.
    """
    repository = tmp_path_factory.mktemp("lookup-repository")
    graph = helper.make_graph(
        [helper.make_node("Gather", ["table", "i"], ["y"], axis=0)],
        "lookup",
        [helper.make_tensor_value_info("i", TensorProto.INT64, ["batch", 1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 1])],
        initializer=[helper.make_tensor("table", TensorProto.FLOAT, [4], [0.0, 10.0, 20.0, 30.0])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    (repository / "lookup" / "1").mkdir(parents=True)
    onnx.save(model, repository / "lookup" / "1" / "model.onnx")
    (repository / "lookup" / "config.pbtxt").write_text('backend: "onnxruntime"\nmax_batch_size: 64\n')
    with EmbeddedServer(
        repository, http_port=0, grpc_port=0, metrics_port=0, log_file=repository / "triton.log"
    ) as running:
        yield running


def plain(schema: pa.Schema) -> list[tuple[str, pa.DataType]]:
    """Names and types, with dictionary-encoded strings decoded and list flavours made one."""

    def kind(t: pa.DataType) -> pa.DataType:
        if pa.types.is_dictionary(t):
            return t.value_type
        if pa.types.is_fixed_size_list(t) or pa.types.is_list(t):
            return pa.list_(kind(t.value_type))
        return t

    return [(f.name, kind(f.type)) for f in schema]


def by(table: pa.Table, key: str) -> pd.DataFrame:
    return table.to_pandas().sort_values(key).reset_index(drop=True)


def assert_same_rows(local: pd.DataFrame, spark: pd.DataFrame, key: str, outputs: list[str]) -> None:
    assert list(spark[key]) == list(local[key])
    for name in outputs:
        if isinstance(local[name].iloc[0], (list, np.ndarray)):  # vectors
            np.testing.assert_allclose(np.stack(spark[name]), np.stack(local[name]), rtol=0, atol=1e-6)
        elif local[name].dtype.kind == "f":
            np.testing.assert_allclose(spark[name].to_numpy(), local[name].to_numpy(), rtol=0, atol=1e-6)
        elif local[name].dtype.kind in "iub":  # Spark's column may be float here: it held nulls before filtering
            np.testing.assert_array_equal(spark[name].to_numpy().astype(local[name].dtype), local[name].to_numpy())
        else:
            np.testing.assert_array_equal(spark[name].astype(str).to_numpy(), local[name].astype(str).to_numpy())


def test_spark_engine_output_equals_score_output_when_same_parquet_input(server, spark, customers, tmp_path):
    from typer.testing import CliRunner

    from tritonkit.cli import app

    folder, frame = customers
    report = score(
        ScoreOptions(
            model="churn",
            input=folder,
            output=tmp_path / "local.parquet",
            endpoint=server.grpc_url,
            id_column="customer_id",
            **POST,
        )
    )
    assert report.complete and report.rows_scored == len(frame)
    # The command line in this process: the module's Spark session is reused instead of starting a second JVM.
    result = CliRunner().invoke(
        app,
        [
            "score",
            "--engine",
            "spark",
            "--master",
            "local[2]",
            "--partitions",
            "3",
            "--model",
            "churn",
            "--input",
            str(folder),
            "--output",
            str(tmp_path / "spark.parquet"),
            "--url",
            server.grpc_url,
            "--id-column",
            "customer_id",
            "--threshold",
            "0.5",
            "--segments",
            "Low,Medium,High",
            "--segment-bounds",
            "0.3,0.6",
            "--report",
            str(tmp_path / "report.json"),
        ],
    )
    assert result.exit_code == 0, result.output
    spark_report = json.loads((tmp_path / "report.json").read_text())
    counts = (spark_report["rows_read"], spark_report["rows_scored"], spark_report["rows_rejected"])
    assert counts == (24_000, 24_000, 0) and spark_report["stats"]["tasks"] == 3
    local = pq.read_table(tmp_path / "local.parquet")
    scored = pq.read_table(tmp_path / "spark.parquet")
    assert plain(scored.schema) == plain(local.schema) + [("error", pa.string())]
    assert scored.num_rows == local.num_rows == len(frame)
    local, scored = by(local, "customer_id"), by(scored, "customer_id")
    assert_same_rows(
        local,
        scored,
        "customer_id",
        ["probability", "label", "risk_segment", "predicted_label", "segment", "model_name", "model_version"],
    )
    assert scored.error.isna().all() and scored.predicted_at.notna().all()


def test_spark_bad_rows_get_nulls_and_score_reasons_and_the_job_finishes(server, spark, tmp_path):
    from tritonkit.spark import run_score

    frame = synthetic_customers(3_000, seed=3).drop(columns=["churned"]).astype({"support_calls": str})
    frame.loc[3, "support_calls"] = "many"
    frame.loc[10, "monthly_charges"] = np.nan
    frame.loc[20, "days_since_login"] = np.inf
    frame.loc[2_500, "tenure_months"] = None
    frame.to_parquet(tmp_path / "dirty.parquet", row_group_size=700)
    local = score(
        ScoreOptions(
            model="churn",
            input=tmp_path / "dirty.parquet",
            output=tmp_path / "local.parquet",
            endpoint=server.grpc_url,
            **POST,
        )
    )
    assert (local.rows_scored, local.rows_rejected) == (2_996, 4)
    report = run_score(
        ScoreOptions(
            model="churn",
            input=str(tmp_path / "dirty.parquet"),
            output=str(tmp_path / "spark.parquet"),
            endpoint=server.grpc_url,
            **POST,
        ),
        spark=spark,
    )
    assert (report.rows_read, report.rows_scored, report.rows_rejected) == (3_000, 2_996, 4)
    out = by(pq.read_table(tmp_path / "spark.parquet"), "row")
    assert list(out.row) == list(range(3_000))  # no --id-column: `row` numbers the input as score does
    bad = out[out.error.notna()]
    rejects = [json.loads(line) for line in (tmp_path / "local.parquet.rejects.jsonl").read_text().splitlines()]
    assert [(r["row"], r["reason"]) for r in rejects] == list(zip(bad.row, bad.error))
    assert "`support_calls` is 'many'" in bad.error.iloc[0] and "`monthly_charges` is missing" in bad.error.iloc[1]
    assert bad[["probability", "label", "predicted_label", "segment", "model_version"]].isna().all().all()
    assert_same_rows(
        by(pq.read_table(tmp_path / "local.parquet"), "row"),
        out[out.error.isna()].reset_index(drop=True),
        "row",
        ["probability", "label", "risk_segment", "predicted_label", "segment"],
    )


def test_spark_vector_rows_and_failures_match_score_when_rows_fail_validation_or_inference(
    server, lookup_server, spark, tmp_path
):
    from tritonkit.spark import run_score

    rows = [[1.0, 2.0, 3.0, 4.0], [0.5] * 4, [1.0, 2.0], None, [9.0, 8.0, 7.0, 6.0], [1.0, 1.0, 1.0]]
    pq.write_table(
        pa.table({"x": pa.array(rows, pa.list_(pa.float64())), "i": [1, 7, 2, 3, -9, 0], "k": list("abcdef")}),
        tmp_path / "in.parquet",
    )
    # vector: a list column into FP32 [4], three lengths wrong; lookup: two indices out of the model's table
    for model, url in (("vector", server.grpc_url), ("lookup", lookup_server.grpc_url)):
        options = {"model": model, "endpoint": url, "id_column": "k"}
        local = score(ScoreOptions(input=tmp_path / "in.parquet", output=tmp_path / f"{model}.parquet", **options))
        report = run_score(
            ScoreOptions(input=str(tmp_path / "in.parquet"), output=str(tmp_path / f"{model}-spark"), **options),
            spark=spark,
        )
        assert (report.rows_scored, report.rows_rejected) == (local.rows_scored, local.rows_rejected)
        out = by(pq.read_table(tmp_path / f"{model}-spark"), "k")
        rejects = [json.loads(line) for line in (tmp_path / f"{model}.parquet.rejects.jsonl").read_text().splitlines()]
        assert [(r["id"], r["reason"]) for r in rejects] == list(
            out[out.error.notna()][["k", "error"]].itertuples(index=False, name=None)
        )
        assert out.y[out.error.notna()].isna().all()
        assert_same_rows(
            by(pq.read_table(tmp_path / f"{model}.parquet"), "k"),
            out[out.error.isna()].reset_index(drop=True),
            "k",
            ["y"],
        )
    vector = pq.read_table(tmp_path / "vector-spark")
    assert vector.schema.field("y").type == pa.list_(pa.float32())
    assert by(vector, "k").y[4].tolist() == [18.0, 16.0, 14.0, 12.0]
    assert list(out.k[out.error.notna()]) == ["b", "e"]
    assert all(e.startswith("inference failed: ") and "out of data bounds" in e for e in out.error.dropna())
    assert out.y[out.error.isna()].tolist() == [10.0, 20.0, 30.0, 0.0]


def test_spark_many_partitions_share_one_client_per_worker_process(server, spark, customers, tmp_path):
    from tritonkit.spark import run_score

    folder, frame = customers
    report = run_score(
        ScoreOptions(
            model="churn",
            input=str(folder),
            output=str(tmp_path / "out"),
            endpoint=server.grpc_url,
            id_column="customer_id",
            batch_size=1_000,
            engine="spark",
            spark_partitions=8,
        ),
        spark=spark,
    )
    stats = report.stats
    assert (report.rows_read, report.rows_scored) == (24_000, 24_000) and stats["tasks"] == 8
    assert stats["batches"] >= 2 * stats["tasks"]  # Arrow batches of 2,000 rows: several per task
    # Python workers are reused across tasks (local[2]: usually two); each keeps one client for all its batches
    assert 1 <= stats["workers"] <= stats["tasks"] and stats["clients"] <= stats["workers"]
    assert stats["requests"] >= 24  # requests of at most --batch-size rows
    out = pd.read_parquet(tmp_path / "out")
    assert sorted(out.customer_id) == sorted(frame.customer_id)


def test_spark_refuses_with_clear_message_when_column_missing_or_option_does_not_apply(
    server, spark, customers, tmp_path
):
    from tritonkit.spark import TritonUDF, run_score

    folder, _ = customers
    frame = spark.read.parquet(str(folder))
    with pytest.raises(UsageError, match=r"input `x` \(FP32 \[-1, 4\]\) needs column 'x'.*--map COLUMN=x"):
        frame.select(TritonUDF("vector", server.grpc_url)(frame))
    with pytest.raises(UsageError, match="--shard '1/2' does not apply to --engine spark"):
        run_score(
            ScoreOptions(
                model="churn", input=str(folder), output=str(tmp_path / "o"), endpoint=server.grpc_url, shard=(1, 2)
            ),
            spark=spark,
        )
    pd.DataFrame({"a": [1]}).to_csv(tmp_path / "in.csv", index=False)
    with pytest.raises(UsageError, match=r"--engine spark reads Parquet or a table .* is csv"):
        run_score(
            ScoreOptions(
                model="churn", input=str(tmp_path / "in.csv"), output=str(tmp_path / "o"), endpoint=server.grpc_url
            ),
            spark=spark,
        )
    with pytest.raises(UsageError, match="--id-column 'nope' is not a column of the input"):
        run_score(
            ScoreOptions(
                model="churn", input=str(folder), output=str(tmp_path / "o"), endpoint=server.grpc_url, id_column="nope"
            ),
            spark=spark,
        )


def test_spark_engine_presents_the_client_certificate_when_the_server_requires_one(churn_repository, spark, tmp_path):
    import trustme

    from tritonkit.clients.endpoint import Endpoint
    from tritonkit.server.security import TlsFiles
    from tritonkit.spark import run_score

    ca = trustme.CA()
    paths = {name: tmp_path / f"{name}.pem" for name in ("ca", "cert", "key", "client", "client_key")}
    ca.cert_pem.write_to_path(str(paths["ca"]))
    for issued, chain, key in (
        (ca.issue_cert("127.0.0.1"), "cert", "key"),
        (ca.issue_cert("c@t"), "client", "client_key"),
    ):
        paths[chain].write_bytes(b"".join(blob.bytes() for blob in issued.cert_chain_pems))
        issued.private_key_pem.write_to_path(str(paths[key]))
    rows = np.arange(40, dtype=np.float32).reshape(10, 4)
    source = tmp_path / "rows.parquet"
    pq.write_table(pa.table({"x": pa.FixedSizeListArray.from_arrays(pa.array(rows.ravel()), 4), "k": list(range(10))}),
                   source)  # fmt: skip
    tls = TlsFiles(paths["cert"], paths["key"], client_ca=paths["ca"])
    with EmbeddedServer(churn_repository, http_port=0, grpc_port=0, metrics_port=0, grpc_tls=tls, http_tls=tls,
                        model_control_mode="explicit", extra_args=["--load-model=vector"]) as mutual:  # fmt: skip
        endpoint = Endpoint(mutual.grpc_url, ssl=True, root_certificates=str(paths["ca"]), timeout_s=60,
                            certificate_chain=str(paths["client"]), private_key=str(paths["client_key"]))  # fmt: skip
        options = ScoreOptions(model="vector", input=str(source), output=str(tmp_path / "out"), endpoint=endpoint,
                               id_column="k", engine="spark")  # fmt: skip
        report = run_score(options, spark=spark)
    assert (report.rows_scored, report.rows_rejected) == (10, 0)
    out = pq.read_table(tmp_path / "out").to_pandas().sort_values("k")
    np.testing.assert_array_equal(np.stack(out["y"].to_numpy()), 2 * rows)
