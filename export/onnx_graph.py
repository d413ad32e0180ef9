"""Small edits of converted ONNX graphs that every tabular export shares.

Converters (skl2onnx, onnxmltools, CatBoost) name their outputs after themselves, give a classifier's
label one dimension, leave probabilities a rounding error outside [0, 1], and (CatBoost) wrap
probabilities in a ZipMap. These helpers give every exported graph the kit's shape: named outputs,
every output [N, k], probabilities clipped to [0, 1], and inputs typed as the client sends them.
"""

from __future__ import annotations

import numpy as np

from tritonkit.errors import ExportError, UsageError


def rename_tensor(graph, old: str, new: str) -> None:
    """Rename a tensor wherever a node reads or writes it."""
    for node in graph.node:
        node.input[:] = [new if name == old else name for name in node.input]
        node.output[:] = [new if name == old else name for name in node.output]


def tensor_names(graph) -> set[str]:
    """Every tensor name in use: inputs, initializers, node inputs and outputs."""
    names = {i.name for i in graph.input} | {i.name for i in graph.initializer}
    for node in graph.node:
        names.update(node.input)
        names.update(node.output)
    return names


def fresh_name(graph, base: str) -> str:
    """`base`, or `base_` and so on: a name no tensor of the graph uses yet."""
    names, name = tensor_names(graph), base
    while name in names:
        name += "_"
    return name


def name_outputs(model, names: list[str], classifier: bool) -> None:
    """Give the graph's outputs `names`; a classifier's 1-D label becomes [N, 1] like every other output."""
    from onnx import TensorProto, helper, numpy_helper

    graph = model.graph
    if len(graph.output) != len(names):
        raise ExportError(f"the converter produced outputs {[o.name for o in graph.output]}; expected {len(names)}")
    for i, new in enumerate(names):
        old = graph.output[i].name
        if classifier and i == 0:
            flat = fresh_name(graph, f"{old}_1d")
            rename_tensor(graph, old, flat)
            shape = numpy_helper.from_array(np.array([-1, 1], dtype=np.int64), name=f"{flat}_shape")
            graph.initializer.append(shape)
            graph.node.append(helper.make_node("Reshape", [flat, shape.name], [new], name=f"{new}_to_2d"))
            elem = graph.output[i].type.tensor_type.elem_type or TensorProto.INT64
            graph.output[i].CopyFrom(helper.make_tensor_value_info(new, elem, ["N", 1]))
        elif new != old:
            if new in tensor_names(graph):
                raise UsageError(f"--output-name {new} clashes with a tensor inside the graph; pick another name")
            rename_tensor(graph, old, new)
            graph.output[i].name = new


def clip_output(model, name: str, low: float = 0.0, high: float = 1.0) -> None:
    """Clip a float output to [low, high] inside the graph (probabilities like 1.0000001 or -1.2e-07)."""
    from onnx import helper, numpy_helper

    graph = model.graph
    raw = fresh_name(graph, f"{name}_unclipped")
    rename_tensor(graph, name, raw)
    bounds = [
        numpy_helper.from_array(np.array(v, np.float32), fresh_name(graph, f"{name}_{k}"))
        for k, v in (("min", low), ("max", high))
    ]
    graph.initializer.extend(bounds)
    graph.node.append(helper.make_node("Clip", [raw, bounds[0].name, bounds[1].name], [name], name=f"{name}_clip"))


def cast_input(model, name: str, elem_type: int) -> None:
    """Let the graph take input `name` as `elem_type` (e.g. INT64) and cast it to what the converter declared."""
    from onnx import helper

    graph = model.graph
    [value] = [v for v in graph.input if v.name == name]
    declared = value.type.tensor_type.elem_type
    if declared == elem_type:
        return
    inner = fresh_name(graph, f"{name}_as_declared")
    rename_tensor(graph, name, inner)
    graph.node.insert(0, helper.make_node("Cast", [name], [inner], to=declared, name=f"{name}_cast"))
    value.type.tensor_type.elem_type = elem_type


def strip_zipmap(model, n_classes: int) -> None:
    """Replace a ZipMap at the end of the graph (a sequence of dicts) by the probability tensor it wraps."""
    from onnx import TensorProto, helper

    graph = model.graph
    for node in list(graph.node):
        if node.op_type != "ZipMap":
            continue
        [source], [target] = node.input, node.output
        graph.node.remove(node)
        for i, value in enumerate(graph.output):
            if value.name == target:
                graph.output[i].CopyFrom(helper.make_tensor_value_info(source, TensorProto.FLOAT, ["N", n_classes]))
