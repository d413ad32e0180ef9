"""`tritonkit bench`: latency and throughput, real time against batch, dynamic batching on/off, cost, in one run.

    python -m tritonkit.benchmarks.bench --quick [--url HOST:8001] [--out bench-out] [--budget-ms 100]

Scenarios (after MLPerf Inference):
  single-stream  one Locust user, closed loop, one record per request: p50/p90/p99 latency.
  server         open-loop Poisson arrivals at a rising sweep of target rates (a gevent generator that
                 sends whether or not earlier requests returned; latency counts from the scheduled
                 arrival, so coordinated omission is not hidden): p99 against --budget-ms and the
                 highest rate that meets it. Also a closed-loop micro-batch point (N users x M rows).
  offline        the whole data set through `tritonkit score` (clients.score.score): rows/s.
Each runs on `churn` (dynamic batching) and `churn_nobatch` (same ONNX, no dynamic_batching) when the
repository has both (always when the embedded server is used), beside an in-process onnxruntime reference
on the same ONNX file and batch sizes. The client's CPU (psutil, this process) is recorded per scenario;
above 90 % of one core a result is flagged client-bound (rerun with Locust's `--processes N`).

Cost: cost per million predictions = price per hour / (predictions per second x 3600) x 1e6, for
always-on real time (the highest rate within the budget, and at --realtime-utilisation of it) against
scheduled batch (offline rows/s). Default prices, USD per instance-hour, are assumptions to replace:
real time 0.17 (an on-demand 4-vCPU instance, e.g. AWS c6i.xlarge in us-east-1) and batch 0.06 (the
same instance as spot capacity), the measurement machine standing in for that instance.

Writes to --out: locust/<scenario>_stats.csv and _failures.csv (Locust's CSV), summary.json, report.md,
latency_vs_throughput.png and realtime_vs_batch.png.

This module imports Locust (which monkey-patches with gevent) only in the process that runs the load,
so run it as its own process (`python -m tritonkit.benchmarks.bench` or `tritonkit bench`).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

DEFAULT_PRICE_REALTIME_PER_HOUR = 0.17
DEFAULT_PRICE_BATCH_PER_HOUR = 0.06
CLIENT_BOUND_PERCENT = 90.0
NOBATCH_SUFFIX = "_nobatch"


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
    rates: list[float] = field(default_factory=list)  # server sweep; default doubling from 50
    max_rate: float | None = None
    micro_batch_rows: int = 64
    micro_batch_users: int = 4
    offline_rows: int | None = None  # default 100k (quick) or 1M
    offline_concurrency: int = 4
    price_realtime_per_hour: float = DEFAULT_PRICE_REALTIME_PER_HOUR
    price_batch_per_hour: float = DEFAULT_PRICE_BATCH_PER_HOUR
    realtime_utilisation: float = 0.3
    scenarios: tuple[str, ...] = ("single-stream", "server", "offline")

    def __post_init__(self):
        self.out = Path(self.out)
        self.seconds = self.seconds or (3.0 if self.quick else 10.0)
        self.offline_rows = self.offline_rows or (100_000 if self.quick else 1_000_000)
        if not self.rates:
            top = self.max_rate or (1600 if self.quick else 25600)
            rate, self.rates = 50.0, []
            while rate <= top:
                self.rates.append(rate)
                rate *= 2


# ---------------------------------------------------------------- repository and reference


def prepare_repository(repository: Path, model: str = "churn") -> Path:
    """Exports churn as `model` (dynamic batching) and a copy `model_nobatch` without dynamic_batching."""
    from tritonkit.export.churn import model_config

    # The export runs torch.export, whose inductor imports redis (and ssl) when installed: in this
    # process that would precede Locust's gevent patching and hang gRPC users. A child process does it.
    subprocess.run([sys.executable, "-m", "tritonkit.cli", "export", "churn", "--repository", str(repository),
                    "--name", model], check=True, stdout=subprocess.DEVNULL)
    twin = repository / f"{model}{NOBATCH_SUFFIX}"
    (twin / "1").mkdir(parents=True)
    shutil.copy2(repository / model / "1" / "model.onnx", twin / "1" / "model.onnx")
    config = model_config(twin.name)
    from dataclasses import replace

    replace(config, dynamic_batching=None).write(twin / "config.pbtxt")
    return repository / model / "1" / "model.onnx"


def onnxruntime_reference(onnx: Path, micro_batch_rows: int, seconds: float, offline_rows: int) -> dict:
    """In-process onnxruntime on the same ONNX: single-row latency, micro-batch and bulk throughput."""
    import onnxruntime as ort

    from tritonkit.benchmarks.bulk import reference_rows_per_s
    from tritonkit.benchmarks.realtime import _latency, _throughput
    from tritonkit.export.churn import FEATURES, synthetic_customers

    session = ort.InferenceSession(str(onnx))
    frame = synthetic_customers(max(offline_rows, 1000), seed=3)
    columns = {f: frame[[f]].to_numpy(np.float32) for f in FEATURES}
    singles = [{f: c[i:i + 1] for f, c in columns.items()} for i in range(1000)]
    requests = max(200, int(seconds * 500))
    single = _latency(lambda r: session.run(None, r), singles, requests)
    batch = {f: c[:micro_batch_rows] for f, c in columns.items()}
    return {
        "single_row": {**single, "rows_per_s": 1000.0 / single["mean_ms"]},
        "micro_batch_rows_per_s": _throughput(lambda b: session.run(None, b), batch, min(seconds, 3.0)),
        "bulk_rows_per_s": reference_rows_per_s(onnx, columns, offline_rows, 1),
    }


# ---------------------------------------------------------------- offline (run in a child process)


def offline_worker(spec: dict) -> dict:
    """score() over `rows` synthetic customers; runs without gevent in its own process."""
    from tritonkit.clients.score import ScoreOptions, score
    from tritonkit.export.churn import synthetic_customers

    tmp = Path(spec["tmp"])
    data = tmp / "offline.parquet"
    synthetic_customers(spec["rows"], seed=9).drop(columns=["churned"]).to_parquet(data)
    cpu0, start = time.process_time(), time.perf_counter()
    report = score(ScoreOptions(model=spec["model"], input=data, output=tmp / f"{spec['model']}-scored.parquet",
                                url=spec["url"], id_column="customer_id", concurrency=spec["concurrency"]))
    wall = time.perf_counter() - start
    return {"model": spec["model"], "rows": report.rows_scored, "rows_rejected": report.rows_rejected,
            "rows_per_s": report.rows_per_s, "wall_s": report.wall_s, "requests": report.requests,
            "request_latency_ms": report.latency_ms,
            "client_cpu_percent": 100.0 * (time.process_time() - cpu0) / max(wall, 1e-9)}


def run_offline(url: str, model: str, rows: int, concurrency: int, tmp: Path) -> dict:
    spec = {"url": url, "model": model, "rows": rows, "concurrency": concurrency, "tmp": str(tmp)}
    done = subprocess.run([sys.executable, "-m", "tritonkit.benchmarks.bench", "--_offline-worker", json.dumps(spec)],
                          capture_output=True, text=True, timeout=900)
    if done.returncode != 0:
        raise RuntimeError(f"offline scenario for {model} failed:\n{done.stderr[-3000:]}")
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
        self.env.events.request.add_listener(self._on_request)

    def _on_request(self, response_time, exception=None, context=None, **_):
        if exception is not None:
            self.failures += 1
            return
        self.samples.append(response_time)
        self.rows += (context or {}).get("rows", 1)

    def summary(self, wall_s: float, cpu_percent: float) -> dict:
        values = np.asarray(self.samples) if self.samples else np.asarray([np.nan])
        return {
            "requests": len(self.samples), "failures": self.failures, "wall_s": round(wall_s, 3),
            "requests_per_s": len(self.samples) / wall_s, "predictions_per_s": self.rows / wall_s,
            **{f"p{q}_ms": float(np.percentile(values, q)) for q in (50, 90, 99)},
            "mean_ms": float(values.mean()),
            "client_cpu_percent": round(cpu_percent, 1), "client_bound": cpu_percent > CLIENT_BOUND_PERCENT,
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


def closed_loop(name: str, host: str, protocol: str, model: str, users: int, batch_rows: int, seconds: float,
                csv_dir: Path) -> dict:
    """`users` Locust users back to back for `seconds` (after a short warm-up), through LocalRunner."""
    import gevent

    from tritonkit.benchmarks.locustfile import user_class

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
    runner.quit()
    recorder.write_csv(csv_dir)
    return {"scenario": name, "model": model, "protocol": protocol, "users": users, "batch_rows": batch_rows,
            "loop": "closed", **recorder.summary(wall, cpu_percent)}


def open_loop(name: str, host: str, model: str, rate: float, seconds: float, csv_dir: Path,
              max_in_flight: int = 256, seed: int = 0) -> dict:
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
    result = {"scenario": name, "model": model, "protocol": "grpc", "loop": "open", "target_rate": rate,
              "dropped": dropped, **recorder.summary(wall, cpu_percent)}
    return result


def server_sweep(host: str, model: str, options: BenchOptions, csv_dir: Path) -> dict:
    """Rising target rates until p99 exceeds the budget, requests fail or the achieved rate falls behind."""
    points, best, misses = [], None, 0
    for rate in options.rates:
        point = open_loop(f"server_{model}_{int(rate)}", host, model, rate, options.seconds, csv_dir)
        # latency counts from the scheduled arrival, so a client or server falling behind shows in p99
        point["meets_budget"] = bool(point["p99_ms"] <= options.budget_ms and point["failures"] == 0)
        points.append(point)
        if point["meets_budget"]:
            best = rate
        else:
            misses += 1
            if misses >= 1:
                break
    return {"model": model, "budget_ms": options.budget_ms, "points": points,
            "max_rate_within_budget": best,
            "client_bound": any(p["client_bound"] for p in points)}


# ---------------------------------------------------------------- cost, report, plots


def cost_table(server: dict, offline: dict, options: BenchOptions) -> list[dict]:
    rows = []

    def per_million(price_per_hour: float, per_s: float | None) -> float | None:
        return None if not per_s else price_per_hour / (per_s * 3600.0) * 1e6

    for model, sweep in server.items():
        rate = sweep["max_rate_within_budget"]
        rows.append({"mode": f"real time, always on ({model}, at the max rate within {options.budget_ms:g} ms p99)",
                     "price_per_hour": options.price_realtime_per_hour, "predictions_per_s": rate,
                     "usd_per_million": per_million(options.price_realtime_per_hour, rate)})
        rows.append({"mode": f"real time, always on ({model}, {options.realtime_utilisation:.0%} average utilisation)",
                     "price_per_hour": options.price_realtime_per_hour,
                     "predictions_per_s": rate * options.realtime_utilisation if rate else None,
                     "usd_per_million": per_million(options.price_realtime_per_hour,
                                                    rate * options.realtime_utilisation if rate else None)})
    for model, result in offline.items():
        rows.append({"mode": f"scheduled batch ({model}, tritonkit score)",
                     "price_per_hour": options.price_batch_per_hour, "predictions_per_s": result["rows_per_s"],
                     "usd_per_million": per_million(options.price_batch_per_hour, result["rows_per_s"])})
    return rows


def _fmt(value, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def headline_rows(summary: dict) -> list[list[str]]:
    ref = summary.get("reference") or {}
    single_ref = (ref.get("single_row") or {}).get("p50_ms")
    rows = []
    for r in summary["single_stream"]:
        ratio = r["p50_ms"] / single_ref if single_ref else None
        rows.append(["single-stream", r["model"], r["protocol"], "1 user, 1 row", _fmt(r["predictions_per_s"], 0),
                     _fmt(r["p50_ms"]), _fmt(r["p90_ms"]), _fmt(r["p99_ms"]),
                     f"{ratio:.1f}x latency" if ratio else "-", _fmt(r["client_cpu_percent"], 0),
                     "client-bound" if r["client_bound"] else ""])
    for r in summary["micro_batch"]:
        ratio = r["predictions_per_s"] / ref["micro_batch_rows_per_s"] if ref else None
        rows.append(["closed loop", r["model"], r["protocol"], f"{r['users']} users, {r['batch_rows']} rows",
                     _fmt(r["predictions_per_s"], 0), _fmt(r["p50_ms"]), _fmt(r["p90_ms"]), _fmt(r["p99_ms"]),
                     f"{ratio:.2f}x throughput" if ratio else "-", _fmt(r["client_cpu_percent"], 0),
                     "client-bound" if r["client_bound"] else ""])
    for model, sweep in summary["server"].items():
        ok = [p for p in sweep["points"] if p["meets_budget"]]
        p = ok[-1] if ok else sweep["points"][0]
        ratio = p["p50_ms"] / ref["single_row"]["p50_ms"] if ref else None
        rows.append(["server (open loop)", model, "grpc",
                     f"max rate with p99 <= {sweep['budget_ms']:g} ms: {_fmt(sweep['max_rate_within_budget'], 0)}/s",
                     _fmt(p["predictions_per_s"], 0), _fmt(p["p50_ms"]), _fmt(p["p90_ms"]), _fmt(p["p99_ms"]),
                     f"{ratio:.1f}x latency" if ratio else "-", _fmt(p["client_cpu_percent"], 0),
                     ("client-bound" if sweep["client_bound"] else "") + ("" if ok else " budget missed at lowest rate")])
    for model, r in summary["offline"].items():
        ratio = r["rows_per_s"] / ref["bulk_rows_per_s"] if ref else None
        rows.append(["offline (score)", model, "grpc", f"{r['rows']:,} rows", _fmt(r["rows_per_s"], 0),
                     "-", "-", "-", f"{ratio:.2f}x throughput" if ratio else "-", _fmt(r["client_cpu_percent"], 0),
                     "client-bound" if r["client_cpu_percent"] > CLIENT_BOUND_PERCENT else ""])
    if ref:
        s = ref["single_row"]
        rows.append(["reference", "onnxruntime in-process", "-", "1 row", _fmt(s["rows_per_s"], 0), _fmt(s["p50_ms"], 3),
                     "-", _fmt(s["p99_ms"], 3), "1x", "-", ""])
        rows.append(["reference", "onnxruntime in-process", "-", "micro-batch / bulk",
                     f"{ref['micro_batch_rows_per_s']:,.0f} / {ref['bulk_rows_per_s']:,.0f}", "-", "-", "-", "1x", "-", ""])
    return rows


HEADLINE_COLUMNS = ["scenario", "model", "protocol", "shape", "predictions/s", "p50 ms", "p90 ms", "p99 ms",
                    "vs onnxruntime", "client CPU %", "note"]


def markdown_table(columns: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def write_report(summary: dict, out: Path) -> str:
    o = summary["options"]
    parts = [f"# tritonkit bench: {o['model']}", "",
             f"{summary['environment']['when']} on {summary['environment']['machine']}; server: {summary['server_url']}"
             f" ({'embedded' if summary['embedded'] else 'given URL'}); {o['seconds']:g} s per measurement; "
             f"latency budget {o['budget_ms']:g} ms (p99).", "",
             "`" + summary["command"] + "`", "", "## Headline", "",
             markdown_table(HEADLINE_COLUMNS, headline_rows(summary)), "",
             "single-stream and closed loop: Locust users waiting for each answer (closed loop, under-reports latency at "
             "saturation). server: open-loop Poisson arrivals, latency from the scheduled arrival. `_nobatch` is the same "
             "ONNX without dynamic_batching. vs onnxruntime: latency ratio (Triton / in-process) or throughput ratio.", ""]
    if summary["server"]:
        parts += ["## Server scenario sweep (dynamic batching on vs off)", ""]
        rows = []
        for model, sweep in summary["server"].items():
            for p in sweep["points"]:
                rows.append([model, _fmt(p["target_rate"], 0), _fmt(p["requests_per_s"], 0), _fmt(p["p50_ms"]),
                             _fmt(p["p90_ms"]), _fmt(p["p99_ms"]), p["failures"], _fmt(p["client_cpu_percent"], 0),
                             "yes" if p["meets_budget"] else "no"])
        parts += [markdown_table(["model", "target/s", "achieved/s", "p50 ms", "p90 ms", "p99 ms", "failures",
                                  "client CPU %", "within budget"], rows), ""]
    if summary["cost"]:
        parts += ["## Cost per million predictions", "",
                  f"Prices (USD per instance-hour, from the options): real time {o['price_realtime_per_hour']:g}, "
                  f"batch {o['price_batch_per_hour']:g}. Throughputs measured here stand in for that instance.", "",
                  markdown_table(["mode", "$/hour", "predictions/s", "$ per million"],
                                 [[r["mode"], _fmt(r["price_per_hour"], 3), _fmt(r["predictions_per_s"], 0),
                                   ("-" if r["usd_per_million"] is None else f"{r['usd_per_million']:.3g}")] for r in summary["cost"]]), ""]
    bound = summary["client_bound"]
    parts += ["## Client capacity", "",
              ("**Client-bound**: the load generator used more than "
               f"{CLIENT_BOUND_PERCENT:g} % of a core in: {', '.join(bound)}. Those figures measure the client, not "
               "the server; rerun with Locust's `--processes N` (or master/workers) or from another machine.")
              if bound else f"No scenario had the client above {CLIENT_BOUND_PERCENT:g} % of one core.", "",
              "## Plots", "", "![latency vs throughput](latency_vs_throughput.png)", "",
              "![real time vs batch](realtime_vs_batch.png)", ""]
    text = "\n".join(parts)
    (out / "report.md").write_text(text)
    return text


def write_plots(summary: dict, out: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for model, sweep in summary["server"].items():
        points = sweep["points"]
        x = [p["requests_per_s"] for p in points]
        for q, style in (("p50", ":"), ("p90", "--"), ("p99", "-")):
            ax.plot(x, [p[f"{q}_ms"] for p in points], style, marker="o", label=f"{model} {q}")
    ax.axhline(summary["options"]["budget_ms"], color="red", linewidth=0.8, label="budget")
    ax.set_xlabel("achieved predictions/s (open loop)")
    ax.set_ylabel("latency ms")
    ax.set_yscale("log")
    ax.set_title("Latency percentiles vs throughput")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "latency_vs_throughput.png", dpi=100)
    plt.close(fig)

    labels, values = [], []
    for r in summary["single_stream"]:
        labels.append(f"single {r['model']} {r['protocol']}")
        values.append(r["predictions_per_s"])
    for r in summary["micro_batch"]:
        labels.append(f"closed {r['model']} {r['users']}x{r['batch_rows']}")
        values.append(r["predictions_per_s"])
    for model, sweep in summary["server"].items():
        labels.append(f"server {model} max")
        values.append(sweep["max_rate_within_budget"] or 0)
    for model, r in summary["offline"].items():
        labels.append(f"offline {model}")
        values.append(r["rows_per_s"])
    ref = summary.get("reference")
    if ref:
        labels += ["ort 1 row", "ort micro-batch", "ort bulk"]
        values += [ref["single_row"]["rows_per_s"], ref["micro_batch_rows_per_s"], ref["bulk_rows_per_s"]]
    fig, ax = plt.subplots(figsize=(7, 0.35 * len(labels) + 1.5))
    ax.barh(labels, values, color=["tab:blue" if not l.startswith(("offline", "ort")) else "tab:orange"
                                   if l.startswith("offline") else "tab:gray" for l in labels])
    ax.set_xscale("log")
    ax.set_xlabel("predictions/s (log)")
    ax.set_title("Real time vs batch")
    fig.tight_layout()
    fig.savefig(out / "realtime_vs_batch.png", dpi=100)
    plt.close(fig)
    return ["latency_vs_throughput.png", "realtime_vs_batch.png"]


# ---------------------------------------------------------------- the run


def _served(url: str, model: str) -> bool:
    from tritonkit.clients.realtime import TritonClient

    try:
        with TritonClient(url, protocol="grpc") as client:
            client.metadata(model)
        return True
    except Exception:  # noqa: BLE001
        return False


def run(options: BenchOptions, command: str = "", log=print) -> dict:
    """Runs the scenarios and writes everything under options.out; returns the summary."""
    import matplotlib
    import psutil

    out = options.out
    out.mkdir(parents=True, exist_ok=True)
    csv_dir = out / "locust"
    with tempfile.TemporaryDirectory(prefix="tritonkit-bench-") as tmp:
        tmp = Path(tmp)
        server = None
        onnx = options.onnx
        if options.url is None:
            from tritonkit.server import EmbeddedServer

            log("exporting churn (+ a copy without dynamic batching) and starting the embedded server")
            repository = tmp / "repository"
            repository.mkdir()
            onnx = prepare_repository(repository, options.model)
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
            summary = {"command": command or "tritonkit bench", "options": json.loads(json.dumps(asdict(options),
                                                                                                 default=str)),
                       "server_url": url, "embedded": server is not None, "models": models,
                       "environment": {"when": time.strftime("%Y-%m-%d %H:%M:%S"),
                                       "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.system()}",
                                       "python": platform.python_version(), "matplotlib": matplotlib.__version__,
                                       "psutil": psutil.__version__},
                       "reference": None, "single_stream": [], "micro_batch": [], "server": {}, "offline": {}}
            if onnx is not None:
                log("onnxruntime in-process reference")
                summary["reference"] = onnxruntime_reference(Path(onnx), options.micro_batch_rows, options.seconds,
                                                             min(options.offline_rows, 200_000))
            if "single-stream" in options.scenarios:
                for model in models:
                    log(f"single-stream: {model} grpc")
                    summary["single_stream"].append(closed_loop(f"single_stream_{model}_grpc", url, "grpc", model, 1,
                                                                1, options.seconds, csv_dir))
                if http_url:
                    log(f"single-stream: {options.model} http")
                    summary["single_stream"].append(closed_loop(f"single_stream_{options.model}_http", http_url,
                                                                "http", options.model, 1, 1, options.seconds, csv_dir))
            if "server" in options.scenarios:
                for model in models:
                    log(f"closed-loop micro-batch: {model} {options.micro_batch_users} users x "
                        f"{options.micro_batch_rows} rows")
                    summary["micro_batch"].append(closed_loop(
                        f"micro_batch_{model}", url, "grpc", model, options.micro_batch_users,
                        options.micro_batch_rows, options.seconds, csv_dir))
                    log(f"server (open loop): {model}, rates {options.rates}")
                    summary["server"][model] = server_sweep(url, model, options, csv_dir)
            if "offline" in options.scenarios:
                for model in models:
                    log(f"offline: {model}, {options.offline_rows:,} rows through score()")
                    summary["offline"][model] = run_offline(url, model, options.offline_rows,
                                                            options.offline_concurrency, tmp)
        finally:
            if server is not None:
                server.stop()
    summary["cost"] = cost_table(summary["server"], summary["offline"], options)
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
    p.add_argument("--quick", action="store_true", help="short measurements (about 2 minutes in all)")
    p.add_argument("--url", help="gRPC HOST:PORT of a running Triton (default: start the embedded server)")
    p.add_argument("--http-url", help="HTTP HOST:PORT for the HTTP single-stream point when --url is given")
    p.add_argument("--model", default="churn")
    p.add_argument("--onnx", type=Path, help="the model's ONNX file for the onnxruntime reference (with --url)")
    p.add_argument("--out", type=Path, default=Path("bench-out"))
    p.add_argument("--seconds", type=float, help="seconds per measurement (default 3 quick, 10 otherwise)")
    p.add_argument("--budget-ms", type=float, default=100.0, help="p99 latency budget for the server scenario")
    p.add_argument("--rates", type=lambda s: [float(x) for x in s.split(",")], default=[],
                   help="server scenario target rates, comma-separated (default: doubling from 50/s)")
    p.add_argument("--max-rate", type=float, help="highest default sweep rate (default 1600 quick, 25600)")
    p.add_argument("--micro-batch-rows", type=int, default=64)
    p.add_argument("--micro-batch-users", type=int, default=4)
    p.add_argument("--offline-rows", type=int, help="rows for the offline scenario (default 100k quick, 1M)")
    p.add_argument("--price-realtime-per-hour", type=float, default=DEFAULT_PRICE_REALTIME_PER_HOUR)
    p.add_argument("--price-batch-per-hour", type=float, default=DEFAULT_PRICE_BATCH_PER_HOUR)
    p.add_argument("--realtime-utilisation", type=float, default=0.3)
    p.add_argument("--scenarios", default="single-stream,server,offline")
    p.add_argument("--_offline-worker", dest="offline_worker", help=argparse.SUPPRESS)
    return p


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    args = parser().parse_args(argv)
    if args.offline_worker:
        print(json.dumps(offline_worker(json.loads(args.offline_worker))))
        return
    # The load process: Locust's import monkey-patches with gevent, first, before any thread or channel
    # exists (a later import can deadlock on an import lock another thread holds); gRPC's gevent support after.
    import tritonkit.benchmarks.locustfile  # noqa: F401
    import grpc.experimental.gevent as grpc_gevent

    grpc_gevent.init_gevent()
    options = BenchOptions(
        url=args.url, http_url=args.http_url, model=args.model, onnx=args.onnx, out=args.out, quick=args.quick,
        seconds=args.seconds, budget_ms=args.budget_ms, rates=args.rates, max_rate=args.max_rate,
        micro_batch_rows=args.micro_batch_rows, micro_batch_users=args.micro_batch_users,
        offline_rows=args.offline_rows, price_realtime_per_hour=args.price_realtime_per_hour,
        price_batch_per_hour=args.price_batch_per_hour, realtime_utilisation=args.realtime_utilisation,
        scenarios=tuple(s.strip() for s in args.scenarios.split(",") if s.strip()),
    )
    start = time.perf_counter()
    summary = run(options, command="tritonkit bench " + " ".join(argv), log=lambda m: print(m, flush=True))
    print()
    print(markdown_table(HEADLINE_COLUMNS, headline_rows(summary)))
    print(f"\nwrote {options.out}/report.md, summary.json, locust/*.csv, *.png in {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
