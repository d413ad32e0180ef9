"""`--format fil` for a Pipeline ending in XGBoost or LightGBM: an ensemble of preprocessing, trees and label.

FIL evaluates trees only, so the Pipeline is served as a Triton ensemble, in NVIDIA's architecture for
trees (FIL for the forest, another backend for the feature engineering):

- `NAME_preprocess` (`backend: "onnxruntime"`, KIND_CPU): the Pipeline's steps before the trees as ONNX,
  one input per DataFrame column (FP32, INT64, BYTES; or one FP32 `features` matrix for a Pipeline
  fitted on an array), output `preprocessed` FP32 [features the trees take]. An XGBoost step fitted on
  a sparse matrix reads its zeros as missing values: the graph turns them into NaN.
- `NAME_trees` (`backend: "fil"`): the booster in FIL's layout (`fil.py`): NVIDIA's FIL on a GPU in
  their container, the library's own predict on CPU in the embedded server; `nthread` is --intra-op-threads.
- `NAME_postprocess` (classifiers; onnxruntime, KIND_CPU): ArgMax of the probabilities -> `label`
  (the classes as the estimator names them).
- `NAME` (`platform: "ensemble"`): what clients call, with the same inputs and outputs as the ONNX export
  (`label` + `probabilities`, or `prediction`) and its `missing_inputs`.

On 2 CPU cores onnxruntime's TreeEnsemble took 1.95 s for 300 trees on 50,000 rows where XGBoost's own
predict took 0.66 s (README, Numbers): this is the layout for trees that must be fast.

Parity runs end to end on what is written: the preprocessing graph in onnxruntime, its output through
the saved booster as the backend loads it, then the label graph, against the Pipeline's own
predict_proba / predict, on the same rows and probes as the ONNX export (unseen categories, missing
values). All four models get one version number; a failed export leaves the repository as it was.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tritonkit.errors import UsageError
from tritonkit.export.column_export import ColumnPlan, convert_columns, plan_columns
from tritonkit.export.columns import source_frame, wants_columns
from tritonkit.export.ensemble import Step, ensemble_pbtxt, new_versions
from tritonkit.export.fil import FIL_MAX_BATCH_SIZE, booster_predictor, fil_output, save_native, trees_config
from tritonkit.export.onnx_graph import fresh_name, rename_tensor
from tritonkit.export.options import ExportOptions, ExportResult, check_dynamic_batch, rename, specs_from_onnx
from tritonkit.export.parity import check
from tritonkit.export.tabular import MISSING_PARAMETER, compare_predictions, output_names, refuse_fp16
from tritonkit.model_config import InstanceGroup, ModelConfig, TensorSpec

logger = logging.getLogger(__name__)

PREPROCESSED = "preprocessed"  # the preprocessing model's output: the trees' input__0
PROBABILITIES, LABEL = "probabilities", "label"  # the postprocessing model's input and output
ROLES = ("preprocess", "trees", "postprocess")
LABEL_IR_VERSION = 8  # what opset 18 needs; onnxruntime refuses IR versions newer than it knows


@dataclass(frozen=True)
class _Parts:
    """The Pipeline split for serving: preprocessing, the tree step, and what the ensemble takes and gives."""

    preprocess: object  # the Pipeline's steps before the trees
    trees: object  # the XGBoost / LightGBM estimator
    library: str
    classifier: bool
    features: int  # columns of the preprocessed matrix (the trees' n_features_in_)
    outputs: list[str]  # the ensemble's outputs: label + probabilities, or prediction


def _split(estimator, library: str, options: ExportOptions) -> _Parts:
    from tritonkit.export.sklearn import describe, kind_of

    refuse_fp16(options)
    trees = estimator.steps[-1][1]
    features = getattr(trees, "n_features_in_", None)
    if not features:
        raise UsageError(f"the last step of {describe(estimator)} does not record how many features it takes")
    classifier = kind_of(estimator)
    return _Parts(estimator[:-1], trees, library, classifier, int(features), output_names(classifier, True, options))


def _finish_preprocess(model, parts: _Parts, zero_is_missing: bool) -> None:
    """Name the preprocessing graph's output `preprocessed` FP32 [N, features]; zeros as NaN where XGBoost
    reads them so."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    graph = model.graph
    if len(graph.output) != 1:
        raise UsageError(f"the preprocessing steps give {len(graph.output)} outputs; the trees take one matrix")
    elem = graph.output[0].type.tensor_type.elem_type
    rename_tensor(graph, graph.output[0].name, PREPROCESSED)
    if elem != TensorProto.FLOAT:
        raw = fresh_name(graph, f"{PREPROCESSED}_{elem}")
        rename_tensor(graph, PREPROCESSED, raw)
        graph.node.append(helper.make_node("Cast", [raw], [PREPROCESSED], to=TensorProto.FLOAT))
    if zero_is_missing:
        raw = fresh_name(graph, f"{PREPROCESSED}_with_zeros")
        rename_tensor(graph, PREPROCESSED, raw)
        zero, nan, is_zero = (fresh_name(graph, f"{PREPROCESSED}_{k}") for k in ("zero", "nan", "is_zero"))
        graph.initializer.extend(
            [numpy_helper.from_array(np.float32(0), zero), numpy_helper.from_array(np.float32(np.nan), nan)]
        )
        graph.node.extend(
            [
                helper.make_node("Equal", [raw, zero], [is_zero]),
                helper.make_node("Where", [is_zero, nan, raw], [PREPROCESSED]),
            ]
        )
    graph.output[0].CopyFrom(helper.make_tensor_value_info(PREPROCESSED, TensorProto.FLOAT, ["N", parts.features]))
    onnx.checker.check_model(model)


