"""`--format fil` on a Pipeline ending in trees: the ensemble NAME = NAME_preprocess -> NAME_trees (->
NAME_postprocess), its configs, in-process parity of the written files, and nothing half-written on failure."""

from __future__ import annotations

import hashlib

import joblib
import numpy as np
import onnxruntime as ort
import pytest

pytest.importorskip("xgboost")
pytest.importorskip("lightgbm")
pytest.importorskip("onnxmltools")

import lightgbm
import xgboost
from sklearn.compose import ColumnTransformer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder

from tritonkit import pbtxt
from tritonkit.benchmarks.trees import FEATURES, customers, pipeline
from tritonkit.errors import ExportError, UsageError
from tritonkit.export.options import ExportOptions
from tritonkit.export.trees import export_trees
from tritonkit.model_config import ModelConfig

TEXT = ("contract", "plan", "region")


@pytest.fixture(scope="module")
def data():
    return customers(600, seed=3)


@pytest.fixture(scope="module")
def files(tmp_path_factory, data):
    """Pipelines ending in XGBoost (dense and sparse one-hot) and LightGBM (text labels, a regressor); a sample."""
    folder = tmp_path_factory.mktemp("pipelines")
    X, y = data[FEATURES], data["churned"]
    joblib.dump(pipeline(xgboost.XGBClassifier(n_estimators=8, max_depth=3)).fit(X, y), folder / "xgb.joblib")
    words = np.where(y == 1, "leave", "stay")
    joblib.dump(pipeline(lightgbm.LGBMClassifier(n_estimators=8, verbose=-1)).fit(X, words), folder / "lgb.joblib")
    regressor = pipeline(lightgbm.LGBMRegressor(n_estimators=8, verbose=-1))
    joblib.dump(regressor.fit(X, data["tenure_months"].fillna(0)), folder / "lgb_reg.joblib")
    sparse = ColumnTransformer([("text", OneHotEncoder(handle_unknown="ignore"), ["contract", "region"])])
    sparse_pipe = Pipeline([("prepare", sparse), ("model", xgboost.XGBClassifier(n_estimators=8, max_depth=3))])
    joblib.dump(sparse_pipe.fit(X[["contract", "region"]], y), folder / "xgb_sparse.joblib")
    sample = data.head(80).copy()
    sample.loc[0, "contract"] = "unheard-of"
    sample.to_parquet(folder / "sample.parquet")
    return folder


def _rows(data):
    rows = data.head(12).copy()
    rows.loc[0, "plan"], rows.loc[1, "contract"], rows.loc[2, "monthly_charges"] = np.nan, "never-seen", np.nan
    return rows


def _feeds(rows, inputs):
    """One [N, 1] array per input of the preprocessing model, typed as its config says; missing text as ''."""
    feeds = {}
    for spec in inputs:
        if spec.dtype == "BYTES":
            feeds[spec.name] = np.array([[v if isinstance(v, str) else ""] for v in rows[spec.name]], dtype=object)
        else:
            feeds[spec.name] = rows[[spec.name]].to_numpy(np.int64 if spec.dtype == "INT64" else np.float32)
    return feeds


def _served_in_process(repository, name, rows):
    """The written files run as the ensemble runs them: the preprocessing ONNX, then the booster file."""
    inputs = ModelConfig.read(repository / f"{name}_preprocess").inputs
    [preprocessed] = ort.InferenceSession(str(repository / f"{name}_preprocess" / "1" / "model.onnx")).run(
        None, _feeds(rows, inputs)
    )
    folder = repository / f"{name}_trees" / "1"
    if (folder / "xgboost.json").is_file():
        raw = xgboost.Booster(model_file=str(folder / "xgboost.json")).inplace_predict(preprocessed)
    else:
        raw = lightgbm.Booster(model_file=str(folder / "model.txt")).predict(preprocessed)
    return preprocessed, np.asarray(raw)


def _snapshot(folder):
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_export_fil_writes_ensemble_of_preprocess_trees_and_label_when_pipeline_ends_in_xgboost(tmp_path, files, data):
    options = ExportOptions(tmp_path, "churn", format="fil", intra_op_threads=2, sample=files / "sample.parquet")
    result = export_trees("xgboost", files / "xgb.joblib", options)
    assert result.parts == ("churn_preprocess", "churn_trees", "churn_postprocess")
    ensemble = pbtxt.parse(pbtxt.config_path(tmp_path / "churn").read_text())
    assert ensemble.platform == "ensemble"
    steps = [(s.model_name, dict(s.input_map), dict(s.output_map)) for s in ensemble.ensemble_scheduling.step]
    assert [s[0] for s in steps] == ["churn_preprocess", "churn_trees", "churn_postprocess"]
    assert steps[1][1:] == ({"input__0": "preprocessed"}, {"output__0": "probabilities"})
    assert steps[2][1:] == ({"probabilities": "probabilities"}, {"label": "label"})
    assert set(ensemble.parameters["missing_inputs"].string_value.split(",")) >= {"monthly_charges", "plan"}
    trees, preprocess = ModelConfig.read(tmp_path / "churn_trees"), ModelConfig.read(tmp_path / "churn_preprocess")
    assert trees.backend == "fil" and trees.parameters["nthread"] == "2"
    assert [g.kind for g in preprocess.instance_groups] == ["KIND_CPU"] and preprocess.backend == "onnxruntime"
    assert preprocess.max_batch_size == trees.max_batch_size == ensemble.max_batch_size
    assert [(t.name, t.dtype) for t in ModelConfig.read(tmp_path / "churn", strict=False).inputs][3:] == [
        (c, "BYTES") for c in TEXT
    ]
    rows = _rows(data)
    _, raw = _served_in_process(tmp_path, "churn", rows)
    np.testing.assert_allclose(raw, joblib.load(files / "xgb.joblib").predict_proba(rows[FEATURES])[:, 1], atol=1e-5)


