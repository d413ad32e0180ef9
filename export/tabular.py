"""What the tabular exports (scikit-learn, XGBoost, LightGBM, CatBoost) share once a graph exists.

Output names and shapes (`label` [N, 1] and `probabilities` [N, classes] for classifiers,
`prediction` [N, 1] for regressors), probabilities clipped to [0, 1] inside the graph, parity
against the source library's own predict, and writing the version folder with its config.pbtxt.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np

from tritonkit.errors import UsageError
from tritonkit.export.onnx_graph import clip_output, name_outputs
from tritonkit.export.options import (
    TABULAR_MAX_BATCH_SIZE,
    ExportOptions,
    ExportResult,
    check_dynamic_batch,
    rename,
    specs_from_onnx,
    versioned,
)
from tritonkit.export.parity import check, compare, label_agreement

logger = logging.getLogger(__name__)

ATOL, RTOL = 1e-5, 1e-4
MISSING_PARAMETER = "missing_inputs"  # config parameter: inputs that take a missing value (NaN, empty text)
FEATURES_PARAMETER = "feature_names"  # config parameter: the column behind each value of a vector input


def fitted_parts(estimator):
    """The estimator and every fitted step inside it: Pipeline steps, ColumnTransformer and FeatureUnion parts."""
    yield estimator
    children = [step for _, step in getattr(estimator, "steps", None) or []]
    children += [part[1] for part in getattr(estimator, "transformers_", None) or []]
    children += [part for _, part in getattr(estimator, "transformer_list", None) or []]
    for child in children:
        if child is not None and not isinstance(child, str):  # "drop" / "passthrough"
            yield from fitted_parts(child)


def output_names(classifier: bool, has_proba: bool, options: ExportOptions) -> list[str]:
    """`label` + `probabilities` (or `scores`) for classifiers, `prediction` for regressors; --output-name applied."""
    defaults = ["label", "probabilities" if has_proba else "scores"] if classifier else ["prediction"]
    return rename(defaults, options.output_names, "--output-name")


def finish_graph(model, outputs: list[str], classifier: bool, has_proba: bool, source: str, props: dict) -> None:
    """Name the outputs, clip probabilities to [0, 1], record where the graph came from; check it."""
    import onnx

    name_outputs(model, outputs, classifier)
    if classifier and has_proba:
        clip_output(model, outputs[1])
    onnx.helper.set_model_props(model, {"tritonkit.source": source, **props})
    onnx.checker.check_model(model)


def refuse_fp16(options: ExportOptions) -> None:
    if options.fp16_graph:
        raise UsageError(
            "--fp16: tabular graphs use ONNX-ML operators (trees, scalers, encoders, linear models) that "
            "ONNX Runtime runs in float32 only; export without it (with --format tensorrt, --fp16 "
            "sets TensorRT's precision mode instead)"
        )


def compare_predictions(
    got: dict[str, np.ndarray],
    outputs: list[str],
    classifier: bool,
    labels_or_values: np.ndarray,
    proba: np.ndarray | None,
    options: ExportOptions,
) -> list:
    """Parity results of the served outputs `got` against the source's predictions (not yet checked)."""
    rows = len(labels_or_values)
    if not classifier:
        expected = np.asarray(labels_or_values, dtype=np.float64).reshape(rows, -1)
        return [compare(outputs[0], expected, got[outputs[0]], *options.tolerance(expected, ATOL, RTOL))]
    atol, rtol = options.tolerance(np.ones(1), ATOL, RTOL)
    results = [label_agreement(outputs[0], labels_or_values, got[outputs[0]], proba, atol)]
    if proba is not None:
        results.append(compare(outputs[1], np.clip(proba, 0, 1), got[outputs[1]], atol, rtol))
    return results


def run_onnx(path: Path, feeds: dict[str, np.ndarray], outputs: list[str]) -> dict[str, np.ndarray]:
    """The graph's outputs on `feeds`, in onnxruntime on CPU."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return dict(zip(outputs, session.run(outputs, feeds)))


def write_onnx(
    model,
    options: ExportOptions,
    parity: Callable[[Path], list],
    parameters: dict[str, str] | Callable[[], dict[str, str]],
    checked: str,
) -> ExportResult:
    """Write `model` as the next version of `options.name`; `parity(path)` checks it before it lands.

    `parameters` (config.pbtxt parameters) may be a callable, asked after parity has run.
    """
    import onnx

    if options.format == "tensorrt":
        logger.warning(
            "%s: TensorRT takes none of the ONNX-ML operators; ONNX Runtime runs them on CUDA or CPU", options.name
        )
    with versioned(options) as (number, scratch):
        path = scratch / "model.onnx"
        onnx.save(model, path)
        check_dynamic_batch(path)
        results = check(parity(path))
        inputs, output_specs = specs_from_onnx(path)
        config = options.model_config(
            inputs,
            output_specs,
            default_max_batch_size=TABULAR_MAX_BATCH_SIZE,
            parameters=parameters() if callable(parameters) else parameters,
        )
        config.write(options.model_dir)
    logger.info("exported %s version %d: %s", options.name, number, "; ".join(map(str, results)))
    return ExportResult(options.model_dir / str(number) / "model.onnx", number, config, results, checked)