def _zero_is_missing(parts: _Parts, frame) -> bool:
    """Whether the tree step is XGBoost fitted on a sparse matrix (it reads the matrix's zeros as missing)."""
    import scipy.sparse

    return parts.library == "xgboost" and scipy.sparse.issparse(parts.preprocess.transform(frame))


def _label_graph(classes: np.ndarray, width: int, opset: int):
    """probabilities FP32 [N, width] -> label [N, 1]: ArgMax, then the class it stands for."""
    from onnx import TensorProto, helper, numpy_helper

    index = "class_index"
    nodes = [helper.make_node("ArgMax", [PROBABILITIES], [index], axis=1, keepdims=1)]
    initializers = []
    if np.array_equal(classes, np.arange(len(classes))) and len(classes) == width:
        nodes.append(helper.make_node("Identity", [index], [LABEL]))
        elem = TensorProto.INT64
    else:
        if classes.dtype.kind in "iub" or (classes.dtype.kind == "f" and np.all(classes == np.round(classes))):
            table, elem = numpy_helper.from_array(classes.astype(np.int64), "classes"), TensorProto.INT64
        elif classes.dtype.kind in "OUS":
            table = helper.make_tensor(
                "classes", TensorProto.STRING, [len(classes)], [str(c).encode() for c in classes]
            )
            elem = TensorProto.STRING
        else:
            raise UsageError(f"classes {classes.tolist()}: expected whole numbers or text to serve as labels")
        initializers.append(table)
        nodes.append(helper.make_node("Gather", ["classes", index], [LABEL], axis=0))
    graph = helper.make_graph(
        nodes,
        "label",
        [helper.make_tensor_value_info(PROBABILITIES, TensorProto.FLOAT, ["N", width])],
        [helper.make_tensor_value_info(LABEL, elem, ["N", 1])],
        initializers,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=LABEL_IR_VERSION)