def test_export_fil_serves_text_labels_and_regressors_when_pipeline_ends_in_lightgbm(tmp_path, files, data):
    export_trees("lightgbm", files / "lgb.joblib", ExportOptions(tmp_path, "lgb", format="fil"))
    rows, model = _rows(data), joblib.load(files / "lgb.joblib")
    _, raw = _served_in_process(tmp_path, "lgb", rows)
    probabilities = np.stack([1 - raw, raw], axis=1).astype(np.float32)
    label = ort.InferenceSession(str(tmp_path / "lgb_postprocess" / "1" / "model.onnx")).run(
        None, {"probabilities": probabilities}
    )[0]
    assert [v.decode() if isinstance(v, bytes) else v for v in label.ravel()] == model.predict(rows[FEATURES]).tolist()
    assert [t.dtype for t in ModelConfig.read(tmp_path / "lgb", strict=False).outputs] == ["BYTES", "FP32"]
    result = export_trees("lightgbm", files / "lgb_reg.joblib", ExportOptions(tmp_path, "reg", format="fil"))
    assert result.parts == ("reg_preprocess", "reg_trees") and not (tmp_path / "reg_postprocess").exists()
    assert [(t.name, t.dims) for t in ModelConfig.read(tmp_path / "reg", strict=False).outputs] == [
        ("prediction", (1,))
    ]
    _, raw = _served_in_process(tmp_path, "reg", rows)
    np.testing.assert_allclose(raw, joblib.load(files / "lgb_reg.joblib").predict(rows[FEATURES]), rtol=1e-5)


def test_export_fil_turns_zeros_into_missing_values_when_xgboost_was_fitted_on_a_sparse_matrix(tmp_path, files, data):
    result = export_trees("xgboost", files / "xgb_sparse.joblib", ExportOptions(tmp_path, "s", format="fil"))
    assert all(r.ok for r in result.parity)
    rows = _rows(data)
    preprocessed, raw = _served_in_process(tmp_path, "s", rows)
    assert np.isnan(preprocessed).any() and not (preprocessed == 0).any()
    expected = joblib.load(files / "xgb_sparse.joblib").predict_proba(rows[["contract", "region"]])[:, 1]
    np.testing.assert_allclose(raw, expected, atol=1e-5)


def test_export_fil_takes_one_features_matrix_when_pipeline_was_fitted_on_an_array(tmp_path, data):
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    numbers = data[["tenure_months", "support_calls"]].to_numpy(np.float32)
    model = make_pipeline(StandardScaler(), xgboost.XGBRegressor(n_estimators=8, max_depth=3))
    joblib.dump(model.fit(numbers, data["monthly_charges"].fillna(0)), tmp_path / "m.joblib")
    result = export_trees("xgboost", tmp_path / "m.joblib", ExportOptions(tmp_path / "repo", "m", format="fil"))
    assert [(t.name, t.dims) for t in result.config.inputs] == [("features", (2,))]
    assert result.parts == ("m_preprocess", "m_trees") and all(r.ok for r in result.parity)
    [scaled] = ort.InferenceSession(str(tmp_path / "repo" / "m_preprocess" / "1" / "model.onnx")).run(
        None, {"features": numbers[:20]}
    )
    raw = xgboost.Booster(model_file=str(tmp_path / "repo" / "m_trees" / "1" / "xgboost.json")).inplace_predict(scaled)
    np.testing.assert_allclose(raw, model.predict(numbers[:20]), rtol=1e-5)


def test_export_fil_leaves_repository_as_it_was_when_ensemble_parity_fails(tmp_path, files, monkeypatch):
    export_trees("xgboost", files / "xgb.joblib", ExportOptions(tmp_path / "repo", "churn", format="fil"))
    before = _snapshot(tmp_path / "repo")
    from tritonkit.export import tabular

    monkeypatch.setattr(tabular, "ATOL", -1.0)
    monkeypatch.setattr(tabular, "RTOL", -1.0)
    with pytest.raises(ExportError, match="does not match its source"):
        export_trees("xgboost", files / "xgb.joblib", ExportOptions(tmp_path / "repo", "churn", format="fil"))
    assert _snapshot(tmp_path / "repo") == before
    with pytest.raises(ExportError, match="does not match its source"):
        export_trees("xgboost", files / "xgb.joblib", ExportOptions(tmp_path / "repo", "other", format="fil"))
    assert sorted(p.name for p in (tmp_path / "repo").iterdir()) == [
        "churn",
        "churn_postprocess",
        "churn_preprocess",
        "churn_trees",
    ]


def test_export_fil_refuses_input_names_when_ensemble_takes_one_input_per_column(tmp_path, files):
    with pytest.raises(UsageError, match="names its inputs after the columns"):
        export_trees(
            "xgboost", files / "xgb.joblib", ExportOptions(tmp_path, "m", format="fil", input_names=("features",))
        )
    assert not list(tmp_path.iterdir())
