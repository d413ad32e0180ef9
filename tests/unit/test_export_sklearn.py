"""`tritonkit export sklearn` and the options every export shares: config, versions, parity, errors."""

from __future__ import annotations

import hashlib

import joblib
import numpy as np
import onnxruntime as ort
import pytest
from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor
from sklearn.kernel_ridge import KernelRidge
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler
from typer.testing import CliRunner

from tritonkit.cli import app
from tritonkit.errors import ExportError, UsageError
from tritonkit.export import sklearn as sklearn_export
from tritonkit.export.churn import FEATURES, synthetic_customers
from tritonkit.export.options import ExportOptions, rename
from tritonkit.export.parity import check
from tritonkit.export.sklearn import LabelAgreement, export_sklearn
from tritonkit.model_config import ModelConfig


@pytest.fixture(scope="module")
def customers():
    return synthetic_customers(600, seed=2)


@pytest.fixture(scope="module")
def churn_file(tmp_path_factory, customers):
    """The seeds' pipeline shape (StandardScaler + RandomForest), fitted on a DataFrame, saved with joblib."""
    pipeline = Pipeline([("scale", StandardScaler()), ("forest", RandomForestClassifier(20, random_state=0))])
    path = tmp_path_factory.mktemp("models") / "churn.joblib"
    joblib.dump(pipeline.fit(customers[FEATURES], customers["churned"]), path)
    return path


def _save(tmp_path, estimator, name="model.joblib"):
    joblib.dump(estimator, tmp_path / name)
    return tmp_path / name


def _snapshot(folder):
    """Every file under `folder` with its content hash: equal snapshots, untouched repository."""
    return (
        {
            str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*"))
            if p.is_file()
        }
        if folder.exists()
        else {}
    )


def test_export_sklearn_writes_label_and_probabilities_when_estimator_is_classifier(tmp_path, churn_file, customers):
    result = export_sklearn(churn_file, ExportOptions(tmp_path, "churn_rf"))
    assert result.version == 1 and result.path == tmp_path / "churn_rf" / "1" / "model.onnx"
    config = ModelConfig.read(tmp_path / "churn_rf")
    assert config == result.config
    assert [(t.name, t.dtype, t.dims) for t in config.inputs] == [("features", "FP32", (5,))]
    assert [(t.name, t.dtype, t.dims) for t in config.outputs] == [
        ("label", "INT64", (1,)),
        ("probabilities", "FP32", (2,)),
    ]
    assert config.max_batch_size == 4096 and config.dynamic_batching.max_queue_delay_us == 0
    assert [(g.count, g.kind) for g in config.instance_groups] == [(2, "KIND_CPU")]
    assert config.parameters["intra_op_thread_count"] == "1"
    assert config.parameters["feature_names"] == ",".join(FEATURES)
    rows = customers[FEATURES].to_numpy(np.float32)
    label, probabilities = ort.InferenceSession(str(result.path)).run(None, {"features": rows})
    estimator = joblib.load(churn_file)
    assert label.shape == (600, 1) and probabilities.shape == (600, 2)
    np.testing.assert_allclose(probabilities, estimator.predict_proba(customers[FEATURES]), rtol=0, atol=1e-5)


def test_export_sklearn_matches_training_rows_when_pipeline_scales_features(tmp_path, churn_file, customers):
    customers.to_csv(tmp_path / "train.csv", index=False)  # id and target columns too: picked by feature name
    result = export_sklearn(churn_file, ExportOptions(tmp_path / "repo", "churn_rf", sample=tmp_path / "train.csv"))
    labels, probabilities = result.parity
    assert result.checked == "2000 random rows + 600 rows of train.csv"
    assert labels.rows == 2600 and labels.mismatches == 0
    # Trees split exactly between training rows: skl2onnx's (x - mean) * (1 / std) flips some; ours does not.
    assert probabilities.max_abs_error < 1e-5


