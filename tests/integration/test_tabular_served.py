"""Tabular models served by the real embedded Triton: DataFrame pipelines with text, XGBoost, LightGBM and
CatBoost as ONNX, the FIL layout through the Python-based `fil` backend, and an XGBoost Pipeline as the
ensemble preprocessing (ONNX) -> trees (fil) -> label; parity with each library."""

from __future__ import annotations

import json
import re

import joblib
import numpy as np
import pandas as pd
import pytest

pytest.importorskip("xgboost")
pytest.importorskip("lightgbm")
pytest.importorskip("catboost")
pytest.importorskip("onnxmltools")

import catboost
import lightgbm
import xgboost
from sklearn.linear_model import LogisticRegression

from tritonkit.benchmarks.trees import FEATURES, customers, pipeline
from tritonkit.clients import TritonClient
from tritonkit.clients.endpoint import Endpoint
from tritonkit.clients.score import ScoreOptions, score
from tritonkit.export.options import ExportOptions
from tritonkit.export.sklearn import export_sklearn
from tritonkit.export.trees import export_trees
from tritonkit.server import EmbeddedServer

NUMBERS = ["tenure_months", "monthly_charges", "support_calls"]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Small models of each kind, exported into one repository; {name: the fitted model}."""
    folder = tmp_path_factory.mktemp("tabular")
    data = customers(500, seed=5)
    X, y = data[FEATURES], data["churned"]
    numbers = data[NUMBERS].fillna(0).to_numpy(np.float32)
    fitted = {
        "logistic": pipeline(LogisticRegression(max_iter=500)).fit(X, y),
        "xgb_pipe": pipeline(xgboost.XGBClassifier(n_estimators=10, max_depth=3)).fit(X, y),
        "lgb_pipe": pipeline(lightgbm.LGBMClassifier(n_estimators=10, verbose=-1)).fit(X, y),
        "xgb": xgboost.XGBClassifier(n_estimators=10, max_depth=3).fit(numbers, y),
        "lgb": lightgbm.LGBMClassifier(n_estimators=10, verbose=-1).fit(numbers, y),
        "cb": catboost.CatBoostClassifier(iterations=10, verbose=0, allow_writing_files=False).fit(numbers, y),
    }
    sample = folder / "sample.parquet"
    data.head(100).to_parquet(sample)
    repository = folder / "repository"
    for name, model in fitted.items():
        joblib.dump(model, folder / f"{name}.joblib")
    options = {"sample": sample}
    export_sklearn(folder / "logistic.joblib", ExportOptions(repository, "logistic", **options))
    export_trees("xgboost", folder / "xgb_pipe.joblib", ExportOptions(repository, "xgb_pipe", **options))
    export_trees("lightgbm", folder / "lgb_pipe.joblib", ExportOptions(repository, "lgb_pipe", **options))
    ensemble = ExportOptions(repository, "xgb_ens", format="fil", instances=1, **options)
    export_trees("xgboost", folder / "xgb_pipe.joblib", ensemble)
    fitted["xgb_ens"] = fitted["xgb_pipe"]
    fitted["xgb"].save_model(folder / "xgb.json")  # native files, as people keep them
    fitted["lgb"].booster_.save_model(folder / "lgb.txt")
    fitted["cb"].save_model(str(folder / "cb.cbm"))
    for library, file, name in (("xgboost", "xgb.json", "xgb"), ("lightgbm", "lgb.txt", "lgb")):
        export_trees(library, folder / file, ExportOptions(repository, f"{name}_onnx"))
        fil = ExportOptions(repository, f"{name}_fil", format="fil", instances=1, intra_op_threads=2)
        export_trees(library, folder / file, fil)
    export_trees("catboost", folder / "cb.cbm", ExportOptions(repository, "cb_onnx"))
    return repository, fitted


@pytest.fixture(scope="module")
def served(models, tmp_path_factory):
    repository, _ = models
    log = tmp_path_factory.mktemp("logs") / "triton.log"
    with EmbeddedServer(repository, http_port=0, grpc_port=0, metrics_port=0, log_file=log) as server:
        yield server


@pytest.fixture(scope="module")
def rows():
    """Rows with an unseen category, missing text and a missing number among them."""
    frame = customers(40, seed=9)
    frame.loc[0, "contract"], frame.loc[1, "plan"], frame.loc[2, "monthly_charges"] = "never-seen", np.nan, np.nan
    return frame


def _record(row) -> dict:
    return {c: (None if isinstance(row[c], float) and np.isnan(row[c]) else row[c]) for c in FEATURES}


@pytest.mark.parametrize("name", ["logistic", "xgb_pipe", "lgb_pipe", "xgb_ens"])
@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_predict_matches_library_when_record_has_text_unseen_and_missing_values(served, models, rows, name, protocol):
    _, fitted = models
    url = served.grpc_url if protocol == "grpc" else served.http_url
    with TritonClient(url, protocol=protocol) as client:
        got = np.stack([client.predict(name, _record(row)).outputs["probabilities"][0] for _, row in rows.iterrows()])
    expected = fitted[name].predict_proba(rows[FEATURES])
    np.testing.assert_allclose(got, expected, atol=1e-5)


@pytest.mark.parametrize("suffix", [".csv", ".parquet", ".jsonl"])
def test_score_matches_library_and_rejects_non_text_when_file_has_text_columns(served, models, rows, tmp_path, suffix):
    _, fitted = models
    path = tmp_path / f"rows{suffix}"
    if suffix == ".jsonl":
        records = [{"customer_id": int(r.customer_id), **_record(r)} for _, r in rows.iterrows()]
        records[3]["contract"] = True  # not text: rejected, the run goes on
        path.write_text("\n".join(json.dumps(r, default=lambda v: v.item()) for r in records) + "\n")
    else:
        (rows.to_csv(path, index=False) if suffix == ".csv" else rows.to_parquet(path))
    output = tmp_path / "scores.parquet"
    report = score(
        ScoreOptions(model="xgb_pipe", input=path, output=output, endpoint=served.grpc_url, id_column="customer_id")
    )
    scored = pd.read_parquet(output)
    bad = {3} if suffix == ".jsonl" else set()
    assert report.rows_read == len(rows) and report.rows_rejected == len(bad)
    keep = [i for i in range(len(rows)) if i not in bad]
    expected = fitted["xgb_pipe"].predict_proba(rows[FEATURES].iloc[keep])
    np.testing.assert_allclose(np.stack(scored["probabilities"].to_numpy()), expected, atol=1e-5)
    if bad:
        [reject] = [json.loads(line) for line in (tmp_path / "scores.parquet.rejects.jsonl").read_text().splitlines()]
        assert reject["row"] == 3 and "`contract`" in reject["reason"] and "BYTES" in reject["reason"]


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_fil_ensemble_matches_pipeline_when_scored_with_unseen_and_missing_values(
    served, models, rows, tmp_path, protocol
):
    _, fitted = models
    rows.to_parquet(tmp_path / "rows.parquet")
    url = served.grpc_url if protocol == "grpc" else served.http_url
    report = score(
        ScoreOptions(
            model="xgb_ens",
            input=tmp_path / "rows.parquet",
            output=tmp_path / "scores.parquet",
            endpoint=Endpoint(url, protocol=protocol),
            id_column="customer_id",
        )
    )
    assert report.rows_scored == len(rows) and report.rows_rejected == 0
    scored = pd.read_parquet(tmp_path / "scores.parquet")
    np.testing.assert_allclose(
        np.stack(scored["probabilities"].to_numpy()), fitted["xgb_ens"].predict_proba(rows[FEATURES]), atol=1e-5
    )
    assert scored["label"].tolist() == fitted["xgb_ens"].predict(rows[FEATURES]).tolist()


@pytest.mark.parametrize("name, threads", [("xgb_fil", "2"), ("xgb_ens_trees", "1")])
def test_fil_backend_loads_booster_with_config_threads_when_nthread_is_set(served, name, threads):
    lines = [line for line in served.log_file.read_text().splitlines() if f"fil: model '{name}'" in line]
    assert len(lines) == 1 and re.search(rf"loaded once; nthread {threads}\b", lines[0]), lines


@pytest.mark.parametrize("name", ["xgb", "lgb"])
def test_fil_form_matches_onnx_form_and_library_when_served(served, models, name):
    _, fitted = models
    features = customers(64, seed=4)[NUMBERS].fillna(0).to_numpy(np.float32)
    with TritonClient(served.grpc_url) as client:
        fil = client.predict(f"{name}_fil", {"input__0": features}).outputs["output__0"]
        onnx = client.predict(f"{name}_onnx", {"features": features}).outputs["probabilities"]
        assert client.metadata(f"{name}_fil").feature_names == ()
    np.testing.assert_allclose(fil, onnx, atol=1e-5)
    np.testing.assert_allclose(fil, fitted[name].predict_proba(features), atol=1e-5)


def test_catboost_onnx_matches_catboost_when_served(served, models):
    _, fitted = models
    features = customers(64, seed=4)[NUMBERS].fillna(0).to_numpy(np.float32)
    with TritonClient(served.grpc_url) as client:
        outputs = client.predict("cb_onnx", {"features": features}).outputs
    np.testing.assert_allclose(outputs["probabilities"], fitted["cb"].predict_proba(features), atol=1e-5)
    assert outputs["label"].ravel().tolist() == fitted["cb"].predict(features).ravel().tolist()


def test_score_stacks_columns_into_fil_input_when_mapped(served, models, tmp_path):
    _, fitted = models
    frame = customers(30, seed=2)[["customer_id", *NUMBERS]].fillna(0)
    frame.columns = ["customer_id", "f0", "f1", "f2"]
    frame.to_parquet(tmp_path / "in.parquet")
    report = score(
        ScoreOptions(
            model="xgb_fil",
            input=tmp_path / "in.parquet",
            output=tmp_path / "o.parquet",
            endpoint=served.grpc_url,
            maps=["f0,f1,f2=input__0"],
            id_column="customer_id",
        )
    )
    assert report.rows_scored == 30
    got = np.stack(pd.read_parquet(tmp_path / "o.parquet")["output__0"].to_numpy())
    np.testing.assert_allclose(
        got, fitted["xgb"].predict_proba(frame[["f0", "f1", "f2"]].to_numpy(np.float32)), atol=1e-5
    )
