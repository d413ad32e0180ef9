"""Triton's perf_analyzer as the load of the dynamic-batching comparison: on and off, same load, one run.

perf_analyzer 2.51 (the embedded server's version) ships inside the tritonclient 2.51.0 wheel;
`scripts/ensure-perf-analyzer.sh` installs it as `<venv>/bin/perf_analyzer` (`make test` runs it).
Each model gets N concurrent single-row clients over gRPC (`-b 1 --concurrency-range N`), measured
in time windows until three agree within the stability percentage; the inputs are the same rows the
Locust users send (`--input-data`, a JSON file). Reported: the client's infer/s and p50/p90/p99,
Triton's own split (queue, compute), the average batch Triton ran, and perf_analyzer's CPU.
"""

from __future__ import annotations

import csv
import json
import os
import re
import resource
import shutil
import sys
import time
from pathlib import Path

import numpy as np

from tritonkit.benchmarks import spawn

VERSION = "2.51.0"
ENSURE_SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "ensure-perf-analyzer.sh"
UNSTABLE = "Failed to obtain stable measurement"
# The retry after an unstable measurement (max/min of the last 3 windows within 11x): reported, flagged unstable.
RELAXED_STABILITY_PERCENT = 1000


def find() -> str | None:
    """The perf_analyzer next to this Python (the venv's wrapper), else the first on PATH."""
    beside = Path(sys.executable).parent / "perf_analyzer"
    return str(beside) if beside.is_file() else shutil.which("perf_analyzer")


def ensure(log=print) -> tuple[str | None, str]:
    """(path, "") when perf_analyzer is there or could be installed; (None, why not) otherwise."""
    found = find()
    if found:
        return found, ""
    if not ENSURE_SCRIPT.is_file():
        return None, (
            "perf_analyzer is not installed: from a tritonkit checkout run "
            "`bash scripts/ensure-perf-analyzer.sh`, or put perf_analyzer 2.51 on PATH"
        )
    log("perf_analyzer is not installed: running scripts/ensure-perf-analyzer.sh")
    done = spawn.run(["bash", str(ENSURE_SCRIPT)], timeout_s=1800, env={**os.environ, "VENV": sys.prefix})
    if done.returncode != 0:
        return None, f"scripts/ensure-perf-analyzer.sh failed: {done.stderr.strip()[-500:]}"
    found = find()
    return (found, "") if found else (None, "scripts/ensure-perf-analyzer.sh ran but perf_analyzer is not found")


def write_input_data(payloads: list[dict[str, np.ndarray]], path: Path) -> Path:
    """perf_analyzer's --input-data JSON: one entry per single-row payload, without the batch dimension."""
    entries = []
    for arrays in payloads:
        entry = {}
        for name, array in arrays.items():
            row = np.asarray(array)[0]
            flat = row.reshape(-1)
            values = (
                [v.decode() if isinstance(v, bytes) else str(v) for v in flat]
                if flat.dtype == object
                else flat.tolist()
            )
            entry[name] = {"content": values, "shape": list(row.shape)}
        entries.append(entry)
    path.write_text(json.dumps({"data": entries}))
    return path


def _command(
    binary: str,
    url: str,
    model: str,
    concurrency: int,
    window_ms: int,
    stability: float,
    max_trials: int,
    input_data: Path,
    csv_path: Path,
) -> list[str]:
    return [
        binary,
        "-m",
        model,
        "-u",
        url,
        "-i",
        "grpc",
        "-b",
        "1",
        "--concurrency-range",
        str(concurrency),
        "--measurement-mode",
        "time_windows",
        "--measurement-interval",
        str(window_ms),
        "--percentile=99",
        "--stability-percentage",
        f"{stability:g}",
        "--max-trials",
        str(max_trials),
        "--input-data",
        str(input_data),
        "-f",
        str(csv_path),
    ]


_COMPOSING = re.compile(r"^\s*(\S+), version: \S+\n\s*Inference count: (\d+)\n\s*Execution count: (\d+)", re.MULTILINE)


def _avg_batches(stdout: str) -> tuple[float | None, dict[str, float]]:
    """Triton's inferences / executions for the model and, for an ensemble, each composing model."""
    own = stdout.split("Composing models:")[0]
    inferences = re.search(r"Inference count: (\d+)", own)
    executions = re.search(r"Execution count: (\d+)", own)
    batch = (
        round(int(inferences.group(1)) / int(executions.group(1)), 2)
        if inferences and executions and int(executions.group(1))
        else None
    )
    composing = {name: round(int(i) / int(e), 2) for name, i, e in _COMPOSING.findall(stdout) if int(e)}
    return batch, composing