def test_export_sklearn_adds_next_version_and_keeps_existing_when_exported_again(tmp_path, churn_file):
    export_sklearn(churn_file, ExportOptions(tmp_path, "churn_rf"))
    first = _snapshot(tmp_path / "churn_rf" / "1")
    result = export_sklearn(churn_file, ExportOptions(tmp_path, "churn_rf", max_queue_delay_us=500))
    assert result.version == 2 and sorted(p.name for p in (tmp_path / "churn_rf").iterdir()) == [
        "1",
        "2",
        "config.pbtxt",
    ]
    assert _snapshot(tmp_path / "churn_rf" / "1") == first
    assert ModelConfig.read(tmp_path / "churn_rf").dynamic_batching.max_queue_delay_us == 500


def test_export_sklearn_writes_pinned_version_when_version_given(tmp_path, churn_file):
    assert export_sklearn(churn_file, ExportOptions(tmp_path, "churn_rf", version=7)).version == 7
    assert export_sklearn(churn_file, ExportOptions(tmp_path, "churn_rf")).version == 8


def test_export_sklearn_refuses_overwrite_when_pinned_version_exists(tmp_path, churn_file):
    export_sklearn(churn_file, ExportOptions(tmp_path, "churn_rf", version=3))
    before = _snapshot(tmp_path)
    with pytest.raises(ExportError, match="version 3 of `churn_rf` already exists"):
        export_sklearn(churn_file, ExportOptions(tmp_path, "churn_rf", version=3, max_batch_size=64))
    assert _snapshot(tmp_path) == before
    export_sklearn(churn_file, ExportOptions(tmp_path, "churn_rf", version=3, replace=True, max_batch_size=64))
    assert ModelConfig.read(tmp_path / "churn_rf").max_batch_size == 64


def test_export_sklearn_raises_naming_output_and_errors_when_onnx_differs(tmp_path, churn_file, customers, monkeypatch):
    other = make_pipeline(StandardScaler(), RandomForestClassifier(20, random_state=1))
    other.fit(customers[FEATURES], customers["churned"])
    real_convert = sklearn_export.convert
    monkeypatch.setattr(sklearn_export, "convert", lambda _estimator, *args: real_convert(other, *args))
    with pytest.raises(ExportError, match=r"probabilities: max abs error 0\.\d+ \(atol 1e-05\), max rel error"):
        export_sklearn(churn_file, ExportOptions(tmp_path, "churn_rf"))
    assert not (tmp_path / "churn_rf").exists(), "a failed first export leaves no model folder behind"


def test_label_agreement_fails_check_when_labels_differ_outside_ties():
    assert LabelAgreement("label", 100, 0, 3).ok
    with pytest.raises(ExportError, match="label: 2 of 100 labels differ"):
        check([LabelAgreement("label", 100, 2, 0)])


def test_export_sklearn_writes_prediction_when_estimator_is_regressor(tmp_path, customers):
    forest = RandomForestRegressor(10, random_state=0).fit(customers[FEATURES[:4]], customers["num_products"] * 100)
    result = export_sklearn(_save(tmp_path, forest), ExportOptions(tmp_path / "repo", "products"))
    assert [(t.name, t.dtype, t.dims) for t in result.config.outputs] == [("prediction", "FP32", (1,))]
    [parity] = result.parity
    assert parity.output == "prediction" and parity.atol > 1e-5, "atol scales with the output's magnitude"


def test_export_sklearn_serves_labels_as_bytes_when_classes_are_strings(tmp_path, customers):
    names = np.where(customers["churned"] == 1, "churned", "stayed")
    model = make_pipeline(StandardScaler(), LogisticRegression()).fit(customers[FEATURES].to_numpy(), names)
    result = export_sklearn(
        _save(tmp_path, model), ExportOptions(tmp_path / "repo", "named", output_names=("label=outcome",))
    )
    assert [(t.name, t.dtype) for t in result.config.outputs] == [("outcome", "BYTES"), ("probabilities", "FP32")]
    assert result.parity[0].mismatches == 0


