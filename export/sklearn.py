"""scikit-learn estimators and Pipelines to ONNX (skl2onnx) in a Triton repository, checked against the estimator.

The graph takes one FP32 tensor `features` [N, n_features], or, for a model fitted on a DataFrame that
picks columns by name or takes text, one input per column (`columns.py`); a Pipeline's preprocessing
is inside it, so batch and real-time callers cannot scale features differently. Classifiers return `label` [N, 1]
(INT64 for numeric classes, BYTES for string classes) and `probabilities` [N, n_classes]; regressors
return `prediction` [N, n_targets]; probabilities are clipped to [0, 1] inside the graph.

Parity: the ONNX graph runs in onnxruntime on 2,000 random rows drawn around the scale the model was
fitted on (and on the rows of --sample) and is compared with `predict_proba` / `predict`. The default
atol is 1e-5 (times the output's largest magnitude): float32 tree sums differ from scikit-learn's by
about 4e-7 on the 100-tree churn forest (StandardScaler steps are rewritten to compute bit for bit as
scikit-learn does on FP32 rows: see `exact_standard_scalers`). A label may differ only where the estimator's two highest
probabilities are equal within that atol (a 50/50 vote that float32 rounding tips either way); such
ties are counted and reported, any other differing label fails the export.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from tritonkit.errors import ExportError, UsageError
from tritonkit.export.options import (
    ExportOptions,
    ExportResult,
    read_sample,
    rename,
)
from tritonkit.export.parity import LabelAgreement
from tritonkit.export.tabular import (
    compare_predictions,
    finish_graph,
    fitted_parts,
    output_names,
    refuse_fp16,
    run_onnx,
    write_onnx,
)

logger = logging.getLogger(__name__)

DEFAULT_OPSET = 18
ML_OPSET = 3  # ai.onnx.ml opset that goes with ONNX opset 18
RANDOM_ROWS = 2_000
__all__ = ["LabelAgreement", "export_sklearn", "load_estimator"]


def describe(estimator) -> str:
    """`Pipeline(StandardScaler -> RandomForestClassifier)` or the estimator's class name."""
    steps = getattr(estimator, "steps", None)
    if steps:
        return f"{type(estimator).__name__}({' -> '.join(describe(step) for _, step in steps)})"
    return type(estimator).__name__


def load_estimator(path: Path):
    """The fitted estimator in a joblib file (joblib unpickles: load only files you trust)."""
    import joblib
    from sklearn.base import BaseEstimator
    from sklearn.exceptions import NotFittedError
    from sklearn.utils.validation import check_is_fitted

    path = Path(path)
    if not path.is_file():
        raise UsageError(f"model file {path} does not exist")
    try:
        estimator = joblib.load(path)
    except Exception as e:  # unpickling raises whatever the pickled classes raise
        raise UsageError(f"{path} could not be loaded with joblib: {type(e).__name__}: {e}") from e
    from tritonkit.export.trees import library_of

    if not isinstance(estimator, BaseEstimator) and library_of(estimator) is None:
        raise UsageError(f"{path} holds a {type(estimator).__name__}, not a scikit-learn estimator or Pipeline")
    try:
        if hasattr(estimator, "is_fitted"):  # CatBoost: not a scikit-learn BaseEstimator
            if not estimator.is_fitted():
                raise NotFittedError(describe(estimator))
        else:
            check_is_fitted(estimator)
    except NotFittedError as e:
        raise UsageError(f"{path} holds an unfitted {describe(estimator)}: fit it before saving") from e
    return estimator


def feature_count(estimator, given: int | None) -> int:
    """The number of input features: the estimator's `n_features_in_`, else --n-features."""
    known = getattr(estimator, "n_features_in_", None)
    if not known and getattr(estimator, "feature_names_", None):  # CatBoost loaded from a file says 0
        known = len(estimator.feature_names_)
    if known is None and given is None:
        raise UsageError(f"{describe(estimator)} does not record how many features it was fitted on; pass --n-features")
    if known is not None and given is not None and int(known) != given:
        raise UsageError(f"--n-features is {given}, but {describe(estimator)} was fitted on {known} features")
    return int(known if known is not None else given)


def _first_step(estimator):
    steps = getattr(estimator, "steps", None)
    return _first_step(steps[0][1]) if steps else estimator


