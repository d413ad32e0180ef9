"""The offline scenario of `tritonkit bench`: the whole data set through `tritonkit score`, in a child process.

    python -m tritonkit.benchmarks.offline SPEC_JSON

The child runs without gevent (Locust's monkey patching stays in the load process); it prints one
JSON line with each model's rows/s, request latency and client CPU.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from tritonkit.benchmarks import spawn
from tritonkit.benchmarks.workloads import workload_for


def offline_worker(spec: dict) -> dict:
    """score() over `rows` rows of the workload for each model; runs without gevent in its own process."""
    from tritonkit.clients.score import ScoreOptions, score

    workload = workload_for(spec["workload"])
    tmp = Path(spec["tmp"])
    data = tmp / f"offline-{workload.name}.parquet"
    workload.offline_frame(spec["rows"]).to_parquet(data)
    results = {}
    for model in spec["models"]:
        cpu0, start = time.process_time(), time.perf_counter()
        report = score(
            ScoreOptions(
                model=model,
                input=data,
                output=tmp / f"{model}-scored.parquet",
                endpoint=spec["url"],
                id_column=workload.id_column,
                concurrency=spec["concurrency"],
            )
        )
        wall = time.perf_counter() - start
        results[model] = {
            "model": model,
            "rows": report.rows_scored,
            "rows_rejected": report.rows_rejected,
            "rows_per_s": report.rows_per_s,
            "wall_s": report.wall_s,
            "requests": report.requests,
            "request_latency_ms": report.latency_ms,
            "client_cpu_percent": 100.0 * (time.process_time() - cpu0) / max(wall, 1e-9),
        }
    return results


def run_offline(url: str, models: list[str], workload: str, rows: int, concurrency: int, tmp: Path) -> dict:
    """The offline scenario for `models`, one after the other, in one child process (no gevent there)."""
    spec = {
        "url": url,
        "models": models,
        "workload": workload,
        "rows": rows,
        "concurrency": concurrency,
        "tmp": str(tmp),
    }
    done = spawn.run([sys.executable, "-m", "tritonkit.benchmarks.offline", json.dumps(spec)], timeout_s=1800)
    if done.returncode != 0:
        raise RuntimeError(f"offline scenario for {', '.join(models)} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    print(json.dumps(offline_worker(json.loads(sys.argv[1]))))
