"""Single-request latency and batch-of-N throughput over gRPC and HTTP, beside in-process onnxruntime.

    python -m tritonkit.benchmarks.realtime [--requests 2000] [--batch 256] [--seconds 5]

Exports the churn example to a temporary repository, starts the embedded Triton and measures, in
one run on one machine: sequential single-row calls (p50/p99 latency) and back-to-back batches
(rows/s), each over gRPC, HTTP and in-process onnxruntime on the same ONNX file.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

from tritonkit.clients import TritonClient
from tritonkit.export.churn import FEATURES, OUTPUTS, export_churn, synthetic_customers
from tritonkit.server import EmbeddedServer


def _percentiles(samples_ms: list[float]) -> dict[str, float]:
    values = np.asarray(samples_ms)
    return {
        "p50_ms": float(np.percentile(values, 50)),
        "p99_ms": float(np.percentile(values, 99)),
        "mean_ms": float(values.mean()),
    }


def _latency(call, rows: list[dict], requests: int) -> dict[str, float]:
    for row in rows[:50]:  # warm up
        call(row)
    samples = []
    for i in range(requests):
        start = time.perf_counter()
        call(rows[i % len(rows)])
        samples.append((time.perf_counter() - start) * 1000)
    return _percentiles(samples)


def _throughput(call, batch: dict, seconds: float) -> float:
    call(batch)
    rows = len(next(iter(batch.values())))
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        call(batch)
        done += rows
    return done / (time.perf_counter() - start)


def run(requests: int, batch_size: int, seconds: float) -> dict:
    frame = synthetic_customers(max(batch_size, 1000), seed=3)
    singles = [{f: frame[[f]].to_numpy(np.float32)[i : i + 1] for f in FEATURES} for i in range(1000)]
    batch = {f: frame[[f]].to_numpy(np.float32)[:batch_size] for f in FEATURES}
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        export_churn(Path(tmp))
        session = ort.InferenceSession(str(Path(tmp) / "churn" / "1" / "model.onnx"))
        results["onnxruntime in-process"] = {
            **_latency(lambda r: session.run(OUTPUTS, r), singles, requests),
            "batch_rows_per_s": _throughput(lambda b: session.run(OUTPUTS, b), batch, seconds),
        }
        with EmbeddedServer(Path(tmp), http_port=0, grpc_port=0, metrics_port=0) as server:
            for protocol, url in (("grpc", server.grpc_url), ("http", server.http_url)):
                client = TritonClient(url, protocol=protocol)
                call = lambda arrays, client=client: client.infer_arrays("churn", arrays)  # noqa: E731
                results[f"triton {protocol}"] = {
                    **_latency(call, singles, requests),
                    "batch_rows_per_s": _throughput(call, batch, seconds),
                }
                client.close()
    return {"model": "churn", "requests": requests, "batch_size": batch_size, "results": results}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000, help="sequential single-row calls per client")
    parser.add_argument("--batch", type=int, default=256, help="rows per batch request")
    parser.add_argument("--seconds", type=float, default=5.0, help="time per throughput measurement")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    report = run(args.requests, args.batch, args.seconds)
    reference = report["results"]["onnxruntime in-process"]
    print(f"churn, single row x {args.requests} sequential; batch of {args.batch} back to back")
    print(f"{'path':<26}{'p50 ms':>9}{'p99 ms':>9}{'batch rows/s':>15}{'x in-process':>14}")
    for name, r in report["results"].items():
        ratio = r["batch_rows_per_s"] / reference["batch_rows_per_s"]
        print(f"{name:<26}{r['p50_ms']:>9.3f}{r['p99_ms']:>9.3f}{r['batch_rows_per_s']:>15,.0f}{ratio:>14.3f}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