def feature_scale(estimator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Centre and spread of the features the estimator was fitted on, from what its first step recorded.

    Scalers record the data's statistics; trees their split thresholds. Otherwise 0 and 1.
    """
    first = _first_step(estimator)
    centre, spread = np.zeros(n), np.ones(n)
    if getattr(first, "data_min_", None) is not None:  # MinMaxScaler
        centre, spread = (first.data_max_ + first.data_min_) / 2, (first.data_max_ - first.data_min_) / 2
    elif getattr(first, "center_", None) is not None:  # RobustScaler
        centre, spread = first.center_, first.scale_ if first.scale_ is not None else spread
    elif hasattr(first, "mean_") and hasattr(first, "scale_"):  # StandardScaler
        centre = first.mean_ if first.mean_ is not None else centre
        spread = first.scale_ if first.scale_ is not None else spread
    else:
        trees = [first] if hasattr(first, "tree_") else list(np.ravel(getattr(first, "estimators_", [])))
        splits = [(t.tree_.feature, t.tree_.threshold) for t in trees if hasattr(t, "tree_")]
        if not splits:
            from tritonkit.export.trees import split_scale

            centre, spread = split_scale(first, n) or (centre, spread)
        if splits:
            features = np.concatenate([f for f, _ in splits])
            thresholds = np.concatenate([th for _, th in splits])
            for i in range(n):
                used = thresholds[features == i]
                if used.size:
                    low, high = used.min(), used.max()
                    centre[i], spread[i] = (low + high) / 2, max((high - low) / 2, abs(low) * 0.1, 1e-3)
    spread = np.where(np.isfinite(spread) & (np.asarray(spread) > 0), spread, 1.0)
    return np.asarray(centre, dtype=np.float64), np.asarray(spread, dtype=np.float64)


def random_rows(estimator, n: int, rows: int = RANDOM_ROWS, seed: int = 0) -> np.ndarray:
    """`rows` FP32 rows drawn around the scale the estimator was fitted on."""
    centre, spread = feature_scale(estimator, n)
    return (centre + spread * np.random.default_rng(seed).standard_normal((rows, n))).astype(np.float32)


def parity_rows(estimator, n: int, sample: Path | None) -> tuple[np.ndarray, str]:
    """The rows a parity check runs on (random rows around the fitted scale, then --sample's) and what they are."""
    rows = random_rows(estimator, n)
    if sample is None:
        return rows, f"{len(rows)} random rows"
    extra = sample_rows(sample, estimator, n)
    return np.concatenate([rows, extra]), f"{len(rows)} random rows + {len(extra)} rows of {sample.name}"


def sample_rows(path: Path, estimator, n: int) -> np.ndarray:
    """The --sample file's rows as FP32 [rows, n]: its columns named as the estimator's features, else its
    numeric columns (which must then be exactly n)."""
    table = read_sample(path)
    if isinstance(table, dict):
        arrays = [a for a in table.values() if a.ndim == 2 and a.shape[1] == n]
        if len(table) != 1 or not arrays:
            raise UsageError(f"--sample {path} must hold one array of shape [rows, {n}]")
        return arrays[0].astype(np.float32)
    names = getattr(estimator, "feature_names_in_", None)
    if names is not None and set(names) <= set(table.columns):
        return table[list(names)].to_numpy(np.float32)
    numeric = table.select_dtypes("number")
    if numeric.shape[1] != n:
        named = f" ({', '.join(map(str, names))})" if names is not None else ""
        columns = ", ".join(map(str, numeric.columns))
        raise UsageError(
            f"--sample {path} has {numeric.shape[1]} numeric columns ({columns}); "
            f"the model takes {n} features{named}: keep only those columns"
        )
    return numeric.to_numpy(np.float32)


def convert(estimator, n: int, input_name: str, opset: int):
    """The estimator as an ONNX ModelProto taking one FP32 matrix [N, n] (skl2onnx, no ZipMap)."""
    from skl2onnx.common.data_types import FloatTensorType

    return convert_types(estimator, [(input_name, FloatTensorType([None, n]))], opset)


def convert_types(estimator, initial_types: list, opset: int):
    """The estimator as an ONNX ModelProto with these skl2onnx input types and a dynamic batch dimension.

    XGBoost, LightGBM and CatBoost estimators (alone or as a Pipeline's last step) convert through
    the converters `trees_onnx` registers with skl2onnx.
    """
    from skl2onnx import to_onnx
    from sklearn.base import is_classifier

    from tritonkit.export.trees_onnx import register_converters

    register_converters()
    try:
        return to_onnx(
            estimator,
            initial_types=initial_types,
            options={"zipmap": False} if is_classifier(estimator) else None,
            target_opset={"": opset, "ai.onnx.ml": ML_OPSET},
        )
    except Exception as e:  # skl2onnx raises RuntimeError, MissingShapeCalculator, NotImplementedError, ...
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ExportError(f"skl2onnx cannot convert {describe(estimator)}: {reason}") from e


def exact_standard_scalers(model, estimator) -> int:
    """Make each StandardScaler compute as scikit-learn does on FP32 rows; return how many were replaced.

    skl2onnx writes a StandardScaler as one `Scaler` node, (x - mean) * (1 / std) in float32, which differs
    from scikit-learn's float32 (x - mean) / std in the last bit for most values. Trees split training
    rows exactly between two of them, so that last bit flips trees on rows like the training data
    (2% of the churn forest's rows, by up to 0.02). The Sub and Div below reproduce scikit-learn's result.
    """
    from onnx import TensorProto, helper, numpy_helper
    from sklearn.preprocessing import StandardScaler

    scalers = [s for s in fitted_parts(estimator) if isinstance(s, StandardScaler) and hasattr(s, "n_features_in_")]
    graph, replaced = model.graph, 0
    for k, scaler in enumerate(scalers):
        n = scaler.n_features_in_
        mean = (scaler.mean_ if scaler.mean_ is not None else np.zeros(n)).astype(np.float32)
        scale = np.asarray(scaler.scale_ if scaler.scale_ is not None else np.ones(n), dtype=np.float64)
        std, inverse = scale.astype(np.float32), (1 / scale).astype(np.float32)  # inverse: what skl2onnx wrote
        for i, node in enumerate(graph.node):
            if node.op_type != "Scaler" or node.domain != "ai.onnx.ml":
                continue
            attrs = {a.name: np.asarray(helper.get_attribute_value(a), np.float32) for a in node.attribute}
            if attrs.get("offset", np.zeros(0)).shape != (n,) or not (
                np.array_equal(attrs["offset"], mean) and np.array_equal(attrs.get("scale"), inverse)
            ):
                continue
            prefix = f"tritonkit_scaler{k}"
            graph.initializer.extend(
                [numpy_helper.from_array(mean, f"{prefix}_mean"), numpy_helper.from_array(std, f"{prefix}_std")]
            )
            nodes = [
                helper.make_node("Cast", [node.input[0]], [f"{prefix}_x"], to=TensorProto.FLOAT),
                helper.make_node("Sub", [f"{prefix}_x", f"{prefix}_mean"], [f"{prefix}_centred"]),
                helper.make_node("Div", [f"{prefix}_centred", f"{prefix}_std"], [node.output[0]]),
            ]
            del graph.node[i]
            for j, new in enumerate(nodes):
                graph.node.insert(i + j, new)
            replaced += 1
            break
    return replaced


def matrix_frame(estimator, rows: np.ndarray):
    names = getattr(estimator, "feature_names_in_", None)
    if names is None:
        return rows
    import pandas as pd

    return pd.DataFrame(rows, columns=list(names))  # fitted on a DataFrame: predict on one, no warning


def kind_of(estimator) -> bool:
    """True for a classifier, False for a regressor; UsageError for anything else."""
    from sklearn.base import is_classifier, is_regressor

    if not is_classifier(estimator) and not is_regressor(estimator):
        raise UsageError(
            f"{describe(estimator)} is neither a classifier nor a regressor; tritonkit exports those two kinds of model"
        )
    return is_classifier(estimator)


def predictions(estimator, source, classifier: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """The estimator's own (labels or values, probabilities or None) on `source`."""
    proba = estimator.predict_proba(source) if classifier and hasattr(estimator, "predict_proba") else None
    return np.asarray(estimator.predict(source)), proba


def export_sklearn(
    model_path: Path, options: ExportOptions, n_features: int | None = None, inputs: str = "auto"
) -> ExportResult:
    """Convert, parity-check and write a fitted estimator as the next version of `options.name`.

    `inputs`: "features" (one FP32 matrix), "columns" (one input per DataFrame column) or "auto"
    (columns when the estimator picks columns by name or takes text, else features).
    """
    refuse_format(options)
    return export_estimator(load_estimator(model_path), options, n_features, inputs)


def refuse_format(options: ExportOptions) -> None:
    """UsageError for the formats a scikit-learn model cannot take, before anything is read."""
    if options.format == "torchscript":
        raise UsageError("--format torchscript exports PyTorch models; scikit-learn models export as onnx")
    if options.format == "fil":
        raise UsageError(
            "--format fil writes XGBoost and LightGBM models for Triton's FIL backend: "
            "use `tritonkit export xgboost` or `tritonkit export lightgbm`"
        )


def export_estimator(estimator, options: ExportOptions, n_features: int | None = None, inputs: str = "auto"):
    """`export_sklearn` for an estimator already in memory (scikit-learn API: wrappers and Pipelines too)."""
    from tritonkit.export.column_export import export_columns
    from tritonkit.export.columns import wants_columns

    refuse_fp16(options)
    refuse_format(options)
    if wants_columns(estimator, inputs, options.sample):
        return export_columns(estimator, options)
    return _export_matrix(estimator, options, n_features)


def _export_matrix(estimator, options: ExportOptions, n_features: int | None) -> ExportResult:
    n = feature_count(estimator, n_features)
    classifier = kind_of(estimator)
    has_proba = classifier and hasattr(estimator, "predict_proba")
    [input_name] = rename(["features"], options.input_names, "--input-name")
    outputs = output_names(classifier, has_proba, options)
    model = convert(estimator, n, input_name, options.opset or DEFAULT_OPSET)
    exact_standard_scalers(model, estimator)
    names = getattr(estimator, "feature_names_in_", None)
    props = {"tritonkit.feature_names": ",".join(map(str, names))} if names is not None else {}
    finish_graph(model, outputs, classifier, has_proba, describe(estimator), props)
    rows, checked = parity_rows(estimator, n, options.sample)

    def parity(path: Path) -> list:
        got = run_onnx(path, {input_name: rows}, outputs)
        labels, proba = predictions(estimator, matrix_frame(estimator, rows), classifier)
        return compare_predictions(got, outputs, classifier, labels, proba, options)

    parameters = {"feature_names": ",".join(map(str, names))} if names is not None else {}
    return write_onnx(model, options, parity, parameters, checked)
