"""Fixtures that export real models and start the real embedded Triton server on free ports."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from tritonkit.export.churn import export_churn
from tritonkit.server import EmbeddedServer


def _save(model_dir: Path, graph, config: str) -> None:
    (model_dir / "1").mkdir(parents=True, exist_ok=True)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, model_dir / "1" / "model.onnx")
    (model_dir / "config.pbtxt").write_text(config)


def build_dtypes_model(repository: Path) -> None:
    """`dtypes`: one input and output per datatype; config.pbtxt names only the backend (auto-complete)."""
    kinds = [
        ("a", TensorProto.FLOAT, 2, "Mul"),
        ("b", TensorProto.FLOAT16, 2, "Add"),
        ("c", TensorProto.INT64, 1, "Add"),
        ("d", TensorProto.INT32, 1, "Mul"),
        ("e", TensorProto.BOOL, 1, "Not"),
    ]
    nodes, inputs, outputs, inits = [], [], [], []
    for name, dtype, width, op in kinds:
        inputs.append(helper.make_tensor_value_info(name, dtype, ["batch", width]))
        outputs.append(helper.make_tensor_value_info(f"{name}_out", dtype, ["batch", width]))
        if op == "Not":
            nodes.append(helper.make_node("Not", [name], [f"{name}_out"]))
        else:
            inits.append(helper.make_tensor(f"{name}_k", dtype, [], [3]))
            nodes.append(helper.make_node(op, [name, f"{name}_k"], [f"{name}_out"]))
    graph = helper.make_graph(nodes, "dtypes", inputs, outputs, initializer=inits)
    _save(repository / "dtypes", graph, 'backend: "onnxruntime"\n')


def build_varlen_model(repository: Path) -> None:
    """`varlen`: the config accepts any row length, the ONNX graph only 4: bad rows reach the backend."""
    graph = helper.make_graph(
        [helper.make_node("Mul", ["x", "two"], ["y"])],
        "varlen",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])],
        initializer=[helper.make_tensor("two", TensorProto.FLOAT, [], [2.0])],
    )
    config = """backend: "onnxruntime"
max_batch_size: 16
input [ { name: "x" data_type: TYPE_FP32 dims: [ -1 ] } ]
output [ { name: "y" data_type: TYPE_FP32 dims: [ -1 ] } ]
dynamic_batching { max_queue_delay_microseconds: 200000 }
instance_group [ { count: 1 kind: KIND_CPU } ]
"""
    _save(repository / "varlen", graph, config)


def build_vector_model(repository: Path) -> None:
    """`vector`: one FP32 [4] input, y = 2x: fed by a list column or by four stacked scalar columns."""
    graph = helper.make_graph(
        [helper.make_node("Mul", ["x", "two"], ["y"])],
        "vector",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])],
        initializer=[helper.make_tensor("two", TensorProto.FLOAT, [], [2.0])],
    )
    config = """backend: "onnxruntime"
max_batch_size: 64
input [ { name: "x" data_type: TYPE_FP32 dims: [ 4 ] } ]
output [ { name: "y" data_type: TYPE_FP32 dims: [ 4 ] } ]
dynamic_batching { }
"""
    _save(repository / "vector", graph, config)


@pytest.fixture(scope="session")
def churn_repository(tmp_path_factory) -> Path:
    """A model repository holding the churn example (exported once per session) and two test models."""
    repository = tmp_path_factory.mktemp("repository")
    export_churn(repository)
    build_dtypes_model(repository)
    build_varlen_model(repository)
    build_vector_model(repository)
    return repository


@pytest.fixture(scope="session")
def server(churn_repository, tmp_path_factory) -> EmbeddedServer:
    """The embedded Triton serving `churn_repository` on free loopback ports."""
    log = tmp_path_factory.mktemp("logs") / "triton.log"
    with EmbeddedServer(churn_repository, http_port=0, grpc_port=0, metrics_port=0, log_file=log) as running:
        yield running


@pytest.fixture(scope="session")
def churn_rows() -> dict[str, np.ndarray]:
    """256 synthetic customers as one [256, 1] FP32 array per churn input."""
    from tritonkit.export.churn import FEATURES, synthetic_customers

    frame = synthetic_customers(256, seed=7)
    return {f: frame[[f]].to_numpy(np.float32) for f in FEATURES}
