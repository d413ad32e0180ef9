"""`tritonkit export torch`: module factories with weights, TorchScript, torch.export programs, FP16."""

from __future__ import annotations

import hashlib
import sys
import textwrap

import numpy as np
import onnxruntime as ort
import pytest
import torch
from typer.testing import CliRunner

from tritonkit.cli import app
from tritonkit.errors import ExportError, UsageError
from tritonkit.export import torch_source
from tritonkit.export.options import ExportOptions
from tritonkit.export.torch_inputs import InputSpec, parse_inputs
from tritonkit.export.torch_source import export_torch, load_factory, load_weights

NETS = textwrap.dedent("""
    import torch

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.body = torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2))
            self.shift = 0.0  # a plain attribute: traced into the graph as a constant

        def forward(self, features):
            logits = self.body(features) + self.shift
            return {"probabilities": torch.softmax(logits, -1), "label": logits.argmax(-1, keepdim=True)}

    class Pair(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.dense = torch.nn.Linear(3, 4)
            self.embedding = torch.nn.Embedding(10, 4)

        def forward(self, x, ids):
            return self.dense(x) + self.embedding(ids).sum(1)

    def build():
        torch.manual_seed(0)
        return Net()

    def not_a_module():
        return 42
""")


@pytest.fixture
def nets(tmp_path, monkeypatch):
    """A user's model file, importable as `unit_nets`, and its Net's weights as a state_dict file."""
    (tmp_path / "unit_nets.py").write_text(NETS)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "unit_nets", raising=False)
    import unit_nets

    torch.manual_seed(1)
    torch.save(unit_nets.Net().state_dict(), tmp_path / "net.pt")
    return unit_nets


def _snapshot(folder):
    return (
        {
            str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*"))
            if p.is_file()
        }
        if folder.exists()
        else {}
    )


@pytest.mark.parametrize(
    "shapes, dtypes, expected",
    [
        (["x=5"], [], [InputSpec("x", (5,), "FP32")]),
        (["image=3x32x32", "ids=7"], ["ids=INT64"], [InputSpec("image", (3, 32, 32)), InputSpec("ids", (7,), "INT64")]),
        (["a = 2,3"], ["a=type_fp16"], [InputSpec("a", (2, 3), "FP16")]),
    ],
)
def test_parse_inputs_gives_specs_when_syntax_valid(shapes, dtypes, expected):
    assert parse_inputs(shapes, dtypes) == expected


@pytest.mark.parametrize(
    "shapes, dtypes, message",
    [
        (["x"], [], "--input-shape 'x': expected NAME=DIMS"),
        (["x=five"], [], "--input-shape 'x=five'"),
        (["x=0"], [], "each dim a positive integer"),
        (["=5"], [], "--input-shape '=5'"),
        (["x=-1x5"], [], "--input-shape 'x=-1x5'"),
        (["x=5", "x=6"], [], "gives `x` twice"),
        (["x=5"], ["x=FLOAT"], "--input-dtype 'x=FLOAT': expected NAME=TYPE"),
        (["x=5"], ["y=FP32"], "names `y`, which no --input-shape gives"),
    ],
)
def test_parse_inputs_raises_usage_error_when_syntax_bad(shapes, dtypes, message):
    with pytest.raises(UsageError, match=message.replace("(", r"\(")):
        parse_inputs(shapes, dtypes)


def test_export_torch_writes_dynamic_batch_graph_equal_to_module_when_factory_and_weights_given(tmp_path, nets):
    result = export_torch(
        ExportOptions(tmp_path / "repo", "net"),
        factory="unit_nets:build",
        weights=tmp_path / "net.pt",
        input_shapes=["features=5"],
    )
    assert result.version == 1 and result.checked == "256 random rows"
    assert [(p.output, p.max_abs_error < 1e-5) for p in result.parity] == [("probabilities", True), ("label", True)]
    config = result.config
    assert [(t.name, t.dtype, t.dims) for t in config.inputs] == [("features", "FP32", (5,))]
    assert [(t.name, t.dtype, t.dims) for t in config.outputs] == [
        ("probabilities", "FP32", (2,)),
        ("label", "INT64", (1,)),
    ]
    assert config.max_batch_size == 4096 and config.dynamic_batching is not None
    model = nets.Net()
    model.load_state_dict(torch.load(tmp_path / "net.pt"))
    session = ort.InferenceSession(str(result.path))
    for batch in (1, 3, 700):
        rows = np.random.default_rng(batch).standard_normal((batch, 5)).astype(np.float32)
        probabilities, label = session.run(None, {"features": rows})
        with torch.no_grad():
            expected = model.eval()(torch.from_numpy(rows))
        np.testing.assert_allclose(probabilities, expected["probabilities"].numpy(), rtol=0, atol=1e-5)
        np.testing.assert_array_equal(label, expected["label"].numpy())


