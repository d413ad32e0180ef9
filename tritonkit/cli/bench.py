"""`tritonkit bench`: latency and throughput of a model, real time against batch.

The benchmark runs in a child process (`python -m tritonkit.benchmarks.bench`) because Locust
monkey-patches the process with gevent on import: the CLI's own process stays unpatched.
Every option has an environment fallback, TRITONKIT_BENCH_<OPTION> (e.g. TRITONKIT_BENCH_URL).
"""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

import typer

from tritonkit.benchmarks.defaults import DEFAULT_PRICE_BATCH_PER_HOUR, DEFAULT_PRICE_REALTIME_PER_HOUR, SCENARIOS
from tritonkit.extras import requires


def _option(default, *flags: str, env: str, help: str):
    return typer.Option(default, *flags, envvar=f"TRITONKIT_BENCH_{env}", help=help)


def bench(
    quick: bool = _option(False, "--quick", env="QUICK", help="Short measurements: a few minutes in all."),
    url: str | None = _option(
        None,
        "--url",
        env="URL",
        help="gRPC HOST:PORT of a running Triton (default: start the embedded server with MODEL and MODEL_nobatch).",
    ),
    http_url: str | None = _option(
        None, "--http-url", env="HTTP_URL", help="HTTP HOST:PORT for the HTTP point with --url."
    ),
    model: str = _option(
        "churn",
        "--model",
        env="MODEL",
        help="churn or minilm with the embedded server (any model "
        "with --url); MODEL_nobatch, if served, is compared "
        "with it.",
    ),
    onnx: Path | None = _option(
        None, "--onnx", env="ONNX", help="The model's ONNX file, for the onnxruntime reference with --url."
    ),
    out: Path = _option(
        Path("bench-out"), "--out", env="OUT", help="Folder for report.md, summary.json, CSV and PNGs."
    ),
    seconds: float | None = _option(
        None, "--seconds", env="SECONDS", help="Seconds per measurement (default 3 with --quick, else 10)."
    ),
    budget_ms: float = _option(
        100.0, "--budget-ms", env="BUDGET_MS", help="p99 latency budget for the server scenario."
    ),
    rates: str | None = _option(
        None,
        "--rates",
        env="RATES",
        help="Server scenario target rates/s, comma-separated (default doubling from 50 for churn, 5 for minilm).",
    ),
    offline_rows: int | None = _option(
        None,
        "--offline-rows",
        env="OFFLINE_ROWS",
        help="Rows for the offline scenario (default: churn 100k quick, 1M; minilm 1k quick, 20k).",
    ),
    processes: int | None = _option(
        None,
        "--processes",
        env="PROCESSES",
        help="Also run the closed-loop micro-batch point with Locust --processes N "
        "(default: only when one Locust process is client-bound).",
    ),
    concurrency: int = _option(
        16, "--concurrency", env="CONCURRENCY", help="Concurrent single-row perf_analyzer clients (dynamic-batching)."
    ),
    stability_percent: float = _option(
        25.0,
        "--stability-percent",
        env="STABILITY_PERCENT",
        help="perf_analyzer's --stability-percentage (its default is 10).",
    ),
    price_realtime_per_hour: float = _option(
        DEFAULT_PRICE_REALTIME_PER_HOUR,
        "--price-realtime-per-hour",
        env="PRICE_REALTIME_PER_HOUR",
        help="USD per instance-hour for always-on real time (default: an on-demand 4-vCPU instance).",
    ),
    price_batch_per_hour: float = _option(
        DEFAULT_PRICE_BATCH_PER_HOUR,
        "--price-batch-per-hour",
        env="PRICE_BATCH_PER_HOUR",
        help="USD per instance-hour for scheduled batch (default: the same instance as spot).",
    ),
    realtime_utilisation: float = _option(
        0.3,
        "--realtime-utilisation",
        env="REALTIME_UTILISATION",
        help="Average load of the always-on server, for the cost table.",
    ),
    scenarios: str = _option(
        ",".join(SCENARIOS), "--scenarios", env="SCENARIOS", help="Scenarios to run, comma-separated."
    ),
) -> None:
    """Latency and throughput in real time and batch, dynamic batching on/off, cost per million predictions."""
    requires("bench", "locust", "gevent", "matplotlib", "psutil", "onnxruntime", what="`tritonkit bench`")
    if url is None:  # the embedded run exports its models first
        requires("export", "torch", "onnx", "sklearn", "skl2onnx", what="`tritonkit bench` without --url")
    argv = [
        "--out",
        str(out),
        "--budget-ms",
        str(budget_ms),
        "--model",
        model,
        "--price-realtime-per-hour",
        str(price_realtime_per_hour),
        "--price-batch-per-hour",
        str(price_batch_per_hour),
        "--realtime-utilisation",
        str(realtime_utilisation),
        "--scenarios",
        scenarios,
        "--concurrency",
        str(concurrency),
        "--stability-percent",
        str(stability_percent),
    ]
    argv += ["--quick"] if quick else []
    for flag, value in (
        ("--url", url),
        ("--http-url", http_url),
        ("--onnx", onnx),
        ("--seconds", seconds),
        ("--rates", rates),
        ("--offline-rows", offline_rows),
        ("--processes", processes),
    ):
        if value is not None:
            argv += [flag, str(value)]
    argv += ["--_command", "tritonkit " + shlex.join(sys.argv[1:])]  # what report.md shows: the command as typed
    code = subprocess.call([sys.executable, "-m", "tritonkit.benchmarks.bench", *argv])
    if code:
        raise typer.Exit(code)
