"""`--format fil`: an XGBoost or LightGBM model in the layout of Triton's FIL backend.

NVIDIA's FIL backend (Forest Inference Library; GPU, or CPU) reads `<version>/xgboost.json`
(model_type `xgboost_json`) or `<version>/model.txt` (`lightgbm`), one FP32 input `input__0`
[features] and one FP32 output `output__0`: per-class probabilities for classifiers
(`predict_proba`; binary models as [p0, p1]), the value for regressors. The instance group is
KIND_AUTO: a GPU where there is one, else the CPU. The embedded server serves the same folder
through its Python-based `fil` backend (server/backends/fil/model.py), the library's own predict on
CPU. `feature_names` names the column behind each value of `input__0`, for clients; `nthread` is
--intra-op-threads. A Pipeline with preprocessing before the trees becomes an ensemble
(`fil_pipeline.py`): its preprocessing as ONNX, the trees in this layout.

Parity: the written file is loaded back with the library, as the serving backend loads it, and its
predictions are compared with the estimator's on random rows around its split thresholds (and the
--sample rows).
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import numpy as np

from tritonkit.errors import UsageError
from tritonkit.export.options import ExportOptions, ExportResult, versioned
from tritonkit.export.parity import check, compare
from tritonkit.export.tabular import ATOL, FEATURES_PARAMETER, RTOL
from tritonkit.model_config import ModelConfig, TensorSpec

logger = logging.getLogger(__name__)

FIL_MAX_BATCH_SIZE = 32_768  # FIL's own examples; rows of floats are small
FILE_NAMES = {"xgboost": ("xgboost_json", "xgboost.json"), "lightgbm": ("lightgbm", "model.txt")}


def check_library(library: str) -> None:
    if library not in FILE_NAMES:
        raise UsageError(
            f"--format fil takes XGBoost and LightGBM models; Triton's FIL backend cannot read {library} "
            "models: export it as ONNX (the default --format)"
        )


def save_native(estimator, library: str, folder: Path) -> Path:
    """Write the booster in the library's own format under FIL's default file name."""
    _, filename = FILE_NAMES[library]
    path = folder / filename
    if library == "xgboost":
        estimator.get_booster().save_model(str(path))
    else:
        estimator.booster_.save_model(str(path))
    return path


def booster_predictor(library: str, path: Path):
    """rows -> the saved file's raw prediction, loaded once as the serving backend loads it."""
    if library == "xgboost":
        import xgboost

        booster = xgboost.Booster(model_file=str(path))
        return lambda rows: np.asarray(booster.inplace_predict(rows))
    import lightgbm

    booster = lightgbm.Booster(model_file=str(path))
    return lambda rows: np.asarray(booster.predict(rows))


def reload_predict(library: str, path: Path, rows: np.ndarray) -> np.ndarray:
    """The saved file's raw prediction on `rows`, loaded as the serving backend loads it."""
    return booster_predictor(library, path)(rows)


def fil_output(raw: np.ndarray, classifier: bool) -> np.ndarray:
    """A raw prediction as FIL's output__0 with predict_proba: [N, classes] (binary: [p0, p1]) or [N, 1]."""
    raw = np.asarray(raw, dtype=np.float32)
    if not classifier:
        return raw.reshape(len(raw), -1)
    return np.clip(np.stack([1 - raw, raw], axis=1) if raw.ndim == 1 else raw, 0, 1)


def _parameters(library: str, classifier: bool, names, threads: int) -> dict[str, str]:
    model_type, _ = FILE_NAMES[library]
    parameters = {
        "model_type": model_type,
        "output_class": str(classifier).lower(),
        "storage_type": "AUTO",
        "nthread": str(threads),  # CPU threads per instance: the library's own predict here, FIL on CPU there
    }
    if classifier:
        parameters.update(predict_proba="true", threshold="0.5")
    if model_type == "xgboost_json":
        parameters["xgboost_allow_unknown_field"] = "true"  # newer XGBoost writes fields older FIL builds lack
    if names is not None and not any("," in str(name) for name in names):
        parameters[FEATURES_PARAMETER] = ",".join(map(str, names))
    return parameters


def trees_config(options: ExportOptions, library: str, classifier: bool, n: int, width: int, names) -> ModelConfig:
    """config.pbtxt of a FIL model: input__0 FP32 [n], output__0 FP32 [width], `nthread` = --intra-op-threads."""
    config = options.model_config(
        [TensorSpec("input__0", "FP32", (n,))],
        [TensorSpec("output__0", "FP32", (width,))],
        default_max_batch_size=FIL_MAX_BATCH_SIZE,
    )
    parameters = _parameters(library, classifier, names, options.intra_op_threads or 1)
    return dataclasses.replace(config, backend="fil", parameters=parameters)


def export_fil(estimator, library: str, options: ExportOptions, inputs: str = "auto") -> ExportResult:
    """Write the model file and config.pbtxt for Triton's FIL backend; parity of the written file vs the estimator.

    A Pipeline with steps before the trees becomes an ensemble (`fil_pipeline.export_fil_pipeline`).
    """
    from tritonkit.export.sklearn import feature_count, kind_of, matrix_frame, parity_rows

    check_library(library)
    if getattr(estimator, "steps", None) and len(estimator.steps) > 1:
        from tritonkit.export.fil_pipeline import export_fil_pipeline

        return export_fil_pipeline(estimator, library, options, inputs)
    estimator = estimator.steps[-1][1] if getattr(estimator, "steps", None) else estimator
    if options.input_names or options.output_names:
        raise UsageError("--input-name/--output-name: FIL's tensors are always `input__0` and `output__0`")
    classifier = kind_of(estimator)
    n = feature_count(estimator, None)
    rows, checked = parity_rows(estimator, n, options.sample)
    source = matrix_frame(estimator, rows)
    expected = estimator.predict_proba(source) if classifier else np.asarray(estimator.predict(source)).reshape(-1, 1)
    width = expected.shape[1]
    names = getattr(estimator, "feature_names_in_", None)
    with versioned(options) as (number, scratch):
        path = save_native(estimator, library, scratch)
        got = fil_output(reload_predict(library, path, rows), classifier)
        results = check([compare("output__0", expected, got, *options.tolerance(expected, ATOL, RTOL))])
        config = trees_config(options, library, classifier, n, width, names)
        config.write(options.model_dir)
    logger.info("exported %s version %d for FIL: %s", options.name, number, "; ".join(map(str, results)))
    return ExportResult(options.model_dir / str(number) / path.name, number, config, results, checked)
