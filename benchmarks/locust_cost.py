"""The Locust users beside perf_analyzer on the same server, model and concurrency: what the client itself costs.

    python -m tritonkit.benchmarks.locust_cost [--model churn] [--users 4] [--seconds 10] [--rounds 2]

Exports churn, starts the embedded Triton and runs, alternating per round so that drift on a shared
machine hits every path: perf_analyzer (Triton's C++ load generator, `-b 1 --concurrency-range USERS`),
the kit's Locust gRPC user (pre-serialized requests on a bare channel), the same in Locust's
multi-process mode (`--processes 2`), the HTTP user (FastHttpUser, binary tensors) and, for
comparison, the previous path (TRITONKIT_PROTOCOL=tritonclient: the kit's TritonClient, tensors rebuilt
per call). Each Locust path reports its own CPU per request (client_cost.py). Single-row requests.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from tritonkit.benchmarks import perf_analyzer
from tritonkit.benchmarks.locust_processes import LOCUSTFILE, aggregated_row
from tritonkit.benchmarks.payloads import build_payloads

PATHS = ("perf_analyzer", "locust grpc", "locust grpc --processes 2", "locust http", "locust tritonclient (before)")


def locust(path: str, url: str, model: str, users: int, seconds: float, folder: Path) -> dict:
    """One headless Locust run of `path`; Locust's Aggregated row and the client's own cost."""
    protocol = {"locust http": "http", "locust tritonclient (before)": "tritonclient"}.get(path, "grpc")
    processes = ["--processes", "2"] if "--processes" in path else []
    prefix = folder / path.replace(" ", "_").replace("(", "").replace(")", "").replace("-", "")
    cost_file = Path(f"{prefix}_cost.json")
    users_arg = str(users)
    command = [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--host", url, "--headless", *processes]
    command += ["-u", users_arg, "-r", users_arg, "-t", f"{int(seconds) + 1}s", "--reset-stats"]
    command += ["--csv", str(prefix), "--only-summary", "--loglevel", "WARNING"]
    env = {**os.environ, "TRITONKIT_MODEL": model, "TRITONKIT_PROTOCOL": protocol}
    env["TRITONKIT_CLIENT_COST_FILE"] = str(cost_file)
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=seconds + 120)
    if done.returncode != 0:
        raise RuntimeError(f"{path} failed: {done.stderr[-2000:]}")
    row = aggregated_row(Path(f"{prefix}_stats.csv"))
    cost = json.loads(cost_file.read_text())
    return {
        "infer_per_s": float(row["Requests/s"]),
        "mean_ms": float(row["Average Response Time"]),
        "p99_ms": float(row["99%"]),
        "client_cpu_ms_per_request": cost["cpu_ms_per_request"],
        "client_cpu_percent": cost["cpu_percent"],
        "verdict": cost["verdict"].split(":")[0],
    }


def measure_perf_analyzer(binary: str, url: str, model: str, users: int, seconds: float, folder: Path, meta) -> dict:
    data = perf_analyzer.write_input_data(build_payloads(meta, 1, None, 64, seed=5), folder / "input_data.json")
    window = int(max(1000, seconds * 1000 / 3))
    point = perf_analyzer.measure(binary, url, model, data, folder / "pa.csv", users, window, 25, 6)
    if "error" in point:
        raise RuntimeError(point["error"])
    return {
        "infer_per_s": point["infer_per_s"],
        # perf_analyzer's CSV has no mean; p50 stands in for it in the comparison
        "mean_ms": point["p50_ms"],
        "p99_ms": point["p99_ms"],
        "client_cpu_ms_per_request": None,
        "client_cpu_percent": point["client_cpu_percent"],
        "verdict": "reference",
    }


def run(model: str, users: int, seconds: float, rounds: int, folder: Path) -> dict:
    from tritonkit.clients import TritonClient
    from tritonkit.export.churn import export_churn
    from tritonkit.server import EmbeddedServer

    binary, why = perf_analyzer.ensure()
    if binary is None:
        raise SystemExit(why)
    repository = folder / "repository"
    export_churn(repository, name=model)
    runs: dict[str, list[dict]] = {path: [] for path in PATHS}
    with EmbeddedServer(repository, http_port=0, grpc_port=0, metrics_port=0) as server:
        with TritonClient(server.grpc_url) as client:
            meta = client.metadata(model)
        for r in range(rounds):
            for path in PATHS if r % 2 == 0 else PATHS[::-1]:
                if path == "perf_analyzer":
                    point = measure_perf_analyzer(binary, server.grpc_url, model, users, seconds, folder, meta)
                else:
                    url = server.http_url if path == "locust http" else server.grpc_url
                    point = locust(path, url, model, users, seconds, folder)
                runs[path].append(point)
    return {path: _mean(points) for path, points in runs.items()}


def _mean(points: list[dict]) -> dict:
    merged = dict(points[-1])
    for key in ("infer_per_s", "mean_ms", "p99_ms", "client_cpu_ms_per_request", "client_cpu_percent"):
        values = [p[key] for p in points if p[key] is not None]
        merged[key] = float(np.mean(values)) if values else None
    return merged


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="churn")
    parser.add_argument("--users", type=int, default=4, help="Locust users = perf_analyzer's concurrency")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    load_start = os.getloadavg()
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        results = run(args.model, args.users, args.seconds, args.rounds, Path(tmp))
    reference = results["perf_analyzer"]
    print(
        f"{args.model}, single-row gRPC/HTTP, {args.users} concurrent, {args.seconds:g} s x {args.rounds} rounds; "
        f"load average {load_start[0]:.1f} -> {os.getloadavg()[0]:.1f}; {time.perf_counter() - start:.0f} s"
    )
    print(f"{'path':<30}{'infer/s':>9}{'x pa':>7}{'mean ms':>9}{'p99 ms':>9}{'client ms CPU/req':>19}{'CPU %':>7}  who")
    for path, r in results.items():
        cost = "-" if r["client_cpu_ms_per_request"] is None else f"{r['client_cpu_ms_per_request']:.3f}"
        print(
            f"{path:<30}{r['infer_per_s']:>9,.0f}{r['infer_per_s'] / reference['infer_per_s']:>7.2f}"
            f"{r['mean_ms']:>9.2f}{r['p99_ms']:>9.2f}{cost:>19}{r['client_cpu_percent']:>7.0f}  {r['verdict']}"
        )
    if args.json:
        args.json.write_text(json.dumps({"load_average_start": load_start, "results": results}, indent=2))


if __name__ == "__main__":
    main()
