"""`tritonkit bench`: latency and throughput, real time against batch, dynamic batching on/off, cost, in one run.

    python -m tritonkit.benchmarks.bench --quick [--model churn|minilm] [--url HOST:8001] [--out bench-out]

Scenarios (after MLPerf Inference):
  single-stream     one Locust user, closed loop, one record per request: p50/p90/p99 latency.
  dynamic-batching  perf_analyzer (Triton's own load generator), 16 concurrent single-row gRPC clients
                    against MODEL (dynamic batching) and MODEL_nobatch (none), side by side: infer/s,
                    p50/p99 and the on/off ratio (benchmarks/perf_analyzer.py).
  server            open-loop Poisson arrivals at a rising sweep of target rates (a gevent generator that
                    sends whether or not earlier requests returned; latency counts from the scheduled
                    arrival, so coordinated omission is not hidden): p99 against --budget-ms and the
                    highest rate that meets it. Also a closed-loop micro-batch point (N users x M rows).
  offline           the whole data set through `tritonkit score` (clients.score.score): rows/s.
With the embedded server, MODEL is one of the example workloads (benchmarks/workloads.py: churn, minilm),
exported with its `_nobatch` twin; each scenario runs on both, beside an in-process onnxruntime reference
on the same inputs. The client's CPU is recorded per scenario; above 90 % of a core a result is flagged
client-bound, and a client-bound closed-loop point is run again with Locust's multi-process mode
(`locust --processes N`, N = cores, or --processes N to ask for it): both points are reported.

Cost: cost per million predictions = price per hour / (predictions per second x 3600) x 1e6, for
always-on real time (the highest rate within the budget, and at --realtime-utilisation of it) against
scheduled batch (offline rows/s). Default prices, USD per instance-hour, are assumptions to replace:
real time 0.17 (an on-demand 4-vCPU instance, e.g. AWS c6i.xlarge in us-east-1) and batch 0.06 (the
same instance as spot capacity), the measurement machine standing in for that instance.

Writes to --out: locust/<scenario>_stats.csv and _failures.csv (Locust's CSV), perf_analyzer/*.csv,
summary.json, report.md, latency_vs_throughput.png and realtime_vs_batch.png.

This module imports Locust (which monkey-patches with gevent) only in the process that runs the load,
so run it as its own process (`python -m tritonkit.benchmarks.bench` or `tritonkit bench`).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tritonkit.benchmarks.defaults import (
    DEFAULT_PRICE_BATCH_PER_HOUR,
    DEFAULT_PRICE_REALTIME_PER_HOUR,
    OPT_IN_SCENARIOS,
    SCENARIOS,
)
from tritonkit.benchmarks.load import closed_loop, micro_batch, server_sweep
from tritonkit.benchmarks.offline import run_offline
from tritonkit.benchmarks.plots import write_plots
from tritonkit.benchmarks.report import (
    CLIENT_BOUND_PERCENT,
    HEADLINE_COLUMNS,
    cost_table,
    headline_rows,
    markdown_table,
    write_report,
)
from tritonkit.benchmarks.workloads import NOBATCH_SUFFIX, workload_for


@dataclass
class BenchOptions:
    url: str | None = None  # gRPC HOST:PORT of a running server; None starts the embedded one
    http_url: str | None = None  # HTTP HOST:PORT for the HTTP single-stream point (embedded: automatic)
    model: str = "churn"
    onnx: Path | None = None  # the model's ONNX file for the in-process reference (embedded: automatic)
    out: Path = Path("bench-out")
    quick: bool = False
    seconds: float | None = None  # per measurement; default 3 (quick) or 10
    budget_ms: float = 100.0
    rates: list[float] = field(default_factory=list)  # server sweep; default doubling from the workload's first rate
    max_rate: float | None = None
    micro_batch_rows: int | None = None  # default from the workload (churn 64, minilm 16)
    micro_batch_users: int = 4
    processes: int | None = None  # Locust processes for the closed-loop micro-batch rerun; None: only when client-bound
    concurrency: int = 16  # perf_analyzer's concurrent single-row clients (dynamic-batching scenario)
    stability_percent: float = 25.0  # perf_analyzer's --stability-percentage (its default, 10, rarely settles here)
    offline_rows: int | None = None  # default from the workload (churn 100k quick / 1M, minilm 2k / 20k)
    offline_concurrency: int = 4
    price_realtime_per_hour: float = DEFAULT_PRICE_REALTIME_PER_HOUR
    price_batch_per_hour: float = DEFAULT_PRICE_BATCH_PER_HOUR
    realtime_utilisation: float = 0.3
    scenarios: tuple[str, ...] = SCENARIOS

    def __post_init__(self):
        self.out = Path(self.out)
        self.seconds = self.seconds or (3.0 if self.quick else 10.0)
        unknown = sorted(set(self.scenarios) - set(SCENARIOS) - set(OPT_IN_SCENARIOS))
        if unknown:
            valid = ", ".join(SCENARIOS + OPT_IN_SCENARIOS)
            raise SystemExit(f"unknown scenario(s) {', '.join(unknown)}; expected some of {valid}")
        workload = workload_for(self.model)
        if self.offline_rows is None and workload is not None:
            self.offline_rows = workload.offline_rows[0 if self.quick else 1]
        if self.micro_batch_rows is None:
            self.micro_batch_rows = workload.micro_batch_rows if workload is not None else 64
        if not self.rates:
            first, top_quick, top_full = workload.rates if workload is not None else (50.0, 1600.0, 25600.0)
            top = self.max_rate or (top_quick if self.quick else top_full)
            rate, self.rates = first, []
            while rate <= top:
                self.rates.append(rate)
                rate *= 2


# ---------------------------------------------------------------- the run


def _served(url: str, model: str) -> bool:
    from tritonkit.clients.realtime import TritonClient

    try:
        with TritonClient(url, protocol="grpc") as client:
            client.metadata(model)
        return True
    except Exception:  # noqa: BLE001 - any failure means "not ready yet"
        return False


def dynamic_batching(url: str, models: list[str], options: BenchOptions, out: Path, log) -> dict:
    from tritonkit.benchmarks import perf_analyzer
    from tritonkit.benchmarks.payloads import build_payloads
    from tritonkit.clients.realtime import TritonClient

    binary, why = perf_analyzer.ensure(log)
    if binary is None:
        log(f"dynamic-batching: skipped: {why}")
        return {"skipped": why}
    twin = models[1] if len(models) > 1 else None
    log(f"dynamic-batching: perf_analyzer, {options.concurrency} concurrent single-row clients, {' vs '.join(models)}")
    with TritonClient(url, protocol="grpc") as client:
        payloads = build_payloads(client.metadata(models[0]), 1, None, 256, seed=5)
    window_ms = int(max(1000, options.seconds * 500))
    return perf_analyzer.dynamic_batching(
        binary,
        url,
        models[0],
        twin,
        payloads,
        out / "perf_analyzer",
        rounds=1 if options.quick else 2,
        concurrency=options.concurrency,
        window_ms=window_ms,
        stability=options.stability_percent,
        max_trials=5 if options.quick else 8,
    )


def _start_embedded(options: BenchOptions, workload, tmp: Path, log):
    """Exports the workload (and its _nobatch twin) into `tmp` and starts the embedded server; (server, onnx)."""
    from tritonkit.server import EmbeddedServer

    if workload is None or workload.name != options.model:
        raise SystemExit(
            f"--model {options.model}: the embedded server benchmarks the example workloads "
            "churn and minilm; give --url for another model"
        )
    log(f"exporting {options.model} (+ {options.model}{NOBATCH_SUFFIX}, no dynamic batching) and starting the server")
    repository = tmp / "repository"
    repository.mkdir()
    onnx = workload.prepare(repository, options.model)
    server = EmbeddedServer(repository, http_port=0, grpc_port=0, metrics_port=0, log_file=tmp / "triton.log")
    return server.start(), onnx


def environment() -> dict:
    """Where and when a run happened, the load average included (the machine is shared)."""
    import matplotlib
    import psutil

    return {
        "when": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.system()}",
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
        "matplotlib": matplotlib.__version__,
        "psutil": psutil.__version__,
    }


def _new_summary(options: BenchOptions, command: str, url: str, embedded: bool, models: list[str], workload) -> dict:
    return {
        "command": command or "tritonkit bench",
        "options": json.loads(json.dumps(asdict(options), default=str)),
        "server_url": url,
        "embedded": embedded,
        "models": models,
        "workload": workload.name if workload else None,
        "environment": environment(),
        "reference": None,
        "single_stream": [],
        "micro_batch": [],
        "dynamic_batching": None,
        "server": {},
        "offline": {},
    }


def _single_stream(summary: dict, options: BenchOptions, url: str, http_url: str | None, csv_dir: Path, log) -> None:
    for model in summary["models"]:
        log(f"single-stream: {model} grpc")
        name = f"single_stream_{model}_grpc"
        summary["single_stream"].append(closed_loop(name, url, "grpc", model, 1, 1, options.seconds, csv_dir))
    if http_url:
        log(f"single-stream: {options.model} http")
        name = f"single_stream_{options.model}_http"
        summary["single_stream"].append(
            closed_loop(name, http_url, "http", options.model, 1, 1, options.seconds, csv_dir)
        )


def _scenarios(summary: dict, options: BenchOptions, urls: tuple[str, str | None], workload, tmp: Path, log) -> None:
    """Runs the chosen scenarios against the server at `urls` (gRPC, HTTP), filling `summary`."""
    url, http_url = urls
    models, out = summary["models"], options.out
    csv_dir = out / "locust"
    if "single-stream" in options.scenarios:
        _single_stream(summary, options, url, http_url, csv_dir, log)
    if "dynamic-batching" in options.scenarios:
        summary["dynamic_batching"] = dynamic_batching(url, models, options, out, log)
    if "server" in options.scenarios:
        for model in models:
            summary["micro_batch"] += micro_batch(
                url,
                model,
                options.micro_batch_users,
                options.micro_batch_rows,
                options.seconds,
                options.processes,
                csv_dir,
                log,
            )
            log(f"server (open loop): {model}, rates {options.rates}")
            summary["server"][model] = server_sweep(
                url, model, options.rates, options.seconds, options.budget_ms, csv_dir
            )
    if "offline" in options.scenarios:
        if workload is None:
            log(f"offline: skipped: no workload knows the rows {options.model} takes")
            return
        log(f"offline: {', '.join(models)}, {options.offline_rows:,} rows each through score()")
        summary["offline"] = run_offline(
            url, models, workload.name, options.offline_rows, options.offline_concurrency, tmp
        )


def _finish(summary: dict, options: BenchOptions) -> dict:
    """The cost table, the client-bound list, the plots, summary.json and report.md."""
    summary["cost"] = cost_table(
        summary["server"],
        summary["offline"],
        options.budget_ms,
        options.price_realtime_per_hour,
        options.price_batch_per_hour,
        options.realtime_utilisation,
    )
    bound = [r["scenario"] for r in summary["single_stream"] + summary["micro_batch"] if r["client_bound"]]
    bound += [f"server_{m}" for m, s in summary["server"].items() if s["client_bound"]]
    bound += [f"offline_{m}" for m, r in summary["offline"].items() if r["client_cpu_percent"] > CLIENT_BOUND_PERCENT]
    summary["client_bound"] = bound
    summary["plots"] = write_plots(summary, options.out)
    (options.out / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    write_report(summary, options.out)
    return summary


def run(options: BenchOptions, command: str = "", log=print) -> dict:
    """Runs the scenarios and writes everything under options.out; returns the summary."""
    options.out.mkdir(parents=True, exist_ok=True)
    workload = workload_for(options.model)
    with tempfile.TemporaryDirectory(prefix="tritonkit-bench-") as tmp:
        tmp = Path(tmp)
        server, onnx = None, options.onnx
        if options.url is None:
            server, onnx = _start_embedded(options, workload, tmp, log)
            url, http_url = server.grpc_url, server.http_url
        else:
            url, http_url = options.url, options.http_url
        try:
            models = [options.model]
            twin = options.model + NOBATCH_SUFFIX
            if _served(url, twin):
                models.append(twin)
            else:
                log(f"{twin} is not served at {url}: no dynamic batching comparison")
            summary = _new_summary(options, command, url, server is not None, models, workload)
            if onnx is not None and workload is not None:
                log("onnxruntime in-process reference")
                summary["reference"] = workload.reference(
                    Path(onnx), options.micro_batch_rows, options.seconds, min(options.offline_rows, 200_000)
                )
            _scenarios(summary, options, (url, http_url), workload, tmp, log)
            if "hybrid" in options.scenarios:  # the gateway against a seed-style service (its own hybrid.md)
                from tritonkit.benchmarks import hybrid

                summary["hybrid"] = hybrid.run(url, onnx, options, options.out, log)
        finally:
            if server is not None:
                server.stop()
    return _finish(summary, options)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m tritonkit.benchmarks.bench", description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="short measurements (a few minutes in all)")
    p.add_argument("--url", help="gRPC HOST:PORT of a running Triton (default: start the embedded server)")
    p.add_argument("--http-url", help="HTTP HOST:PORT for the HTTP single-stream point when --url is given")
    p.add_argument("--model", default="churn", help="churn or minilm with the embedded server; any model with --url")
    p.add_argument("--onnx", type=Path, help="the model's ONNX file for the onnxruntime reference (with --url)")
    p.add_argument("--out", type=Path, default=Path("bench-out"))
    p.add_argument("--seconds", type=float, help="seconds per measurement (default 3 quick, 10 otherwise)")
    p.add_argument("--budget-ms", type=float, default=100.0, help="p99 latency budget for the server scenario")
    p.add_argument(
        "--rates",
        type=lambda s: [float(x) for x in s.split(",")],
        default=[],
        help="server scenario target rates, comma-separated (default: doubling from 50/s for churn, 5/s for minilm)",
    )
    p.add_argument(
        "--max-rate", type=float, help="highest default sweep rate (churn: 1600 quick, 25600; minilm: 320 quick, 2560)"
    )
    p.add_argument(
        "--micro-batch-rows", type=int, help="rows per closed-loop micro-batch request (default: churn 64, minilm 16)"
    )
    p.add_argument("--micro-batch-users", type=int, default=4)
    p.add_argument(
        "--processes",
        type=int,
        help="also run the closed-loop micro-batch point with Locust "
        "--processes N (default: only when one process is client-bound)",
    )
    p.add_argument("--concurrency", type=int, default=16, help="perf_analyzer's concurrent single-row clients")
    p.add_argument("--stability-percent", type=float, default=25.0, help="perf_analyzer's --stability-percentage")
    p.add_argument("--offline-rows", type=int, help="rows for the offline scenario (default from the workload)")
    p.add_argument("--price-realtime-per-hour", type=float, default=DEFAULT_PRICE_REALTIME_PER_HOUR)
    p.add_argument("--price-batch-per-hour", type=float, default=DEFAULT_PRICE_BATCH_PER_HOUR)
    p.add_argument("--realtime-utilisation", type=float, default=0.3)
    p.add_argument("--scenarios", default=",".join(SCENARIOS))
    p.add_argument("--_command", dest="command", help=argparse.SUPPRESS)  # the command line to report (tritonkit bench)
    return p


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    args = parser().parse_args(argv)
    # The load process: Locust's import monkey-patches with gevent, first, before any thread or channel
    # exists (a later import can deadlock on an import lock another thread holds); gRPC's gevent support after.
    import grpc.experimental.gevent as grpc_gevent

    import tritonkit.benchmarks.locustfile  # noqa: F401

    grpc_gevent.init_gevent()
    options = BenchOptions(
        url=args.url,
        http_url=args.http_url,
        model=args.model,
        onnx=args.onnx,
        out=args.out,
        quick=args.quick,
        seconds=args.seconds,
        budget_ms=args.budget_ms,
        rates=args.rates,
        max_rate=args.max_rate,
        micro_batch_rows=args.micro_batch_rows,
        micro_batch_users=args.micro_batch_users,
        processes=args.processes,
        concurrency=args.concurrency,
        stability_percent=args.stability_percent,
        offline_rows=args.offline_rows,
        price_realtime_per_hour=args.price_realtime_per_hour,
        price_batch_per_hour=args.price_batch_per_hour,
        realtime_utilisation=args.realtime_utilisation,
        scenarios=tuple(s.strip() for s in args.scenarios.split(",") if s.strip()),
    )
    start = time.perf_counter()
    command = args.command or "python -m tritonkit.benchmarks.bench " + shlex.join(argv)
    summary = run(
        options, command=command, log=lambda m: print(f"[{time.perf_counter() - start:5.0f} s] {m}", flush=True)
    )
    print()
    print(markdown_table(HEADLINE_COLUMNS, headline_rows(summary)))
    print(f"\nwrote {options.out}/report.md, summary.json, locust/*.csv, *.png in {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
