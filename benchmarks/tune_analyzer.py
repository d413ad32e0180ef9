"""The real-time sweep through Triton's own model_analyzer (PyPI triton-model-analyzer), driven with the kit's settings.

model_analyzer runs here in its local launch mode: it starts the embedded server's tritonserver binary
itself, with the backend directory the kit assembles (Python backend, its stub, the Python-based
onnxruntime backend), the libraries on LD_LIBRARY_PATH and the server environment's Python first on PATH,
as server/embedded.py does. Its manual search space is the kit's real-time grid (instance count x
onnxruntime threads x max queue delay x preferred batch sizes); it sweeps concurrency with
perf_analyzer (single-row requests) and ranks configs by throughput under the p99 budget. Its CSV,
HTML summary and plots are copied into the report folder; the kit's report is built from its CSV.
CPU only (cpu_only: the machine has no GPU, and DCGM is not needed); ensembles use the kit's sweep.
"""

from __future__ import annotations

import csv
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

from tritonkit.benchmarks.tune_grid import THREADS, describe
from tritonkit.model_config import ModelConfig

SUMMARY = "model_analyzer"


def find() -> str | None:
    """model-analyzer beside this Python (the venv), else on PATH."""
    beside = Path(sys.executable).parent / "model-analyzer"
    return str(beside) if beside.is_file() else shutil.which("model-analyzer")


def _search_space(candidates, budget_ms: float, levels: tuple[int, ...]) -> dict:
    """The candidates' values as model_analyzer's manual search space (it sweeps their product)."""
    instances = sorted({c.instances for c in candidates})
    threads = sorted({str(c.threads) for c in candidates})
    delays = sorted({c.max_queue_delay_us for c in candidates})
    batching = {"max_queue_delay_microseconds": delays}
    preferred = sorted({c.preferred_batch_sizes for c in candidates if c.preferred_batch_sizes})
    if preferred:
        batching["preferred_batch_size"] = [list(p) for p in preferred]
    return {
        "cpu_only": True,
        "model_config_parameters": {
            "instance_group": [[{"kind": "KIND_CPU", "count": instances}]],
            "dynamic_batching": batching,
            "parameters": {THREADS: {"string_value": threads}},
        },
        "parameters": {"concurrency": list(levels), "batch_sizes": [1]},
        "constraints": {"perf_latency_p99": {"max": budget_ms}},
        "objectives": ["perf_throughput"],
    }


def config(model: str, repository: Path, workdir: Path, perf_analyzer: str, search: dict) -> dict:
    """model_analyzer's YAML config (as a dict): local launch of the kit's tritonserver, the kit's settings."""
    from tritonkit.server.embedded import TritonInstall, assemble_backends, free_port
    from tritonkit.server.environment import groups_for_repository

    install = TritonInstall.locate(groups_for_repository(repository))
    backends = assemble_backends(install, workdir / "backends")
    env = install.environment(os.environ)
    http, grpc, metrics = (free_port() for _ in range(3))
    return {
        "model_repository": str(repository),
        "output_model_repository_path": str(workdir / "output"),
        "override_output_model_repository": True,
        "checkpoint_directory": str(workdir / "checkpoints"),
        "export_path": str(workdir / "export"),
        "profile_models": {model: search},
        "run_config_search_disable": True,
        "triton_launch_mode": "local",
        "triton_server_path": str(install.binary),
        "triton_server_flags": {"backend_directory": str(backends)},
        "triton_server_environment": {
            "LD_LIBRARY_PATH": env["LD_LIBRARY_PATH"],
            "PATH": env["PATH"],
            "TRITONKIT_MODEL_REPOSITORIES": str(workdir / "output"),
        },
        "triton_http_endpoint": f"127.0.0.1:{http}",
        "triton_grpc_endpoint": f"127.0.0.1:{grpc}",
        "triton_metrics_url": f"http://127.0.0.1:{metrics}/metrics",
        "perf_analyzer_path": perf_analyzer,
        "perf_analyzer_flags": {"measurement-interval": 1000, "stability-percentage": 50},
    }


def run(binary: str, settings: dict, workdir: Path, out: Path, timeout_s: float) -> Path:
    """`model-analyzer profile -f config.yaml`; copies its results and reports to out/model_analyzer; its CSV."""
    import yaml

    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / "config.yaml"
    path.write_text(yaml.safe_dump(settings, sort_keys=False))
    with open(workdir / "model_analyzer.log", "w") as log:
        # its own session: on a timeout the tritonserver it launched goes down with it
        child = subprocess.Popen(
            [binary, "profile", "-f", str(path)], stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            code = child.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(child.pid, signal.SIGKILL)
            child.wait()
            raise RuntimeError(f"model-analyzer profile did not finish within {timeout_s:.0f} s") from None
    if code != 0:
        tail = (workdir / "model_analyzer.log").read_text()[-1500:]
        raise RuntimeError(f"model-analyzer profile exited {code}: {tail}")
    target = out / SUMMARY
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(workdir / "export", target)
    shutil.copy2(path, target / "config.yaml")
    shutil.copy2(workdir / "model_analyzer.log", target / "model_analyzer.log")
    return target / "results" / "metrics-model-inference.csv"


def trials(csv_path: Path, output: Path, budget_ms: float) -> list[dict]:
    """One record per config model_analyzer measured: its candidate, best throughput within the budget, p99."""
    by_config: dict[str, list[dict]] = {}
    with open(csv_path, newline="") as handle:
        for row in csv.DictReader(handle):
            by_config.setdefault(row["Model Config Path"], []).append(row)
    records = []
    for name, rows in by_config.items():
        candidate = describe(ModelConfig.read(output / name, strict=False))
        points = [
            {
                "concurrency": int(r["Concurrency"]),
                "infer_per_s": float(r["Throughput (infer/sec)"]),
                "p99_ms": float(r["p99 Latency (ms)"]),
            }
            for r in rows
        ]
        within = [p for p in points if p["p99_ms"] <= budget_ms]
        best = max(within, key=lambda p: p["infer_per_s"]) if within else None
        records.append(
            {
                "candidate": candidate.to_dict(),
                "model_analyzer_config": name,
                "throughput": best["infer_per_s"] if best else 0.0,
                "p99_ms": best["p99_ms"] if best else min(p["p99_ms"] for p in points),
                "concurrency": best["concurrency"] if best else None,
                "points": points,
                "default": name.endswith("_config_default"),
            }
        )
    return sorted(records, key=lambda r: not r["default"])  # the starting config first
