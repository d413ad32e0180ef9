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
import csv
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from tritonkit.benchmarks.defaults import (
    DEFAULT_PRICE_BATCH_PER_HOUR,
    DEFAULT_PRICE_REALTIME_PER_HOUR,
    OPT_IN_SCENARIOS,
    SCENARIOS,
)
from tritonkit.benchmarks.report import (
    CLIENT_BOUND_PERCENT,
    HEADLINE_COLUMNS,
    cost_table,
    headline_rows,
    markdown_table,
    write_plots,
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


# ---------------------------------------------------------------- offline (run in a child process)


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
    done = subprocess.run(
        [sys.executable, "-m", "tritonkit.benchmarks.bench", "--_offline-worker", json.dumps(spec)],
        capture_output=True,
        text=True,
        timeout=1800,
    )
    if done.returncode != 0:
        raise RuntimeError(f"offline scenario for {', '.join(models)} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------- Locust-driven scenarios


class _Recorder:
    """A Locust Environment plus exact per-request samples (Locust's own percentiles are rounded to ms)."""

    def __init__(self, name: str, user_classes: list, host: str):
        from locust.env import Environment

        self.name = name
        self.env = Environment(user_classes=user_classes, host=host)
        self.samples: list[float] = []
        self.rows = 0
        self.failures = 0
        self.recording = True  # False once the measurement window closes: calls finishing later do not count
        self.env.events.request.add_listener(self._on_request)

    def _on_request(self, response_time, exception=None, context=None, **_):
        if not self.recording:
            return
        if exception is not None:
            self.failures += 1
            return
        self.samples.append(response_time)
        self.rows += (context or {}).get("rows", 1)

    def summary(self, wall_s: float, cpu_percent: float) -> dict:
        values = np.asarray(self.samples) if self.samples else np.asarray([np.nan])
        return {
            "requests": len(self.samples),
            "failures": self.failures,
            "wall_s": round(wall_s, 3),
            "requests_per_s": len(self.samples) / wall_s,
            "predictions_per_s": self.rows / wall_s,
            **{f"p{q}_ms": float(np.percentile(values, q)) for q in (50, 90, 99)},
            "mean_ms": float(values.mean()),
            "client_cpu_percent": round(cpu_percent, 1),
            "client_bound": cpu_percent > CLIENT_BOUND_PERCENT,
        }

    def write_csv(self, folder: Path) -> None:
        from locust.stats import PERCENTILES_TO_REPORT, StatsCSV

        folder.mkdir(parents=True, exist_ok=True)
        writer = StatsCSV(self.env, PERCENTILES_TO_REPORT)
        with open(folder / f"{self.name}_stats.csv", "w", newline="") as handle:
            writer.requests_csv(csv.writer(handle))
        with open(folder / f"{self.name}_failures.csv", "w", newline="") as handle:
            writer.failures_csv(csv.writer(handle))


def _cpu_window():
    import psutil

    process = psutil.Process()
    process.cpu_percent(None)
    return lambda: process.cpu_percent(None)


def closed_loop(
    name: str, host: str, protocol: str, model: str, users: int, batch_rows: int, seconds: float, csv_dir: Path
) -> dict:
    """`users` Locust users back to back for `seconds` (after a short warm-up), through LocalRunner."""
    import gevent

    from tritonkit.benchmarks.locustfile import close_all_clients, user_class

    recorder = _Recorder(name, [user_class(protocol, model, batch_rows)], host)
    runner = recorder.env.create_local_runner()
    runner.start(users, spawn_rate=users)
    gevent.sleep(min(1.0, seconds / 3))  # warm-up, discarded
    recorder.env.stats.reset_all()
    recorder.samples.clear()
    recorder.rows = recorder.failures = 0
    cpu = _cpu_window()
    start = time.perf_counter()
    gevent.sleep(seconds)
    wall, cpu_percent = time.perf_counter() - start, cpu()
    recorder.recording = False
    runner.quit()
    close_all_clients()  # users killed before on_stop: this Environment's events are not locust.events
    recorder.write_csv(csv_dir)
    return {
        "scenario": name,
        "model": model,
        "protocol": protocol,
        "users": users,
        "batch_rows": batch_rows,
        "loop": "closed",
        "processes": 1,
        **recorder.summary(wall, cpu_percent),
    }


def open_loop(
    name: str,
    host: str,
    model: str,
    rate: float,
    seconds: float,
    csv_dir: Path,
    max_in_flight: int = 256,
    seed: int = 0,
) -> dict:
    """Poisson arrivals at `rate`/s for `seconds` over gRPC, whether or not earlier requests returned."""
    import gevent
    import gevent.pool

    from tritonkit.benchmarks.locustfile import GrpcTritonUser, build_payloads, infer_and_report
    from tritonkit.clients.realtime import TritonClient

    recorder = _Recorder(name, [GrpcTritonUser], host)
    client = TritonClient(host, protocol="grpc")
    payloads = build_payloads(client.metadata(model), 1, None, 256, seed)
    for arrays in payloads[:20]:  # warm-up, not recorded
        client.infer_arrays(model, arrays)
    rng = np.random.default_rng(seed)
    pool = gevent.pool.Pool(max_in_flight)
    dropped, sent = 0, 0
    cpu = _cpu_window()
    start = time.perf_counter()
    due = start
    while due - start < seconds:
        delay = due - time.perf_counter()
        if delay > 0:
            gevent.sleep(delay)
        if pool.full():
            dropped += 1  # the client cannot keep this many in flight: counted as failure
        else:
            pool.spawn(infer_and_report, recorder.env, client, model, payloads[sent % len(payloads)], "", due)
            sent += 1
        due += rng.exponential(1.0 / rate)
    pool.join(timeout=30)
    cpu_percent = cpu()
    wall = seconds  # the arrival window: achieved rate = completed / window
    client.close()
    recorder.failures += dropped
    recorder.write_csv(csv_dir)
    result = {
        "scenario": name,
        "model": model,
        "protocol": "grpc",
        "loop": "open",
        "target_rate": rate,
        "dropped": dropped,
        **recorder.summary(wall, cpu_percent),
    }
    return result


def server_sweep(host: str, model: str, options: BenchOptions, csv_dir: Path) -> dict:
    """Rising target rates until two in a row miss the budget (p99 above it, or failed requests).

    Two, not one: on a shared machine a single pause can push one short window's p99 over the budget.
    """
    points, best, misses = [], None, 0
    for rate in options.rates:
        point = open_loop(f"server_{model}_{int(rate)}", host, model, rate, options.seconds, csv_dir)
        # latency counts from the scheduled arrival, so a client or server falling behind shows in p99
        point["meets_budget"] = bool(point["p99_ms"] <= options.budget_ms and point["failures"] == 0)
        points.append(point)
        if point["meets_budget"]:
            best, misses = rate, 0
        else:
            misses += 1
            if misses >= 2:
                break
    return {
        "model": model,
        "budget_ms": options.budget_ms,
        "points": points,
        "max_rate_within_budget": best,
        "client_bound": any(p["client_bound"] for p in points),
    }


# ---------------------------------------------------------------- the run


def _served(url: str, model: str) -> bool:
    from tritonkit.clients.realtime import TritonClient

    try:
        with TritonClient(url, protocol="grpc") as client:
            client.metadata(model)
        return True
    except Exception:  # noqa: BLE001 - any failure means "not ready yet"
        return False


def micro_batch(url: str, model: str, options: BenchOptions, csv_dir: Path, log) -> list[dict]:
    """The closed-loop micro-batch point in this process, and again with Locust --processes N when needed."""
    from tritonkit.benchmarks import locust_processes

    name = f"micro_batch_{model}"
    log(f"closed-loop micro-batch: {model} {options.micro_batch_users} users x {options.micro_batch_rows} rows")
    point = closed_loop(
        name, url, "grpc", model, options.micro_batch_users, options.micro_batch_rows, options.seconds, csv_dir
    )
    points = [point]
    processes = options.processes or (os.cpu_count() or 1 if point["client_bound"] else 0)
    if processes > 1 and options.micro_batch_users > 1:
        why = "asked for" if options.processes else f"client at {point['client_cpu_percent']:.0f} % of a core"
        log(f"closed-loop micro-batch again with Locust --processes {processes} ({why})")
        rerun = locust_processes.run(
            f"{name}_processes{processes}",
            url,
            "grpc",
            model,
            options.micro_batch_users,
            options.micro_batch_rows,
            options.seconds,
            processes,
            csv_dir,
        )
        rerun["rerun_of"] = name if point["client_bound"] else None
        points.append(rerun)
    return points


def dynamic_batching(url: str, models: list[str], options: BenchOptions, out: Path, log) -> dict:
    from tritonkit.benchmarks import perf_analyzer
    from tritonkit.benchmarks.locustfile import build_payloads
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


def run(options: BenchOptions, command: str = "", log=print) -> dict:
    """Runs the scenarios and writes everything under options.out; returns the summary."""
    import matplotlib
    import psutil

    out = options.out
    out.mkdir(parents=True, exist_ok=True)
    csv_dir = out / "locust"
    workload = workload_for(options.model)
    with tempfile.TemporaryDirectory(prefix="tritonkit-bench-") as tmp:
        tmp = Path(tmp)
        server = None
        onnx = options.onnx
        if options.url is None:
            from tritonkit.server import EmbeddedServer

            if workload is None or workload.name != options.model:
                raise SystemExit(
                    f"--model {options.model}: the embedded server benchmarks the example workloads "
                    "churn and minilm; give --url for another model"
                )
            log(
                f"exporting {options.model} (+ {options.model}{NOBATCH_SUFFIX}, no dynamic batching) and starting "
                "the embedded server"
            )
            repository = tmp / "repository"
            repository.mkdir()
            onnx = workload.prepare(repository, options.model)
            server = EmbeddedServer(repository, http_port=0, grpc_port=0, metrics_port=0, log_file=tmp / "triton.log")
            server.start()
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
            summary = {
                "command": command or "tritonkit bench",
                "options": json.loads(json.dumps(asdict(options), default=str)),
                "server_url": url,
                "embedded": server is not None,
                "models": models,
                "workload": workload.name if workload else None,
                "environment": {
                    "when": time.strftime("%Y-%m-%d %H:%M:%S"),
                    "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.system()}",
                    "load_average": [round(x, 2) for x in os.getloadavg()],
                    "python": platform.python_version(),
                    "matplotlib": matplotlib.__version__,
                    "psutil": psutil.__version__,
                },
                "reference": None,
                "single_stream": [],
                "micro_batch": [],
                "dynamic_batching": None,
                "server": {},
                "offline": {},
            }
            if onnx is not None and workload is not None:
                log("onnxruntime in-process reference")
                summary["reference"] = workload.reference(
                    Path(onnx), options.micro_batch_rows, options.seconds, min(options.offline_rows, 200_000)
                )
            if "single-stream" in options.scenarios:
                for model in models:
                    log(f"single-stream: {model} grpc")
                    summary["single_stream"].append(
                        closed_loop(f"single_stream_{model}_grpc", url, "grpc", model, 1, 1, options.seconds, csv_dir)
                    )
                if http_url:
                    log(f"single-stream: {options.model} http")
                    summary["single_stream"].append(
                        closed_loop(
                            f"single_stream_{options.model}_http",
                            http_url,
                            "http",
                            options.model,
                            1,
                            1,
                            options.seconds,
                            csv_dir,
                        )
                    )
            if "dynamic-batching" in options.scenarios:
                summary["dynamic_batching"] = dynamic_batching(url, models, options, out, log)
            if "server" in options.scenarios:
                for model in models:
                    summary["micro_batch"] += micro_batch(url, model, options, csv_dir, log)
                    log(f"server (open loop): {model}, rates {options.rates}")
                    summary["server"][model] = server_sweep(url, model, options, csv_dir)
            if "offline" in options.scenarios:
                if workload is None:
                    log(f"offline: skipped: no workload knows the rows {options.model} takes")
                else:
                    log(f"offline: {', '.join(models)}, {options.offline_rows:,} rows each through score()")
                    summary["offline"] = run_offline(
                        url, models, workload.name, options.offline_rows, options.offline_concurrency, tmp
                    )
            # --- hybrid: the gateway against a seed-style service (benchmarks/hybrid.py, its own hybrid.md)
            if "hybrid" in options.scenarios:
                from tritonkit.benchmarks import hybrid

                summary["hybrid"] = hybrid.run(url, onnx, options, out, log)
            # --- end hybrid
        finally:
            if server is not None:
                server.stop()
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
    summary["plots"] = write_plots(summary, out)
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    write_report(summary, out)
    return summary


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
    p.add_argument("--_offline-worker", dest="offline_worker", help=argparse.SUPPRESS)
    p.add_argument("--_command", dest="command", help=argparse.SUPPRESS)  # the command line to report (tritonkit bench)
    return p


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    args = parser().parse_args(argv)
    if args.offline_worker:
        print(json.dumps(offline_worker(json.loads(args.offline_worker))))
        return
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
