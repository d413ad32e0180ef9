"""`tritonkit bench`: the typer command; wire with `register(app)`.

The benchmark runs in a child process (`python -m tritonkit.benchmarks.bench`) because Locust
monkey-patches the process with gevent on import: the CLI's own process stays unpatched.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Optional

import typer

from tritonkit.benchmarks.bench import DEFAULT_PRICE_BATCH_PER_HOUR, DEFAULT_PRICE_REALTIME_PER_HOUR


def bench(
    quick: bool = typer.Option(False, "--quick", help="Short measurements: about 2 minutes in all."),
    url: Optional[str] = typer.Option(None, help="gRPC HOST:PORT of a running Triton (default: start the embedded "
                                                 "server with churn and churn_nobatch)."),
    http_url: Optional[str] = typer.Option(None, "--http-url", help="HTTP HOST:PORT for the HTTP point with --url."),
    model: str = typer.Option("churn", help="Model to benchmark; MODEL_nobatch, if served, is compared with it."),
    onnx: Optional[Path] = typer.Option(None, help="The model's ONNX file, for the onnxruntime reference with --url."),
    out: Path = typer.Option(Path("bench-out"), "--out", help="Folder for report.md, summary.json, CSV and PNGs."),
    seconds: Optional[float] = typer.Option(None, help="Seconds per measurement (default 3 with --quick, else 10)."),
    budget_ms: float = typer.Option(100.0, "--budget-ms", help="p99 latency budget for the server scenario."),
    rates: Optional[str] = typer.Option(None, help="Server scenario target rates/s, comma-separated "
                                                   "(default doubling from 50)."),
    offline_rows: Optional[int] = typer.Option(None, "--offline-rows", help="Rows for the offline scenario "
                                                                            "(default 100k quick, 1M)."),
    price_realtime_per_hour: float = typer.Option(
        DEFAULT_PRICE_REALTIME_PER_HOUR, "--price-realtime-per-hour",
        help="USD per instance-hour for always-on real time (default: an on-demand 4-vCPU instance)."),
    price_batch_per_hour: float = typer.Option(
        DEFAULT_PRICE_BATCH_PER_HOUR, "--price-batch-per-hour",
        help="USD per instance-hour for scheduled batch (default: the same instance as spot)."),
    realtime_utilisation: float = typer.Option(0.3, "--realtime-utilisation",
                                               help="Average load of the always-on server, for the cost table."),
    scenarios: str = typer.Option("single-stream,server,offline", help="Scenarios to run, comma-separated."),
) -> None:
    """Latency and throughput in real time and batch, dynamic batching on/off, cost per million predictions."""
    argv = ["--out", str(out), "--budget-ms", str(budget_ms), "--model", model,
            "--price-realtime-per-hour", str(price_realtime_per_hour),
            "--price-batch-per-hour", str(price_batch_per_hour),
            "--realtime-utilisation", str(realtime_utilisation), "--scenarios", scenarios]
    argv += ["--quick"] if quick else []
    for flag, value in (("--url", url), ("--http-url", http_url), ("--onnx", onnx), ("--seconds", seconds),
                        ("--rates", rates), ("--offline-rows", offline_rows)):
        if value is not None:
            argv += [flag, str(value)]
    code = subprocess.call([sys.executable, "-m", "tritonkit.benchmarks.bench", *argv])
    if code:
        raise typer.Exit(code)


def register(app: typer.Typer) -> None:
    """Adds `bench` to the tritonkit CLI."""
    app.command("bench")(bench)