def test_export_sklearn_renames_input_and_outputs_when_names_given(tmp_path, churn_file):
    result = export_sklearn(
        churn_file, ExportOptions(tmp_path, "churn_rf", input_names=("x",), output_names=("churned", "scores"))
    )
    assert [t.name for t in result.config.inputs] == ["x"]
    session = ort.InferenceSession(str(result.path))
    assert [o.name for o in session.get_outputs()] == ["churned", "scores"]


def test_export_sklearn_raises_usage_error_when_file_missing(tmp_path):
    with pytest.raises(UsageError, match="nope.joblib does not exist"):
        export_sklearn(tmp_path / "nope.joblib", ExportOptions(tmp_path, "m"))


def test_export_sklearn_raises_usage_error_when_estimator_not_fitted(tmp_path):
    with pytest.raises(UsageError, match=r"unfitted Pipeline\(StandardScaler -> RandomForestClassifier\)"):
        export_sklearn(
            _save(tmp_path, make_pipeline(StandardScaler(), RandomForestClassifier())), ExportOptions(tmp_path, "m")
        )


def test_export_sklearn_raises_usage_error_when_file_holds_no_estimator(tmp_path):
    with pytest.raises(UsageError, match="holds a dict, not a scikit-learn estimator"):
        export_sklearn(_save(tmp_path, {"weights": [1, 2]}), ExportOptions(tmp_path, "m"))


def test_export_sklearn_raises_export_error_and_keeps_repository_when_skl2onnx_cannot_convert(
    tmp_path, customers, churn_file
):
    export_sklearn(churn_file, ExportOptions(tmp_path / "repo", "churn_rf"))
    before = _snapshot(tmp_path / "repo")
    model = make_pipeline(StandardScaler(), KernelRidge()).fit(customers[FEATURES], customers["tenure_months"])
    with pytest.raises(ExportError, match=r"skl2onnx cannot convert Pipeline\(StandardScaler -> KernelRidge\)"):
        export_sklearn(_save(tmp_path, model), ExportOptions(tmp_path / "repo", "churn_rf"))
    assert _snapshot(tmp_path / "repo") == before


def test_export_sklearn_needs_n_features_when_estimator_does_not_record_it(tmp_path, customers):
    model = LinearRegression().fit(customers[FEATURES].to_numpy(), customers["tenure_months"])
    del model.n_features_in_
    path = _save(tmp_path, model)
    with pytest.raises(UsageError, match="pass --n-features"):
        export_sklearn(path, ExportOptions(tmp_path / "repo", "lin"))
    assert export_sklearn(path, ExportOptions(tmp_path / "repo", "lin"), n_features=5).config.inputs[0].dims == (5,)
    with pytest.raises(UsageError, match="--n-features is 4, but Pipeline"):
        sklearn_export.feature_count(make_pipeline(StandardScaler()).fit(np.ones((3, 5))), 4)


def test_export_sklearn_refuses_fp16_graph_when_format_is_onnx(tmp_path, churn_file):
    with pytest.raises(UsageError, match="ONNX-ML operators"):
        export_sklearn(churn_file, ExportOptions(tmp_path, "churn_rf", fp16=True))


def test_export_sklearn_writes_tensorrt_accelerator_on_gpu_when_format_is_tensorrt(tmp_path, churn_file):
    config = export_sklearn(
        churn_file, ExportOptions(tmp_path, "churn_rf", format="tensorrt", fp16=True, preferred_batch_sizes=(256,))
    ).config
    assert [(g.count, g.kind) for g in config.instance_groups] == [(1, "KIND_GPU")]
    accelerator = config.gpu_execution_accelerator
    assert accelerator["name"] == "tensorrt" and accelerator["parameters"]["precision_mode"] == "FP16"
    assert accelerator["parameters"]["trt_profile_min_shapes"] == "features:1x5"
    assert accelerator["parameters"]["trt_profile_opt_shapes"] == "features:256x5"
    assert accelerator["parameters"]["trt_profile_max_shapes"] == "features:4096x5"
    assert ModelConfig.read(tmp_path / "churn_rf") == config


