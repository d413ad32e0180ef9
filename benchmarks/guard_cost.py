"""What the guard costs per request: single-row churn over HTTP through the guard and straight to Triton.

    python -m tritonkit.benchmarks.guard_cost [--requests 2000] [--rounds 10] [--json out.json]

Exports the churn example to a temporary repository and runs `tritonkit serve` as a child process, as
it is deployed: the guard in the serve process on the public HTTP port, Triton's own HTTP on loopback
behind it. The same client then sends sequential single-row requests (tritonclient HTTP, binary data,
one keep-alive connection) to both ports of the one Triton, in alternating rounds so that drift in the
machine's load hits both alike, and reports p50/p99 for each and the difference, plus the CPU time the
serve process (where the guard runs; Triton is its child) spends per request on each path.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil

from tritonkit.clients import TritonClient
from tritonkit.export.churn import FEATURES, export_churn, synthetic_customers
from tritonkit.server import free_port

_INTERNAL = re.compile(r"Triton's own HTTP on ([0-9.]+:\d+)")


def _serve(repository: Path, log: Path) -> tuple[subprocess.Popen, str, str]:
    """`tritonkit serve` on free ports; returns (process, guard URL, Triton's own HTTP URL)."""
    ports = {name: free_port() for name in ("http", "grpc", "metrics", "kit-metrics")}
    options = [x for name, port in ports.items() for x in (f"--{name}-port", str(port))]
    command = [sys.executable, "-m", "tritonkit.cli", "serve", "--model-repository", str(repository)]
    process = subprocess.Popen(
        [*command, "--log-file", str(log), *options], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    for line in process.stdout:
        found = _INTERNAL.search(line)
        if found:
            return process, f"127.0.0.1:{ports['http']}", found.group(1)
    raise RuntimeError(f"tritonkit serve did not start (exit code {process.wait()})")


def _round(client: TritonClient, rows: list[dict], requests: int) -> list[float]:
    samples = []
    for i in range(requests):
        start = time.perf_counter()
        client.infer_arrays("churn", rows[i % len(rows)])
        samples.append((time.perf_counter() - start) * 1000)
    return samples


def run(requests: int, rounds: int) -> dict:
    frame = synthetic_customers(1000, seed=3)
    rows = [{f: frame[[f]].to_numpy(np.float32)[i : i + 1] for f in FEATURES} for i in range(1000)]
    with tempfile.TemporaryDirectory(prefix="tritonkit-guard-bench-") as tmp:
        repository = Path(tmp) / "repository"
        export_churn(repository)
        process, guard_url, triton_url = _serve(repository, Path(tmp) / "triton.log")
        try:
            clients = {
                "guard": TritonClient(guard_url, protocol="http"),
                "direct": TritonClient(triton_url, protocol="http"),
            }
            samples: dict[str, list[float]] = {name: [] for name in clients}
            cpu_s = dict.fromkeys(clients, 0.0)
            serve = psutil.Process(process.pid)
            for client in clients.values():
                _round(client, rows, 100)  # warm up: connection, metadata, the guard's config cache
            per_round = max(1, requests // rounds)
            for _ in range(rounds):
                for name, client in clients.items():
                    before = sum(serve.cpu_times()[:2])
                    samples[name] += _round(client, rows, per_round)
                    cpu_s[name] += sum(serve.cpu_times()[:2]) - before
            for client in clients.values():
                client.close()
        finally:
            process.terminate()
            process.wait(timeout=120)
    result = {
        name: {
            "requests": len(values),
            "p50_ms": float(np.percentile(values, 50)),
            "p99_ms": float(np.percentile(values, 99)),
            "mean_ms": float(np.mean(values)),
            "serve_process_cpu_ms_per_request": cpu_s[name] * 1000 / len(values),
        }
        for name, values in samples.items()
    }
    result["guard_cost"] = {
        key: result["guard"][key] - result["direct"][key]
        for key in ("p50_ms", "p99_ms", "mean_ms", "serve_process_cpu_ms_per_request")
    }
    result["load_average"] = list(psutil.getloadavg())
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=2000, help="Single-row requests per path.")
    parser.add_argument("--rounds", type=int, default=10, help="Alternating rounds the requests are split into.")
    parser.add_argument("--json", type=Path, help="Also write the results here.")
    args = parser.parse_args(argv)
    result = run(args.requests, args.rounds)
    text = json.dumps(result, indent=2)
    if args.json:
        from tritonkit.atomic import write_text

        write_text(args.json, text + "\n")
    print(text)


if __name__ == "__main__":
    main()
