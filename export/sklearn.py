"""scikit-learn estimators and Pipelines to ONNX (skl2onnx) in a Triton repository, checked against the estimator.

The graph takes one FP32 tensor `features` [N, n_features]; a Pipeline's preprocessing is inside it, so
batch and real-time callers cannot scale features differently. Classifiers return `label` [N, 1]
(INT64 for numeric classes, BYTES for string classes) and `probabilities` [N, n_classes]; regressors
return `prediction` [N, n_targets].

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
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tritonkit.errors import ExportError, UsageError
from tritonkit.export.options import (
    TABULAR_MAX_BATCH_SIZE,
    ExportOptions,
    ExportResult,
    check_dynamic_batch,
    read_sample,
    rename,
    specs_from_onnx,
    versioned,
)
from tritonkit.export.parity import check, compare

logger = logging.getLogger(__name__)

DEFAULT_OPSET = 18
ML_OPSET = 3  # ai.onnx.ml opset that goes with ONNX opset 18
RANDOM_ROWS = 2_000
ATOL, RTOL = 1e-5, 1e-4


@dataclass(frozen=True)
class LabelAgreement:
    """How many predicted labels differ between the estimator and the ONNX graph."""

    output: str
    rows: int
    mismatches: int  # differing labels where the estimator's vote was not a tie: each one fails the export
    ties: int  # differing labels at a tie of the two highest probabilities (within atol)

    @property
    def ok(self) -> bool:
        return self.mismatches == 0

    def __str__(self) -> str:
        return (
            f"{self.output}: {self.mismatches} of {self.rows} labels differ"
            f" ({self.ties} more at probability ties, allowed)"
        )


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
    if not isinstance(estimator, BaseEstimator):
        raise UsageError(f"{path} holds a {type(estimator).__name__}, not a scikit-learn estimator or Pipeline")
    try:
        check_is_fitted(estimator)
    except NotFittedError as e:
        raise UsageError(f"{path} holds an unfitted {describe(estimator)}: fit it before saving") from e
    return estimator


def feature_count(estimator, given: int | None) -> int:
    """The number of input features: the estimator's `n_features_in_`, else --n-features."""
    known = getattr(estimator, "n_features_in_", None)
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
    """The estimator as an ONNX ModelProto with a dynamic batch dimension (skl2onnx, no ZipMap)."""
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import FloatTensorType
    from sklearn.base import is_classifier

    try:
        return to_onnx(
            estimator,
            initial_types=[(input_name, FloatTensorType([None, n]))],
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

    found = [estimator, *estimator.get_params(deep=True).values()]
    scalers = [s for s in found if isinstance(s, StandardScaler) and hasattr(s, "n_features_in_")]
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


def _rename_tensor(graph, old: str, new: str) -> None:
    for node in graph.node:
        node.input[:] = [new if name == old else name for name in node.input]
        node.output[:] = [new if name == old else name for name in node.output]


def _tensor_names(graph) -> set[str]:
    names = {i.name for i in graph.input} | {i.name for i in graph.initializer}
    for node in graph.node:
        names.update(node.input)
        names.update(node.output)
    return names


def name_outputs(model, names: list[str], classifier: bool) -> None:
    """Give the graph's outputs `names`; a classifier's 1-D label becomes [N, 1] like every other output."""
    from onnx import TensorProto, helper, numpy_helper

    graph = model.graph
    if len(graph.output) != len(names):
        raise ExportError(f"skl2onnx produced outputs {[o.name for o in graph.output]}; expected {len(names)}")
    for i, new in enumerate(names):
        old = graph.output[i].name
        if classifier and i == 0:
            flat = f"{old}_1d"
            while flat in _tensor_names(graph):
                flat += "_"
            _rename_tensor(graph, old, flat)
            shape = numpy_helper.from_array(np.array([-1, 1], dtype=np.int64), name=f"{flat}_shape")
            graph.initializer.append(shape)
            graph.node.append(helper.make_node("Reshape", [flat, shape.name], [new], name=f"{new}_to_2d"))
            elem = graph.output[i].type.tensor_type.elem_type or TensorProto.INT64
            graph.output[i].CopyFrom(helper.make_tensor_value_info(new, elem, ["N", 1]))
        elif new != old:
            if new in _tensor_names(graph):
                raise UsageError(f"--output-name {new} clashes with a tensor inside the graph; pick another name")
            _rename_tensor(graph, old, new)
            graph.output[i].name = new


def _source_frame(estimator, rows: np.ndarray):
    names = getattr(estimator, "feature_names_in_", None)
    if names is None:
        return rows
    import pandas as pd

    return pd.DataFrame(rows, columns=list(names))  # fitted on a DataFrame: predict on one, no warning


def parity(
    estimator,
    path: Path,
    rows: np.ndarray,
    input_name: str,
    outputs: list[str],
    classifier: bool,
    options: ExportOptions,
) -> list:
    """Run the ONNX graph in onnxruntime and the estimator on `rows`; raise ExportError when they differ."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = dict(zip(outputs, session.run(outputs, {input_name: rows})))
    source = _source_frame(estimator, rows)
    if not classifier:
        expected = np.asarray(estimator.predict(source), dtype=np.float64).reshape(len(rows), -1)
        return check([compare(outputs[0], expected, got[outputs[0]], *options.tolerance(expected, ATOL, RTOL))])
    results = []
    proba = estimator.predict_proba(source) if hasattr(estimator, "predict_proba") else None
    atol, rtol = options.tolerance(np.ones(1), ATOL, RTOL)
    if proba is not None:
        results.append(compare(outputs[1], proba, got[outputs[1]], atol, rtol))
    expected = np.asarray(estimator.predict(source))
    served = got[outputs[0]].reshape(-1)
    differ = expected.astype(str) != served.astype(str)
    ties = np.zeros(len(rows), dtype=bool)
    if proba is not None and proba.shape[1] > 1:
        top = np.sort(proba, axis=1)
        ties = top[:, -1] - top[:, -2] <= atol
    results.insert(0, LabelAgreement(outputs[0], len(rows), int((differ & ~ties).sum()), int((differ & ties).sum())))
    return check(results)


def _refuse_unsupported(options: ExportOptions) -> None:
    if options.format == "torchscript":
        raise UsageError("--format torchscript exports PyTorch models; scikit-learn models export as onnx")
    if options.fp16_graph:
        raise UsageError(
            "--fp16: scikit-learn graphs use ONNX-ML operators (trees, scalers, linear models) that "
            "ONNX Runtime runs in float32 only; export without it (with --format tensorrt, --fp16 "
            "sets TensorRT's precision mode instead)"
        )


def export_sklearn(model_path: Path, options: ExportOptions, n_features: int | None = None) -> ExportResult:
    """Convert, parity-check and write a fitted estimator as the next version of `options.name`."""
    import onnx
    from sklearn.base import is_classifier, is_regressor

    _refuse_unsupported(options)
    estimator = load_estimator(model_path)
    n = feature_count(estimator, n_features)
    classifier = is_classifier(estimator)
    if not classifier and not is_regressor(estimator):
        raise UsageError(
            f"{describe(estimator)} is neither a classifier nor a regressor; "
            "tritonkit exports those two kinds of scikit-learn model"
        )
    defaults = (
        ["label", "probabilities" if hasattr(estimator, "predict_proba") else "scores"]
        if classifier
        else ["prediction"]
    )
    [input_name] = rename(["features"], options.input_names, "--input-name")
    outputs = rename(defaults, options.output_names, "--output-name")
    model = convert(estimator, n, input_name, options.opset or DEFAULT_OPSET)
    exact_standard_scalers(model, estimator)
    name_outputs(model, outputs, classifier)
    names = getattr(estimator, "feature_names_in_", None)
    onnx.helper.set_model_props(
        model,
        {
            "tritonkit.source": describe(estimator),
            **({"tritonkit.feature_names": ",".join(names)} if names is not None else {}),
        },
    )
    onnx.checker.check_model(model)
    rows = random_rows(estimator, n)
    checked = f"{len(rows)} random rows"
    if options.sample is not None:
        sample = sample_rows(options.sample, estimator, n)
        rows = np.concatenate([rows, sample])
        checked += f" + {len(sample)} rows of {options.sample.name}"
    if options.format == "tensorrt":
        logger.warning(
            "%s: TensorRT takes none of the ONNX-ML operators; ONNX Runtime runs them on CUDA or CPU", options.name
        )
    with versioned(options) as (number, scratch):
        path = scratch / "model.onnx"
        onnx.save(model, path)
        check_dynamic_batch(path)
        results = parity(estimator, path, rows, input_name, outputs, classifier, options)
        inputs, output_specs = specs_from_onnx(path)
        parameters = {"feature_names": ",".join(map(str, names))} if names is not None else {}
        config = options.model_config(
            inputs, output_specs, default_max_batch_size=TABULAR_MAX_BATCH_SIZE, parameters=parameters
        )
        config.write(options.model_dir)
    logger.info("exported %s version %d: %s", options.name, number, "; ".join(map(str, results)))
    return ExportResult(options.model_dir / str(number) / "model.onnx", number, config, results, checked)
