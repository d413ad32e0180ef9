"""skl2onnx converters for the boosted-tree libraries, so their estimators convert alone or inside a Pipeline.

XGBoost and LightGBM convert through onnxmltools' operator converters, CatBoost through its own ONNX
export (`catboost.utils.convert_to_onnx_object`), whose tree node is copied into the graph skl2onnx
builds. Each library is registered only when it is installed (the `trees` extra).
"""

from __future__ import annotations

import importlib.util

ZERO_IS_MISSING = "_tritonkit_zero_is_missing"  # set on an XGBoost step fitted on a sparse matrix
_registered = False


def register_converters() -> None:
    """Register the converters of the tree libraries that are installed (once per process)."""
    global _registered
    if _registered:
        return
    from skl2onnx import update_registered_converter
    from skl2onnx.common.shape_calculator import (
        calculate_linear_classifier_output_shapes,
        calculate_linear_regressor_output_shapes,
    )

    classifier = {"nocl": [True, False], "zipmap": [True, False, "columns"]}
    shapes = (calculate_linear_classifier_output_shapes, calculate_linear_regressor_output_shapes)
    options = (classifier, None)  # a regressor registered with classifier options gets a ZipMap
    if importlib.util.find_spec("xgboost") and importlib.util.find_spec("onnxmltools"):
        import xgboost

        for cls, shape, opts in zip((xgboost.XGBClassifier, xgboost.XGBRegressor), shapes, options):
            update_registered_converter(cls, f"XGBoost{cls.__name__}", shape, _convert_xgboost, options=opts)
    if importlib.util.find_spec("lightgbm") and importlib.util.find_spec("onnxmltools"):
        import lightgbm
        from onnxmltools.convert.lightgbm.operator_converters.LightGbm import convert_lightgbm

        for cls, shape, opts in zip((lightgbm.LGBMClassifier, lightgbm.LGBMRegressor), shapes, options):
            update_registered_converter(cls, f"LightGbm{cls.__name__}", shape, convert_lightgbm, options=opts)
    if importlib.util.find_spec("catboost"):
        import catboost

        for cls, shape, opts, parser in zip(
            (catboost.CatBoostClassifier, catboost.CatBoostRegressor), shapes, options, (_parse_catboost, None)
        ):
            update_registered_converter(
                cls, f"CatBoost{cls.__name__}", shape, _convert_catboost, options=opts, parser=parser
            )
    _registered = True


def _convert_xgboost(scope, operator, container):
    """onnxmltools' XGBoost converter; a step fitted on a sparse matrix first turns zeros into NaN, since
    XGBoost reads a sparse matrix's absent entries (its zeros) as missing values."""
    from onnx import TensorProto
    from onnxmltools.convert.xgboost.operator_converters.XGBoost import convert_xgboost

    if getattr(operator.raw_operator, ZERO_IS_MISSING, False):
        source = operator.inputs[0]
        zero, nan = scope.get_unique_variable_name("zero"), scope.get_unique_variable_name("nan")
        container.add_initializer(zero, TensorProto.FLOAT, [], [0.0])
        container.add_initializer(nan, TensorProto.FLOAT, [], [float("nan")])
        is_zero = scope.get_unique_variable_name("is_zero")
        container.add_node("Equal", [source.full_name, zero], [is_zero])
        replaced = scope.declare_local_variable("zero_as_missing", source.type.__class__(source.type.shape))
        container.add_node("Where", [is_zero, nan, source.full_name], [replaced.full_name])
        operator.inputs[0] = replaced
    convert_xgboost(scope, operator, container)


def _parse_catboost(scope, model, inputs, custom_parsers=None):
    """A CatBoost classifier's outputs for skl2onnx: label and probabilities (skl2onnx cannot tell by itself)."""
    from skl2onnx._parse import _apply_zipmap, _get_sklearn_operator_name
    from skl2onnx.common.data_types import Int64TensorType, guess_tensor_type

    options = scope.get_options(model, {"zipmap": True})
    operator = scope.declare_local_operator(_get_sklearn_operator_name(type(model)), model)
    operator.inputs = inputs
    operator.outputs.append(scope.declare_local_variable("label", Int64TensorType()))
    operator.outputs.append(scope.declare_local_variable("probabilities", guess_tensor_type(inputs[0].type)))
    if options["zipmap"] is False:
        return operator.outputs
    return _apply_zipmap(options["zipmap"], scope, model, inputs[0].type, operator.outputs)


def _convert_catboost(scope, operator, container):
    """CatBoost's own ONNX export of the model, its tree node copied into the graph skl2onnx builds."""
    from catboost.utils import convert_to_onnx_object
    from onnx.helper import get_attribute_value

    from tritonkit.errors import ExportError

    onx = convert_to_onnx_object(operator.raw_operator)
    opsets = {d.domain: d.version for d in onx.opset_import}
    nodes = [n for n in onx.graph.node if n.op_type != "ZipMap"]
    if len(nodes) != 1 or not nodes[0].op_type.startswith("TreeEnsemble") or len(onx.graph.initializer):
        kinds = ", ".join(n.op_type for n in onx.graph.node)
        raise ExportError(f"CatBoost's ONNX export has nodes {kinds}; tritonkit takes one tree ensemble")
    node = nodes[0]
    attributes = {a.name: get_attribute_value(a) for a in node.attribute}
    container.add_node(
        node.op_type,
        [operator.inputs[0].full_name],
        [o.full_name for o in operator.outputs],
        op_domain=node.domain,
        op_version=opsets.get(node.domain),
        name=scope.get_unique_operator_name("CatBoost"),
        **attributes,
    )
