"""`tritonkit export torch --format torchscript`: model.pt with a `backend: "pytorch"` config, checked against torch."""

from __future__ import annotations

import sys
import textwrap

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from tritonkit.cli import app
from tritonkit.errors import ExportError, UsageError
from tritonkit.export.options import ExportOptions
from tritonkit.export.sklearn import export_sklearn
from tritonkit.export.torch_source import export_torch
from tritonkit.model_config import ModelConfig

NETS = textwrap.dedent("""
    import torch

    class Scorer(torch.nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.dense = torch.nn.Linear(3, 4)
            self.embedding = torch.nn.Embedding(10, 4)

        def forward(self, x, ids):
            hidden = self.dense(x) + self.embedding(ids).mean(1)
            return {"hidden": hidden, "total": hidden.sum(-1), "positive": hidden > 0}

    class Pair(torch.nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(1)
            self.dense = torch.nn.Linear(5, 2)

        def forward(self, features):
            logits = self.dense(features)
            return torch.softmax(logits, -1), logits.argmax(-1, keepdim=True)

    class Scaled(torch.nn.Module):
        def forward(self, x):
            return x / float(x.abs().max())  # a Python float: tracing records the example's value

    class Rows(torch.nn.Module):
        def forward(self, x):
            out = torch.empty_like(x)
            for i in range(x.size(0)):
                if bool(x[i].sum() > 0):
                    out[i] = x[i] * 2.0
                else:
                    out[i] = x[i] - 1.0
            return out
""")


@pytest.fixture
def nets(tmp_path, monkeypatch):
    """A user's model file, importable as `unit_ts_nets`."""
    (tmp_path / "unit_ts_nets.py").write_text(NETS)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "unit_ts_nets", raising=False)
    import unit_ts_nets

    return unit_ts_nets


def _load(path):
    return torch.jit.load(str(path), map_location="cpu").eval()


def test_export_torch_writes_torchscript_and_pytorch_config_when_format_torchscript(tmp_path, nets):
    result = export_torch(
        ExportOptions(tmp_path / "repo", "scorer", format="torchscript", kind="KIND_GPU"),
        factory="unit_ts_nets:Scorer",
        input_shapes=["x=3", "ids=2"],
        input_dtypes=["ids=INT64"],
    )
    assert result.path == tmp_path / "repo" / "scorer" / "1" / "model.pt"
    assert sorted(p.name for p in result.path.parent.iterdir()) == ["model.pt"]
    config = ModelConfig.read(tmp_path / "repo" / "scorer" / "config.pbtxt")
    assert config.backend == "pytorch" and config.max_batch_size == 4096
    assert [(t.name, t.dtype, t.dims) for t in config.inputs] == [("x", "FP32", (3,)), ("ids", "INT64", (2,))]
    assert [(t.name, t.dtype, t.dims, t.reshape) for t in config.outputs] == [
        ("hidden", "FP32", (4,), None),
        ("total", "FP32", (1,), ()),
        ("positive", "BOOL", (4,), None),
    ]
    assert [(g.count, g.kind) for g in config.instance_groups] == [(1, "KIND_GPU")]
    assert config.parameters == {"INTRA_OP_THREAD_COUNT": "1", "INTER_OP_THREAD_COUNT": "1"}
    assert [p.output for p in result.parity] == ["hidden", "total", "positive"]
    loaded = _load(result.path)
    assert [a.name for a in loaded.forward.schema.arguments[1:]] == ["x", "ids"], "names kept through the wrapper"
    x, ids = torch.randn(7, 3), torch.randint(0, 10, (7, 2))
    with torch.no_grad():
        hidden, total, positive = loaded(x, ids)
        expected = nets.Scorer().eval()(x, ids)
    torch.testing.assert_close(hidden, expected["hidden"])
    torch.testing.assert_close(total, expected["total"])
    assert torch.equal(positive, expected["positive"])


def test_export_torch_keeps_scripted_control_flow_when_source_is_torchscript(tmp_path, nets):
    torch.jit.script(nets.Rows()).save(str(tmp_path / "rows.pt"))
    result = export_torch(
        ExportOptions(tmp_path / "repo", "rows", format="torchscript"),
        model_file=tmp_path / "rows.pt",
        input_shapes=["x=4"],
    )
    x = torch.cat([torch.full((2, 4), 0.5), torch.full((3, 4), -0.5)])
    with torch.no_grad():
        torch.testing.assert_close(_load(result.path)(x), torch.cat([x[:2] * 2, x[2:] - 1]))
    assert ModelConfig.read(tmp_path / "repo" / "rows" / "config.pbtxt").outputs[0].name == "output"


def test_export_torch_names_tuple_outputs_and_computes_in_fp16_when_fp16(tmp_path, nets):
    result = export_torch(
        ExportOptions(tmp_path / "repo", "pair", format="torchscript", fp16=True, output_names=("proba", "label")),
        factory="unit_ts_nets:Pair",
        input_shapes=["features=5"],
    )
    config = ModelConfig.read(tmp_path / "repo" / "pair" / "config.pbtxt")
    assert [(t.name, t.dtype) for t in config.inputs] == [("features", "FP16")]
    assert [(t.name, t.dtype) for t in config.outputs] == [("proba", "FP16"), ("label", "INT64")]
    assert all(p.atol >= 1e-2 for p in result.parity)
    features = torch.randn(6, 5)
    with torch.no_grad():
        proba, _ = _load(result.path)(features.half())
        expected, _ = nets.Pair().eval()(features.half().float())
    assert proba.dtype == torch.float16
    np.testing.assert_allclose(proba.float().numpy(), expected.numpy(), atol=1e-2)


def test_export_torch_raises_export_error_and_keeps_repository_when_tracing_bakes_a_value_in(tmp_path, nets):
    with pytest.raises(ExportError, match="does not match its source"):
        export_torch(
            ExportOptions(tmp_path / "repo", "scaled", format="torchscript"),
            factory="unit_ts_nets:Scaled",
            input_shapes=["x=3"],
        )
    assert not (tmp_path / "repo" / "scaled").exists(), "a failed first export leaves no model folder"


def test_export_torch_raises_export_error_when_traced_file_fails_on_other_batch_sizes(tmp_path, nets):
    with pytest.raises(ExportError, match="fails on"):
        export_torch(
            ExportOptions(tmp_path / "repo", "rows", format="torchscript"),
            factory="unit_ts_nets:Rows",
            input_shapes=["x=4"],
        )


def test_export_options_raise_usage_error_when_torchscript_meets_onnx_only_options(tmp_path):
    with pytest.raises(UsageError, match="--opset"):
        ExportOptions(tmp_path, "m", format="torchscript", opset=17)
    with pytest.raises(UsageError, match="torchscript exports PyTorch models"):
        export_sklearn(tmp_path / "model.joblib", ExportOptions(tmp_path, "m", format="torchscript"))


def test_cli_export_torch_writes_model_pt_and_prints_parity_when_format_torchscript(tmp_path, nets):
    result = CliRunner().invoke(
        app,
        [
            "export",
            "torch",
            "--model",
            "unit_ts_nets:Pair",
            "--input-shape",
            "features=5",
            "--format",
            "torchscript",
            "--name",
            "pair",
            "-r",
            str(tmp_path / "repo"),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "model.pt" in result.output and "output_0: max abs error" in result.output
    assert (tmp_path / "repo" / "pair" / "1" / "model.pt").is_file()
