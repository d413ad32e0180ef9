"""The GPU check's report: parity of served churn outputs, and gpu.json / gpu.md written atomically."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from tritonkit import atomic
from tritonkit.export.churn import LABEL_THRESHOLD, SEGMENT_BOUNDS

PROBABILITY_ATOL = 1e-5  # float32 on another device: a few ulps of a probability
NEAR_BOUND = 1e-5  # a label or segment that flips this close to its threshold is rounding, not a defect


def parity_rows(got: dict[str, np.ndarray], expected: dict[str, np.ndarray]) -> dict:
    """Churn outputs `got` against `expected`: the probability's largest error and label/segment disagreements.

    `ok` needs the same shapes, the probability within PROBABILITY_ATOL and no disagreement farther
    than NEAR_BOUND from a threshold.
    """
    shapes = {name: (list(np.shape(got.get(name))), list(np.shape(value))) for name, value in expected.items()}
    if any(a != b for a, b in shapes.values()):
        return {"ok": False, "rows": len(expected["probability"]), "shapes (got, expected)": shapes}
    probability = expected["probability"].astype(np.float64).reshape(-1)
    bounds = np.array([LABEL_THRESHOLD, *SEGMENT_BOUNDS])
    near = np.abs(probability[:, None] - bounds[None, :]).min(axis=1) <= NEAR_BOUND
    differ = {
        name: got[name].reshape(-1) != expected[name].reshape(-1) for name in ("label", "risk_segment") if name in got
    }
    error = float(np.abs(got["probability"].astype(np.float64).reshape(-1) - probability).max(initial=0.0))
    far = int(sum(int((d & ~near).sum()) for d in differ.values()))
    return {
        "ok": error <= PROBABILITY_ATOL and far == 0,
        "rows": len(probability),
        "probability_max_abs_error": error,
        "label_or_segment_mismatches": far,
        "mismatches_at_a_threshold": int(sum(int((d & near).sum()) for d in differ.values())),
    }


def _num(value, digits: int = 2) -> str:
    if value is None:
        return "-"
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.{digits}f}"


def _parity_cell(parity: dict | None) -> str:
    if not parity:
        return "-"
    if "error" in parity:
        return "FAILED: " + parity["error"][:80]
    parts = [parity.get("batch_256", {}), parity.get("single_64", {})]
    if all(p.get("ok") for p in parts):
        return f"ok (max abs {max(p['probability_max_abs_error'] for p in parts):.1e})"
    return "MISMATCH " + json.dumps(parts)[:200]


def markdown(report: dict) -> str:
    env = report["environment"]
    lines = [
        f"GPU check: {env.get('gpu') or 'no GPU'}, {env['cpu_count']} cores, Python {env['python']}, torch "
        f"{env['torch']}, numpy {env['numpy']}; instances {report['kind']}; {report['seconds']:g} s per run, "
        f"{16} concurrent single-row gRPC clients.",
        "",
    ]
    if report.get("kind_gpu_refused"):
        lines += [f"KIND_GPU was refused, served as KIND_MODEL: {report['kind_gpu_refused']}", ""]
    lines += ["| in process | single row/s | p50 ms | p99 ms | 4096-row batches, rows/s |", "|---|---|---|---|---|"]
    for ref in report.get("in_process", []):
        lines.append(
            f"| torch {ref['device']} | {_num(ref['single_row_per_s'])} | {ref['p50_ms']:.3f} | "
            f"{ref['p99_ms']:.3f} | {_num(ref['batch_4096_rows_per_s'])} |"
        )
    gpu_parity = report.get("parity_in_process_gpu")
    if gpu_parity:
        verdict = "ok" if gpu_parity["ok"] else "MISMATCH"
        lines += ["", f"torch on the GPU against torch on the CPU, in process: {verdict} {json.dumps(gpu_parity)}"]
    if report.get("engines"):
        lines += ["", "| client engine (first model) | infer/s | p50 ms | p99 ms | errors |", "|---|---|---|---|---|"]
        for name, run in report["engines"].items():
            mark = " (used)" if name == report.get("engine") else ""
            lines.append(
                f"| {name}{mark} | {_num(run['infer_per_s'])} | {_num(run['p50_ms'])} | {_num(run['p99_ms'])} | "
                f"{run['errors']} |"
            )
    lines += [
        "",
        "| model | backend | instances | queue delay us | infer/s | p50 ms | p99 ms | avg batch | queue us | "
        "compute us | errors | parity vs torch in process |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, model in report.get("models", {}).items():
        config, load = model.get("config", {}), model.get("load", {})
        batching = config.get("dynamic_batching")
        lines.append(
            f"| {name} | {config.get('backend', '-')} | {config.get('instances', '-')} | "
            f"{'off' if batching is None else batching['max_queue_delay_us']} | {_num(load.get('infer_per_s'))} | "
            f"{_num(load.get('p50_ms'))} | {_num(load.get('p99_ms'))} | {_num(load.get('avg_batch'))} | "
            f"{_num(load.get('queue_us'), 0)} | {_num(load.get('compute_us'), 0)} | {load.get('errors', '-')} | "
            f"{_parity_cell(model.get('parity'))} |"
        )
    for name, reason in report.get("skipped", {}).items():
        lines.append(f"\n{name} skipped: {reason}")
    return "\n".join(lines) + "\n"


def write_report(out: Path, report: dict) -> None:
    """`out/gpu.json` and `out/gpu.md`, replaced atomically (a run cut short keeps the last complete step)."""
    atomic.write_text(out / "gpu.json", json.dumps(report, indent=2, default=str) + "\n")
    atomic.write_text(out / "gpu.md", markdown(report))