class _Served:
    """The written ensemble run in this process as Triton runs it: preprocess (onnxruntime), trees, label."""

    def __init__(self, scratch: dict[str, Path], booster: Path, parts: _Parts):
        import onnxruntime as ort

        cpu = ["CPUExecutionProvider"]
        self.preprocess = ort.InferenceSession(str(scratch["preprocess"] / "model.onnx"), providers=cpu)
        self.label = None
        if parts.classifier:
            self.label = ort.InferenceSession(str(scratch["postprocess"] / "model.onnx"), providers=cpu)
        self.predict, self.parts = booster_predictor(parts.library, booster), parts

    def __call__(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        [matrix] = self.preprocess.run([PREPROCESSED], feeds)
        scores = fil_output(self.predict(matrix), self.parts.classifier)
        if self.label is None:
            return {self.parts.outputs[0]: scores}
        [label] = self.label.run([LABEL], {PROBABILITIES: scores})
        return {self.parts.outputs[0]: label, self.parts.outputs[1]: scores}


@dataclass
class _Plan:
    """What the ensemble takes and how parity is checked: one input per column, or one FP32 matrix."""

    checked: str
    sample_frame: object  # rows the preprocessing transforms to tell a sparse output
    parity: Callable  # (estimator, run, missing: list) -> parity results; adds the inputs that take missing values
    convert: Callable  # () -> the preprocessing ONNX model


def _plan(estimator, parts: _Parts, options: ExportOptions, inputs: str) -> _Plan:
    if wants_columns(estimator, inputs, options.sample):
        plan: ColumnPlan = plan_columns(estimator, options)
        plan = dataclasses.replace(plan, outputs=parts.outputs)
        frame = source_frame(plan.base[0].frame, plan.columns)
        return _Plan(
            plan.checked,
            frame,
            lambda est, run, missing: plan.parity(est, run, options, missing),
            lambda: convert_columns(parts.preprocess, plan.columns, frame, options),
        )
    return _matrix_plan(estimator, parts, options)


def _matrix_plan(estimator, parts: _Parts, options: ExportOptions) -> _Plan:
    from tritonkit.export.sklearn import (
        DEFAULT_OPSET,
        convert,
        exact_standard_scalers,
        feature_count,
        matrix_frame,
        parity_rows,
        predictions,
    )

    [name] = rename(["features"], options.input_names, "--input-name")
    n = feature_count(estimator, None)
    rows, checked = parity_rows(estimator, n, options.sample)

    def parity(est, run, missing):
        expected = predictions(est, matrix_frame(est, rows), parts.classifier)
        return check(compare_predictions(run({name: rows}), parts.outputs, parts.classifier, *expected, options))

    def convert_matrix():
        model = convert(parts.preprocess, n, name, options.opset or DEFAULT_OPSET)
        exact_standard_scalers(model, parts.preprocess)
        return model

    return _Plan(checked, matrix_frame(estimator, rows[:100]), parity, convert_matrix)


def _step_options(options: ExportOptions, role: str) -> ExportOptions:
    """The options of one composing model: its name; the ONNX steps on CPU with one onnxruntime thread.

    --intra-op-threads goes to the trees (`nthread`). The preprocessing graph (imputers, scalers,
    one-hot on text) gains nothing from a second onnxruntime thread, whose spinning doubled its CPU
    time here (20 -> 40 ms per 50,000 rows); the label step is one ArgMax.
    """
    changes = {"name": f"{options.name}_{role}", "input_names": (), "output_names": ()}
    if role != "trees":
        changes.update(format="onnx", kind="KIND_CPU", warmup_batch_size=0, intra_op_threads=1)
    if role == "postprocess":
        changes.update(instances=1)
    return dataclasses.replace(options, **changes)


def _width(parts: _Parts, frame) -> int:
    """Values per row of the trees' output__0: one per class (binary: 2), else the regressor's targets."""
    if parts.classifier:
        return len(parts.trees.classes_)
    return np.asarray(parts.trees.predict(parts.preprocess.transform(frame[:1]))).reshape(1, -1).shape[1]


def _configs(options: ExportOptions, parts: _Parts, scratch: dict[str, Path], width: int, missing: list[str]):
    """(config.pbtxt text by role, "ensemble" too; the ensemble's typed config) from the written ONNX files."""
    inputs, [preprocessed] = specs_from_onnx(scratch["preprocess"] / "model.onnx")
    steps = {role: _step_options(options, role) for role in ROLES}
    preprocess = steps["preprocess"].model_config(inputs, [preprocessed], default_max_batch_size=FIL_MAX_BATCH_SIZE)
    if missing:  # the onnxruntime backend lets NaN through only for the inputs this lists
        parameters = {**preprocess.parameters, MISSING_PARAMETER: ",".join(missing)}
        preprocess = dataclasses.replace(preprocess, parameters=parameters)
    names = getattr(parts.preprocess, "get_feature_names_out", lambda: None)()
    trees = trees_config(steps["trees"], parts.library, parts.classifier, parts.features, width, names)
    texts = {"preprocess": preprocess.to_pbtxt(), "trees": trees.to_pbtxt()}
    outputs = [TensorSpec(parts.outputs[-1], "FP32", (width,))]
    chain = [
        Step(preprocess.name, {spec.name: spec.name for spec in inputs}, {PREPROCESSED: PREPROCESSED}),
        Step(trees.name, {"input__0": PREPROCESSED}, {"output__0": parts.outputs[-1]}),
    ]
    if parts.classifier:
        label_inputs, [label] = specs_from_onnx(scratch["postprocess"] / "model.onnx")
        post = steps["postprocess"].model_config(
            label_inputs, [label], default_max_batch_size=preprocess.max_batch_size
        )
        post = dataclasses.replace(post, instance_groups=[InstanceGroup(count=1, kind="KIND_CPU")])
        texts["postprocess"] = post.to_pbtxt()
        outputs.insert(0, TensorSpec(parts.outputs[0], label.dtype, (1,)))
        chain.append(Step(post.name, {PROBABILITIES: parts.outputs[1]}, {LABEL: parts.outputs[0]}))
    ensemble = ModelConfig(
        name=options.name,
        platform="ensemble",
        max_batch_size=preprocess.max_batch_size,
        inputs=inputs,
        outputs=outputs,
        parameters={MISSING_PARAMETER: ",".join(missing)} if missing else {},
    )
    texts["ensemble"] = ensemble_pbtxt(ensemble, chain)
    return texts, ensemble


def export_fil_pipeline(estimator, library: str, options: ExportOptions, inputs: str = "auto") -> ExportResult:
    """Write the Pipeline as the ensemble NAME = NAME_preprocess -> NAME_trees (-> NAME_postprocess), checked."""
    import onnx

    from tritonkit import pbtxt
    from tritonkit.export.sklearn import DEFAULT_OPSET

    parts = _split(estimator, library, options)
    plan = _plan(estimator, parts, options, inputs)
    preprocess = plan.convert()
    _finish_preprocess(preprocess, parts, _zero_is_missing(parts, plan.sample_frame))
    width = _width(parts, plan.sample_frame)
    roles = ["ensemble", *ROLES[: 3 if parts.classifier else 2]]
    dirs = [options.repository / (options.name if role == "ensemble" else f"{options.name}_{role}") for role in roles]
    missing: list[str] = []
    with new_versions(dirs, options.version, options.replace) as (number, folders):
        scratch = dict(zip(roles, folders))
        onnx.save(preprocess, scratch["preprocess"] / "model.onnx")
        booster = save_native(parts.trees, library, scratch["trees"])
        if parts.classifier:
            classes = np.asarray(parts.trees.classes_)
            onnx.save(
                _label_graph(classes, width, options.opset or DEFAULT_OPSET), scratch["postprocess"] / "model.onnx"
            )
        for role in ("preprocess", "postprocess"):
            if role in scratch:
                check_dynamic_batch(scratch[role] / "model.onnx")
        results = plan.parity(estimator, _Served(scratch, booster, parts), missing)
        texts, ensemble = _configs(options, parts, scratch, width, missing)
        for role, folder in zip(roles, dirs):
            pbtxt.write_text(folder, texts[role])
    logger.info("exported ensemble %s version %d: %s", options.name, number, "; ".join(map(str, results)))
    path = dirs[roles.index("trees")] / str(number) / booster.name
    parts_written = tuple(folder.name for folder in dirs[1:])
    return ExportResult(path, number, ensemble, results, plan.checked, parts_written)
