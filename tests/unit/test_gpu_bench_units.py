"""The GPU check's pieces that run anywhere: parity of churn outputs, the report, options, configs, row transport."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tritonkit.benchmarks import closed_loop, gpu
from tritonkit.benchmarks.gpu_report import markdown, parity_rows, write_report
from tritonkit.model_config import DynamicBatching, InstanceGroup, ModelConfig, TensorSpec


def _outputs(probability: list[float]) -> dict[str, np.ndarray]:
    p = np.asarray(probability, np.float32).reshape(-1, 1)
    return {
        "probability": p,
        "label": (p >= 0.5).astype(np.int64),
        "risk_segment": ((p >= 0.3).astype(np.int64) + (p >= 0.6).astype(np.int64)),
    }


def test_parity_rows_is_ok_when_outputs_agree_within_float_error():
    expected = _outputs([0.1, 0.45, 0.7])
    got = _outputs([0.1 + 1e-7, 0.45, 0.7 - 1e-7])
    result = parity_rows(got, expected)
    assert result["ok"] and result["rows"] == 3 and 0 < result["probability_max_abs_error"] < 1e-6


def test_parity_rows_fails_when_a_label_differs_away_from_its_threshold():
    expected = _outputs([0.1, 0.9])
    got = _outputs([0.1, 0.9])
    got["label"][1] = 0
    result = parity_rows(got, expected)
    assert not result["ok"] and result["label_or_segment_mismatches"] == 1


def test_parity_rows_counts_flips_at_a_threshold_apart_when_probability_sits_on_it():
    expected = _outputs([0.5 - 1e-7, 0.2])
    got = _outputs([0.5 + 1e-7, 0.2])
    result = parity_rows(got, expected)
    assert result["ok"] and result["mismatches_at_a_threshold"] == 1 and result["label_or_segment_mismatches"] == 0


def test_parity_rows_fails_when_outputs_arrive_empty():
    expected = _outputs([0.1, 0.2])
    got = {name: np.zeros((0,) + value.shape[1:], value.dtype) for name, value in expected.items()}
    assert parity_rows(got, expected)["ok"] is False


def test_markdown_lists_each_model_engine_and_skip_when_report_is_complete(tmp_path):
    load = {"infer_per_s": 12345.6, "p50_ms": 1.2, "p99_ms": 3.4, "avg_batch": 6.5, "queue_us": 80, "compute_us": 150}
    ok = {"ok": True, "probability_max_abs_error": 3e-8}
    report = {
        "environment": {"gpu": "NVIDIA H100", "cpu_count": 16, "python": "3.12.3", "torch": "2.11", "numpy": "2.5"},
        "kind": "KIND_GPU",
        "seconds": 10.0,
        "in_process": [
            {"device": "cuda", "single_row_per_s": 9000, "p50_ms": 0.1, "p99_ms": 0.2, "batch_4096_rows_per_s": 1e8}
        ],
        "engines": {"aio": {**load, "errors": 0}, "procs": {**load, "infer_per_s": 20000.0, "errors": 0}},
        "engine": "procs",
        "parity_in_process_gpu": {"ok": True, "probability_max_abs_error": 6e-8},
        "models": {
            "churn_pt": {
                "config": {
                    "backend": "pytorch",
                    "instances": "1 x KIND_GPU",
                    "dynamic_batching": {"max_queue_delay_us": 0},
                },
                "load": {**load, "errors": 0},
                "parity": {"batch_256": ok, "single_64": ok},
            },
            "churn_pt_nobatch": {
                "config": {"backend": "pytorch", "instances": "1 x KIND_GPU", "dynamic_batching": None}
            },
        },
        "skipped": {"churn_onnx": "ONNX export failed: boom"},
    }
    text = markdown(report)
    assert "| churn_pt | pytorch | 1 x KIND_GPU | 0 | 12,346 | 1.20 | 3.40 | 6.50 |" in text
    assert "| churn_pt_nobatch | pytorch | 1 x KIND_GPU | off | - |" in text
    assert "| procs (used) | 20,000 |" in text and "ok (max abs 3.0e-08)" in text
    assert "churn_onnx skipped: ONNX export failed: boom" in text
    assert "torch on the GPU against torch on the CPU, in process: ok" in text
    write_report(tmp_path, report)
    assert json.loads((tmp_path / "gpu.json").read_text())["engine"] == "procs"
    assert (tmp_path / "gpu.md").read_text() == text


def test_parse_picks_quick_defaults_and_refuses_unknown_names_when_given(tmp_path):
    args = gpu.parse(["--out", str(tmp_path), "--quick"])
    assert args.seconds == 3.0 and args.models == list(gpu.QUICK_MODELS) and args.engines == list(closed_loop.ENGINES)
    assert gpu.parse(["--out", str(tmp_path), "--seconds", "7"]).models == list(gpu.MODELS)
    with pytest.raises(SystemExit):
        gpu.parse(["--out", str(tmp_path), "--models", "churn_pt,resnet"])
    with pytest.raises(SystemExit):
        gpu.parse(["--out", str(tmp_path), "--engines", "locust"])


def test_as_kind_model_rewrites_only_gpu_instances_when_gpu_was_refused(tmp_path):
    common = {"max_batch_size": 8, "inputs": [TensorSpec("x", "FP32", [1])], "outputs": [TensorSpec("y", "FP32", [1])]}
    configs = {
        "g": ModelConfig("g", backend="pytorch", instance_groups=[InstanceGroup(1, "KIND_GPU")], **common),
        "c": ModelConfig("c", backend="onnxruntime", instance_groups=[InstanceGroup(2, "KIND_CPU")], **common),
    }
    changed = gpu.as_kind_model(tmp_path, configs)
    assert [g.kind for g in changed["g"].instance_groups] == ["KIND_MODEL"]
    assert changed["c"] == configs["c"]
    assert ModelConfig.read(tmp_path / "g" / "config.pbtxt").instance_groups[0].kind == "KIND_MODEL"


def test_twin_copies_the_versions_and_changes_only_the_config_when_made(tmp_path):
    source = ModelConfig(
        "churn_pt",
        backend="pytorch",
        max_batch_size=8,
        inputs=[TensorSpec("x", "FP32", [1])],
        outputs=[TensorSpec("y", "FP32", [1])],
        dynamic_batching=DynamicBatching(),
    )
    (tmp_path / "churn_pt" / "1").mkdir(parents=True)
    (tmp_path / "churn_pt" / "1" / "model.pt").write_bytes(b"torchscript")
    source.write(tmp_path / "churn_pt")
    twin = gpu._twin(tmp_path, source, "churn_pt_nobatch", dynamic_batching=None)
    assert (tmp_path / "churn_pt_nobatch" / "1" / "model.pt").read_bytes() == b"torchscript"
    assert ModelConfig.read(tmp_path / "churn_pt_nobatch" / "config.pbtxt") == twin
    assert twin.dynamic_batching is None and twin.name == "churn_pt_nobatch" and twin.inputs == source.inputs


def test_rows_survive_the_trip_to_a_load_process_when_encoded():
    rows = [{"a": np.array([[1.5]], np.float32), "b": np.array([[3, 4]], np.int64)}]
    back = closed_loop._decode_rows(json.loads(json.dumps(closed_loop._encode_rows(rows))))
    assert back[0]["a"].dtype == np.float32 and back[0]["b"].dtype == np.int64
    np.testing.assert_array_equal(back[0]["b"], rows[0]["b"])
    np.testing.assert_array_equal(back[0]["a"], rows[0]["a"])


def test_closed_loop_refuses_an_unknown_engine_when_run():
    with pytest.raises(ValueError, match="expected one of aio, threads, procs"):
        closed_loop.run("locust", "127.0.0.1:1", "m", [])