def test_export_torch_computes_in_fp16_within_loose_tolerance_when_fp16(tmp_path, nets):
    result = export_torch(
        ExportOptions(tmp_path / "repo", "net", fp16=True, output_names=("p", "label")),
        factory="unit_nets:build",
        input_shapes=["features=5"],
    )
    assert [(t.name, t.dtype) for t in result.config.inputs] == [("features", "FP16")]
    assert [(t.name, t.dtype) for t in result.config.outputs] == [("p", "FP16"), ("label", "INT64")]
    assert result.parity[0].atol == 1e-2 and 0 < result.parity[0].max_abs_error < 1e-2
    probabilities, _ = ort.InferenceSession(str(result.path)).run(None, {"features": np.ones((2, 5), np.float16)})
    assert probabilities.dtype == np.float16


def test_export_torch_writes_graph_when_file_is_torchscript(tmp_path, nets):
    torch.jit.script(nets.Pair()).save(str(tmp_path / "pair.pt"))
    result = export_torch(
        ExportOptions(tmp_path / "repo", "pair"),
        model_file=tmp_path / "pair.pt",
        input_shapes=["x=3", "ids=6"],
        input_dtypes=["ids=INT64"],
    )
    assert [(t.name, t.dtype, t.dims) for t in result.config.inputs] == [("x", "FP32", (3,)), ("ids", "INT64", (6,))]
    assert result.config.outputs[0].dims == (4,) and result.parity[0].max_abs_error < 1e-5
    inputs = {"x": np.zeros((9, 3), np.float32), "ids": np.ones((9, 6), np.int64)}
    assert ort.InferenceSession(str(result.path)).run(None, inputs)[0].shape == (9, 4)


def test_export_torch_writes_graph_when_file_is_dynamic_torch_export_program(tmp_path, nets):
    batch = torch.export.Dim("batch")
    program = torch.export.export(
        nets.Pair(),
        (torch.zeros(2, 3), torch.zeros(2, 6, dtype=torch.int64)),
        dynamic_shapes={"x": {0: batch}, "ids": {0: batch}},
    )
    torch.export.save(program, str(tmp_path / "pair.pt2"))
    result = export_torch(
        ExportOptions(tmp_path / "repo", "pair", input_names=("ids=token_ids",)), model_file=tmp_path / "pair.pt2"
    )
    assert [(t.name, t.dtype, t.dims) for t in result.config.inputs] == [
        ("x", "FP32", (3,)),
        ("token_ids", "INT64", (6,)),
    ]
    assert result.parity[0].max_abs_error < 1e-5


def test_export_torch_raises_usage_error_when_program_has_fixed_batch(tmp_path, nets):
    program = torch.export.export(nets.Pair(), (torch.zeros(2, 3), torch.zeros(2, 6, dtype=torch.int64)))
    torch.export.save(program, str(tmp_path / "fixed.pt2"))
    with pytest.raises(UsageError, match="fixed batch size of 2 for `x`; export it with dynamic_shapes"):
        export_torch(ExportOptions(tmp_path / "repo", "pair"), model_file=tmp_path / "fixed.pt2")
    assert not (tmp_path / "repo").exists()


