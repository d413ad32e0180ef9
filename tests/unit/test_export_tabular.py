"""DataFrame models (one input per column) and boosted trees: export, parity, FIL layout, refusals."""

from __future__ import annotations

import hashlib

import joblib
import numpy as np
import onnxruntime as ort
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
from tritonkit.clients.metadata import ModelMeta
from tritonkit.errors import ExportError, UsageError
from tritonkit.export.options import ExportOptions
from tritonkit.export.sklearn import export_sklearn
from tritonkit.export.trees import export_trees
from tritonkit.model_config import ModelConfig


@pytest.fixture(scope="module")
def data():
    return customers(600, seed=3)


@pytest.fixture(scope="module")
def files(tmp_path_factory, data):
    """A scikit-learn Pipeline on a DataFrame, an XGBoost Pipeline, native model files, and a sample."""
    folder = tmp_path_factory.mktemp("models")
    X, y = data[FEATURES], data["churned"]
    joblib.dump(pipeline(LogisticRegression(max_iter=500)).fit(X, y), folder / "logistic.joblib")
    joblib.dump(pipeline(xgboost.XGBClassifier(n_estimators=8, max_depth=3)).fit(X, y), folder / "xgb_pipe.joblib")
    numbers = data[["tenure_months", "monthly_charges", "support_calls"]].to_numpy(np.float32)
    xgboost.XGBClassifier(n_estimators=8, max_depth=3).fit(numbers, y).save_model(folder / "xgb.json")
    lightgbm.LGBMRegressor(n_estimators=8, verbose=-1).fit(numbers, data["tenure_months"]).booster_.save_model(
        folder / "lgb.txt"
    )
    catboost.CatBoostClassifier(iterations=8, verbose=0, allow_writing_files=False).fit(numbers, y).save_model(
        str(folder / "cb.cbm")
    )
    sample = data.head(80).copy()
    sample.loc[0, "contract"] = "unheard-of"
    sample.to_parquet(folder / "sample.parquet")
    return folder


def _snapshot(folder):
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_export_sklearn_gives_one_input_per_column_when_pipeline_fitted_on_dataframe(tmp_path, files, data):
    result = export_sklearn(files / "logistic.joblib", ExportOptions(tmp_path, "m", sample=files / "sample.parquet"))
    config = ModelConfig.read(tmp_path / "m")
    assert [(t.name, t.dtype, t.dims) for t in config.inputs] == [
        ("tenure_months", "FP32", (1,)),
        ("monthly_charges", "FP32", (1,)),
        ("support_calls", "INT64", (1,)),
        ("contract", "BYTES", (1,)),
        ("plan", "BYTES", (1,)),
        ("region", "BYTES", (1,)),
    ]
    assert set(config.parameters["missing_inputs"].split(",")) >= {"monthly_charges", "plan"}
    assert "unseen" in result.checked and all(r.ok for r in result.parity)
    rows = data.head(5).copy()
    rows.loc[0, "plan"], rows.loc[1, "contract"], rows.loc[2, "monthly_charges"] = np.nan, "never-seen", np.nan
    feeds = {
        "tenure_months": rows[["tenure_months"]].to_numpy(np.float32),
        "monthly_charges": rows[["monthly_charges"]].to_numpy(np.float32),
        "support_calls": rows[["support_calls"]].to_numpy(np.int64),
        **{
            c: np.array([[v if isinstance(v, str) else ""] for v in rows[c]], dtype=object)
            for c in ("contract", "plan", "region")
        },
    }
    label, probabilities = ort.InferenceSession(str(result.path)).run(None, feeds)
    expected = joblib.load(files / "logistic.joblib").predict_proba(rows[FEATURES])
    np.testing.assert_allclose(probabilities, expected, atol=1e-5)
    assert probabilities.min() >= 0 and probabilities.max() <= 1


def test_export_sklearn_keeps_one_features_input_when_inputs_is_features(tmp_path, data):
    numbers = data[["tenure_months", "support_calls"]]
    path = tmp_path / "m.joblib"
    joblib.dump(LogisticRegression().fit(numbers, data["churned"]), path)
    config = export_sklearn(path, ExportOptions(tmp_path / "repo", "m"), inputs="features").config
    assert [(t.name, t.dims) for t in config.inputs] == [("features", (2,))]
    assert ModelMeta.from_responses(
        {"name": "m", "inputs": [], "outputs": []}, {"parameters": {"feature_names": {"string_value": "a,b"}}}
    ).feature_names == ("a", "b")


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda f: f.drop(columns=["plan"]), "--sample lacks column(s) plan"),
        (lambda f: f.assign(tenure_months="long"), "column `tenure_months` holds text ('long')"),
        (lambda f: f.assign(contract=3), "column `contract` holds numbers"),
    ],
)
def test_export_sklearn_refuses_sample_and_writes_nothing_when_columns_or_types_are_wrong(
    tmp_path, files, data, change, message
):
    change(data.head(20)).to_parquet(tmp_path / "bad.parquet")
    (tmp_path / "repo").mkdir()
    with pytest.raises(UsageError, match=message.replace("(", r"\(").replace(")", r"\)")):
        export_sklearn(
            files / "logistic.joblib", ExportOptions(tmp_path / "repo", "m", sample=tmp_path / "bad.parquet")
        )
    assert list((tmp_path / "repo").iterdir()) == []


