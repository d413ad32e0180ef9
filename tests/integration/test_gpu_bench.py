"""`python -m tritonkit.benchmarks.gpu`, end to end on whatever this machine has (KIND_CPU without a GPU)."""

from __future__ import annotations

import json

import torch

from tritonkit.benchmarks import gpu


def test_gpu_check_serves_measures_and_reports_every_model_when_run_quick(tmp_path):
    out = tmp_path / "out"
    code = gpu.main(
        ["--out", str(out), "--quick", "--seconds", "1", "--models", "churn_pt,churn_onnx", "--engines", "aio,procs"]
    )
    report = json.loads((out / "gpu.json").read_text())
    assert code == 0
    assert report["kind"] == ("KIND_GPU" if torch.cuda.is_available() else "KIND_CPU")
    assert set(report["models"]) == {"churn_pt", "churn_onnx"} and not report["skipped"]
    for name, model in report["models"].items():
        assert model["parity"]["batch_256"]["ok"] and model["parity"]["single_64"]["ok"], name
        assert model["load"]["requests"] > 0 and model["load"]["errors"] == 0, name
        assert model["load"]["triton"]["inferences"] >= model["load"]["requests"], name
        assert model["load"]["avg_batch"] >= 1, name
    assert report["models"]["churn_pt"]["config"]["backend"] == "pytorch"
    assert report["models"]["churn_onnx"]["config"]["instances"] == "2 x KIND_CPU"
    assert {e: r["requests"] > 0 for e, r in report["engines"].items()} == {"aio": True, "procs": True}
    assert report["engine"] in ("aio", "procs")
    assert "| churn_pt | pytorch |" in (out / "gpu.md").read_text()
    device = "cuda:0" if torch.cuda.is_available() else "cpu"
    assert f"model 'churn_pt': TorchScript on {device}" in (out / "triton.log").read_text()