def test_export_torch_raises_export_error_and_keeps_repository_when_parity_fails(tmp_path, nets, monkeypatch):
    export_torch(
        ExportOptions(tmp_path / "repo", "pair"),
        factory="unit_nets:Pair",
        input_shapes=["x=3", "ids=6"],
        input_dtypes=["ids=INT64"],
    )
    before = _snapshot(tmp_path / "repo")
    real_export = torch_source.export_graph

    def export_then_drift(module, *args):
        real_export(module, *args)
        module.shift = torch.tensor([3.0, -3.0])  # the source now computes what the exported graph does not

    monkeypatch.setattr(torch_source, "export_graph", export_then_drift)
    with pytest.raises(
        ExportError,
        match=r"does not match its source: probabilities: max abs error 0\.\d+ "
        r"\(atol 0\.0001\).*; label: max abs error 1 ",
    ):
        export_torch(ExportOptions(tmp_path / "repo", "pair"), factory="unit_nets:build", input_shapes=["features=5"])
    assert _snapshot(tmp_path / "repo") == before


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (
            dict(factory="unit_nets:build", input_shapes=["x=5"]),
            r"--input-shape names x do not match forward\(features\)",
        ),
        (dict(factory="unit_nets:Pair", input_shapes=["ids=6", "x=3"]), r"do not match forward\(x, ids\)"),
        (dict(factory="unit_nets:build"), r"give --input-shape NAME=DIMS for features"),
        (dict(factory="unit_nets:nope", input_shapes=["features=5"]), "`unit_nets` has no `nope`"),
        (dict(factory="unit_nets", input_shapes=["features=5"]), "expected pkg.module:callable"),
        (dict(factory="no_such_module:build", input_shapes=["features=5"]), "cannot import `no_such_module`"),
        (dict(factory="unit_nets:not_a_module", input_shapes=["features=5"]), "returned a int, not a torch.nn.Module"),
        (dict(), "give either MODEL_FILE"),
    ],
)
def test_export_torch_raises_usage_error_when_source_is_wrong(tmp_path, nets, kwargs, message):
    with pytest.raises(UsageError, match=message):
        export_torch(ExportOptions(tmp_path / "repo", "net"), **kwargs)
    assert not (tmp_path / "repo").exists()


def test_export_torch_raises_usage_error_when_model_file_missing_or_not_torchscript(tmp_path, nets):
    with pytest.raises(UsageError, match="missing.pt does not exist"):
        export_torch(ExportOptions(tmp_path, "net"), model_file=tmp_path / "missing.pt", input_shapes=["x=5"])
    with pytest.raises(UsageError, match="net.pt is not a TorchScript file.*--weights FILE"):
        export_torch(ExportOptions(tmp_path, "net"), model_file=tmp_path / "net.pt", input_shapes=["x=5"])


def test_load_weights_reads_state_dict_when_checkpoint_nests_it(tmp_path, nets):
    source = nets.Net()
    torch.save({"epoch": 3, "model_state_dict": source.state_dict()}, tmp_path / "checkpoint.pt")
    target = nets.Net()
    load_weights(target, tmp_path / "checkpoint.pt")
    assert torch.equal(target.body[0].weight, source.body[0].weight)
    with pytest.raises(UsageError, match=r"does not fit Pair: missing \['dense.weight'"):
        load_weights(nets.Pair(), tmp_path / "checkpoint.pt")
    torch.save(source, tmp_path / "pickled_module.pt")
    with pytest.raises(UsageError, match="is not a state_dict file"):
        load_weights(nets.Net(), tmp_path / "pickled_module.pt")


def test_load_factory_builds_module_when_callable_is_a_class(nets):
    assert isinstance(load_factory("unit_nets:Pair"), nets.Pair)


def test_cli_export_torch_prints_parity_and_exits_2_when_input_shape_bad(tmp_path, nets):
    base = ["export", "torch", "--model", "unit_nets:Pair", "--name", "pair", "-r", str(tmp_path / "repo")]
    bad = CliRunner().invoke(app, [*base, "--input-shape", "x:3"])
    assert bad.exit_code == UsageError.exit_code == 2 and "--input-shape" in bad.stderr
    result = CliRunner().invoke(
        app,
        [
            *base,
            "--input-shape",
            "x=3",
            "--input-shape",
            "ids=6",
            "--input-dtype",
            "ids=INT64",
            "--max-batch-size",
            "512",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "parity vs PyTorch on 256 random rows:" in result.output and "output: max abs error" in result.output
    assert "max_batch_size: 512" in (tmp_path / "repo" / "pair" / "config.pbtxt").read_text()