def test_export_trees_matches_xgboost_when_pipeline_ends_in_xgboost(tmp_path, files):
    result = export_trees(
        "xgboost", files / "xgb_pipe.joblib", ExportOptions(tmp_path, "x", sample=files / "sample.parquet")
    )
    labels, probabilities = result.parity
    assert labels.mismatches == 0 and probabilities.max_abs_error < 1e-5
    assert "contract" in {t.name for t in result.config.inputs}


@pytest.mark.parametrize(
    "library, file, outputs",
    [
        ("xgboost", "xgb.json", [("label", "INT64", (1,)), ("probabilities", "FP32", (2,))]),
        ("lightgbm", "lgb.txt", [("prediction", "FP32", (1,))]),
        ("catboost", "cb.cbm", [("label", "INT64", (1,)), ("probabilities", "FP32", (2,))]),
    ],
)
def test_export_trees_matches_library_when_native_file(tmp_path, files, library, file, outputs):
    result = export_trees(library, files / file, ExportOptions(tmp_path, "t"))
    assert [(t.name, t.dtype, t.dims) for t in result.config.outputs] == outputs
    assert [(t.name, t.dims) for t in result.config.inputs] == [("features", (3,))]
    assert all(r.ok for r in result.parity)


@pytest.mark.parametrize(
    "library, file, model_file", [("xgboost", "xgb.json", "xgboost.json"), ("lightgbm", "lgb.txt", "model.txt")]
)
def test_export_fil_writes_fil_backend_layout_when_format_is_fil(tmp_path, files, library, file, model_file):
    result = export_trees(library, files / file, ExportOptions(tmp_path, "f", format="fil"))
    config = ModelConfig.read(tmp_path / "f")
    assert config.backend == "fil" and (tmp_path / "f" / "1" / model_file).is_file()
    assert [(t.name, t.dtype) for t in config.inputs] == [("input__0", "FP32")]
    assert [g.kind for g in config.instance_groups] == ["KIND_AUTO"]
    classifier = library == "xgboost"
    assert config.parameters["output_class"] == str(classifier).lower()
    assert config.parameters["model_type"] == ("xgboost_json" if classifier else "lightgbm")
    assert config.outputs[0].dims == ((2,) if classifier else (1,))
    assert result.parity[0].max_abs_error < 1e-5


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda f, o: export_trees("catboost", f / "cb.cbm", o("fil")), "FIL backend cannot read catboost"),
        (lambda f, o: export_sklearn(f / "logistic.joblib", o("fil")), "use `tritonkit export xgboost`"),
        (lambda f, o: export_trees("lightgbm", f / "xgb_pipe.joblib", o("onnx")), "not a lightgbm model"),
        (lambda f, o: export_trees("xgboost", f / "lgb.txt", o("onnx")), "is not a xgboost model file"),
    ],
)
def test_export_trees_refuses_with_reason_when_model_and_format_do_not_fit(tmp_path, files, call, message):
    with pytest.raises(UsageError, match=message):
        call(files, lambda fmt: ExportOptions(tmp_path, "m", format=fmt))
    assert not (tmp_path / "m").exists()


def test_export_trees_keeps_repository_when_parity_fails(tmp_path, files, monkeypatch):
    export_trees("xgboost", files / "xgb.json", ExportOptions(tmp_path, "x"))
    before = _snapshot(tmp_path)
    from tritonkit.export import tabular

    monkeypatch.setattr(tabular, "ATOL", -1.0)
    monkeypatch.setattr(tabular, "RTOL", -1.0)
    with pytest.raises(ExportError, match="does not match its source"):
        export_trees("xgboost", files / "xgb.json", ExportOptions(tmp_path, "x"))
    assert _snapshot(tmp_path) == before


def test_export_catboost_refuses_categorical_features_when_native_file_has_them(tmp_path, data):
    model = catboost.CatBoostClassifier(iterations=3, verbose=0, allow_writing_files=False)
    model.fit(data[["tenure_months", "contract"]], data["churned"], cat_features=["contract"])
    model.save_model(str(tmp_path / "cat.cbm"))
    with pytest.raises(UsageError, match="takes no categorical features"):
        export_trees("catboost", tmp_path / "cat.cbm", ExportOptions(tmp_path / "repo", "c"))


def test_plan_maps_columns_by_feature_names_when_vector_input_has_none_of_its_own():
    from tritonkit.clients import mapping
    from tritonkit.clients.metadata import TensorMeta

    meta = ModelMeta("f", ("1",), "", (TensorMeta("input__0", "FP32", (-1, 2)),), (), 8, feature_names=("a", "b"))
    [spec] = mapping.plan(meta, ["id", "b", "a"], {})
    assert spec.columns == ("a", "b")