def measure(
    binary: str,
    url: str,
    model: str,
    input_data: Path,
    csv_path: Path,
    concurrency: int = 16,
    window_ms: int = 2000,
    stability: float = 25,
    max_trials: int = 6,
) -> dict:
    """One perf_analyzer run; retried once with a relaxed stability percentage when it does not settle."""
    attempts = [stability, max(stability, RELAXED_STABILITY_PERCENT)]
    for attempt, percent in enumerate(attempts):
        command = _command(binary, url, model, concurrency, window_ms, percent, max_trials, input_data, csv_path)
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        done = spawn.run(command, timeout_s=60 + window_ms / 1000 * (max_trials + 2) * 2)
        wall = time.perf_counter() - start
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if done.returncode == 0 and csv_path.is_file():
            break
        if UNSTABLE not in done.stdout + done.stderr or attempt == len(attempts) - 1:
            return {"model": model, "error": (done.stdout + done.stderr).strip()[-800:], "command": " ".join(command)}
    with open(csv_path, newline="") as handle:
        row = next(r for r in csv.DictReader(handle) if int(r["Concurrency"]) == concurrency)
    batch, composing = _avg_batches(done.stdout)
    cpu_s = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {
        "model": model,
        "concurrency": concurrency,
        "batch_size": 1,
        "protocol": "grpc",
        "infer_per_s": float(row["Inferences/Second"]),
        **{f"p{q}_ms": int(row[f"p{q} latency"]) / 1000 for q in (50, 90, 95, 99)},
        "server_queue_ms": int(row["Server Queue"]) / 1000,
        "server_compute_ms": sum(
            int(row[k]) for k in ("Server Compute Input", "Server Compute Infer", "Server Compute Output")
        )
        / 1000,
        # an ensemble runs once per request: its composing models are where batching shows
        "server_avg_batch": max(composing.values()) if composing else batch,
        "composing_avg_batch": composing,
        "stable": percent == stability,
        "stability_percent": percent,
        "client_cpu_percent": round(100 * cpu_s / max(wall, 1e-9), 1),
        "command": " ".join(command),
    }


def dynamic_batching(
    binary: str, url: str, model: str, twin: str | None, payloads: list, folder: Path, rounds: int = 1, **settings
) -> dict:
    """`model` (dynamic batching) and `twin` (none) under the same perf_analyzer load, alternating per round."""
    folder.mkdir(parents=True, exist_ok=True)
    input_data = write_input_data(payloads, folder / "input_data.json")
    models = [model] + ([twin] if twin else [])
    runs: dict[str, list[dict]] = {m: [] for m in models}
    for r in range(rounds):
        for m in models if r % 2 == 0 else models[::-1]:  # alternate the order: drift hits both sides
            runs[m].append(measure(binary, url, m, input_data, folder / f"{m}_round{r + 1}.csv", **settings))
    points = {m: _mean(rs) for m, rs in runs.items()}
    on, off = points[model], points.get(twin) if twin else None
    ratio = (
        on["infer_per_s"] / off["infer_per_s"]
        if off and "error" not in on and "error" not in off and off["infer_per_s"]
        else None
    )
    return {
        "tool": f"perf_analyzer {VERSION}",
        "on": model,
        "off": twin,
        "rounds": rounds,
        "concurrency": settings.get("concurrency", 16),
        "points": points,
        "runs": runs,
        "ratio_infer_per_s": ratio,
        "ratio_p99": (on["p99_ms"] / off["p99_ms"]) if ratio else None,
    }


def _mean(results: list[dict]) -> dict:
    ok = [r for r in results if "error" not in r]
    if not ok:
        return results[-1]
    merged = dict(ok[-1])
    for key in (
        "infer_per_s",
        "p50_ms",
        "p90_ms",
        "p95_ms",
        "p99_ms",
        "server_queue_ms",
        "server_compute_ms",
        "client_cpu_percent",
    ):
        merged[key] = float(np.mean([r[key] for r in ok]))
    batches = [r["server_avg_batch"] for r in ok if r["server_avg_batch"]]
    merged["server_avg_batch"] = round(float(np.mean(batches)), 2) if batches else None
    merged["stable"] = all(r["stable"] for r in ok)
    merged["rounds_measured"] = len(ok)
    return merged