@pytest.mark.parametrize(
    "options, message",
    [
        (dict(format="plan"), "--format is 'plan'; expected one of onnx, tensorrt"),
        (dict(kind="KIND_TPU"), "--kind is 'KIND_TPU'"),
        (dict(format="tensorrt", kind="KIND_CPU"), "NVIDIA GPUs only"),
        (dict(max_batch_size=0), "--max-batch-size is 0; expected 1 or more"),
        (dict(version=0), "--version is 0"),
        (dict(atol=-1.0), "--atol is -1.0"),
        (dict(preferred_batch_sizes=(8,), dynamic_batching=False), "needs dynamic batching"),
        (dict(name="a/b"), "--name is 'a/b'"),
        (dict(sample="missing.csv"), "--sample missing.csv does not exist"),
    ],
)
def test_export_options_raise_usage_error_when_invalid(tmp_path, options, message):
    with pytest.raises(UsageError, match=message.replace("(", r"\(").replace(")", r"\)")):
        ExportOptions(tmp_path, **{"name": "m", **options})


def test_export_options_config_has_warmup_cache_and_no_batcher_when_asked(tmp_path, churn_file):
    options = ExportOptions(
        tmp_path,
        "churn_rf",
        dynamic_batching=False,
        warmup_batch_size=16,
        response_cache=True,
        instances=3,
        intra_op_threads=2,
    )
    config = export_sklearn(churn_file, options).config
    assert config.dynamic_batching is None and config.response_cache is True
    assert config.model_warmup[0].batch_size == 16
    assert config.model_warmup[0].inputs == {"features": ("FP32", (5,), "random")}
    assert [(g.count, g.kind) for g in config.instance_groups] == [(3, "KIND_CPU")]
    assert config.parameters["intra_op_thread_count"] == "2"
    with pytest.raises(UsageError, match="--preferred-batch-size \\[8192\\] exceeds max_batch_size 4096"):
        export_sklearn(churn_file, ExportOptions(tmp_path, "churn_rf", preferred_batch_sizes=(8192,)))


@pytest.mark.parametrize(
    "overrides, expected",
    [
        ((), ["label", "probabilities"]),
        (("probabilities=scores",), ["label", "scores"]),
        (("churned", "p"), ["churned", "p"]),
    ],
)
def test_rename_gives_names_when_overrides_valid(overrides, expected):
    assert rename(["label", "probabilities"], overrides, "--output-name") == expected


@pytest.mark.parametrize(
    "overrides, message",
    [
        (("proba=p",), "renames proba, which the model does not have"),
        (("only_one",), "gives 1 names for 2 tensors"),
        (("label=a", "b"), "either OLD=NEW pairs or plain names"),
        (("a", "a"), "names must be unique"),
        (("a b", "c"), "names must be unique"),
    ],
)
def test_rename_raises_usage_error_when_overrides_invalid(overrides, message):
    with pytest.raises(UsageError, match=message):
        rename(["label", "probabilities"], overrides, "--output-name")


def test_cli_export_sklearn_prints_version_and_parity_when_run(tmp_path, churn_file):
    args = [
        "export",
        "sklearn",
        str(churn_file),
        "--name",
        "churn_rf",
        "-r",
        str(tmp_path),
        "--preferred-batch-size",
        "64",
        "--preferred-batch-size",
        "256",
        "--instances",
        "1",
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert f"exported churn_rf version 1 to {tmp_path}/churn_rf/1/model.onnx" in result.output
    assert "parity vs scikit-learn on 2000 random rows:" in result.output
    assert "label: 0 of 2000 labels differ" in result.output and "probabilities: max abs error" in result.output
    assert ModelConfig.read(tmp_path / "churn_rf").dynamic_batching.preferred_batch_sizes == (64, 256)
    again = CliRunner().invoke(app, [*args, "--version", "1"])
    assert again.exit_code == ExportError.exit_code == 6 and "already exists" in again.stderr
