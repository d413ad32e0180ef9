"""`export --profile` configs load and serve, and `score` warns once about a model configured for real time."""

from __future__ import annotations

import logging

import joblib
import numpy as np
import pytest
from sklearn.ensemble import RandomForestClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from typer.testing import CliRunner

from tritonkit.cli import app
from tritonkit.clients import TritonClient, advice
from tritonkit.clients.score import ScoreOptions, score
from tritonkit.export.churn import FEATURES, synthetic_customers
from tritonkit.server import EmbeddedServer


@pytest.fixture(scope="module")
def profiled(tmp_path_factory):
    """A repository with a forest exported --profile realtime and --profile bulk, and churn --profile bulk."""
    folder = tmp_path_factory.mktemp("profiles")
    customers = synthetic_customers(400, seed=4)
    pipeline = make_pipeline(StandardScaler(), RandomForestClassifier(10, max_depth=4, random_state=0))
    joblib.dump(pipeline.fit(customers[FEATURES].to_numpy(np.float32), customers["churned"]), folder / "f.joblib")
    repository = folder / "repository"
    runner = CliRunner()
    for name, profile in (("forest", "realtime"), ("forest_bulk", "bulk")):
        done = runner.invoke(
            app,
            [
                "export",
                "sklearn",
                str(folder / "f.joblib"),
                "--name",
                name,
                "-r",
                str(repository),
                "--profile",
                profile,
            ],
        )
        assert done.exit_code == 0, done.output
    done = runner.invoke(app, ["export", "churn", "--name", "churn_b", "-r", str(repository), "--profile", "bulk"])
    assert done.exit_code == 0 and "(bulk config)" in done.output, done.output
    customers[FEATURES].head(300).assign(id=range(300)).to_parquet(folder / "rows.parquet")
    with EmbeddedServer(repository, http_port=0, grpc_port=0, metrics_port=0) as server:
        yield server, folder


def _served_shape(client: TritonClient, model: str) -> tuple:
    config = client.model_config(model)
    threads = config["parameters"]["intra_op_thread_count"]["string_value"]
    return sum(int(g["count"]) for g in config["instance_group"]), threads, int(config["max_batch_size"])


def test_export_profiles_write_configs_that_load_and_serve_when_exported(profiled):
    server, _ = profiled
    rows = synthetic_customers(16, seed=5)
    with TritonClient(server.grpc_url) as client:
        assert _served_shape(client, "forest") == (2, "1", 4096)
        assert _served_shape(client, "forest_bulk") == (1, "0", 65_536)
        assert _served_shape(client, "churn_b") == (1, "0", 65_536)
        features = rows[FEATURES].to_numpy(np.float32)
        realtime, _, _ = client.infer_arrays("forest", {"features": features})
        bulk, _, _ = client.infer_arrays("forest_bulk", {"features": features})
        np.testing.assert_allclose(realtime["probabilities"], bulk["probabilities"], atol=1e-6)
        churn, _, _ = client.infer_arrays("churn_b", {f: rows[[f]].to_numpy(np.float32) for f in FEATURES})
        assert churn["probability"].shape == (16, 1)


def test_score_warns_once_when_the_model_looks_configured_for_realtime(profiled, caplog):
    server, folder = profiled
    advice._WARNED.clear()

    def run(model: str, index: int) -> None:
        options = ScoreOptions(
            model=model,
            input=folder / "rows.parquet",
            output=folder / f"out-{model}-{index}.parquet",
            endpoint=server.grpc_url,
            maps=[",".join(FEATURES) + "=features"],
            id_column="id",
        )
        assert score(options).rows_scored == 300

    with caplog.at_level(logging.WARNING, logger="tritonkit.clients.advice"):
        run("forest", 0)
        run("forest", 1)
        run("forest_bulk", 0)
    warnings = [r.getMessage() for r in caplog.records if r.name == "tritonkit.clients.advice"]
    assert len(warnings) == 1, warnings
    assert "model `forest` looks configured for real time (max_batch_size 4096, 2 instance(s)" in warnings[0]
    assert "tritonkit tune --model forest" in warnings[0] and "forest_bulk" in warnings[0]
