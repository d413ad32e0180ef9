"""Locust-driven scenarios of `tritonkit bench`: closed-loop users and the open-loop (Poisson) server sweep.

Every request is recorded exactly (Locust's own percentiles are rounded to ms), with the client's own
CPU over the window. Import only in the load process: the Locust users monkey-patch with gevent.
"""

from __future__ import annotations

import csv
import os
import time
from pathlib import Path

import numpy as np

from tritonkit.benchmarks.client_cost import summarise
from tritonkit.benchmarks.report import CLIENT_BOUND_PERCENT


class _Recorder:
    """A Locust Environment plus exact per-request samples (Locust's own percentiles are rounded to ms)."""

    def __init__(self, name: str, user_classes: list, host: str):
        from locust.env import Environment

        from tritonkit.benchmarks.locustfile import STOP_TIMEOUT_S

        self.name = name
        # users finish their request in flight when the run stops (a call cut off is a cancellation, see locustfile)
        self.env = Environment(user_classes=user_classes, host=host, stop_timeout=STOP_TIMEOUT_S)
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
        requests = len(self.samples) + self.failures
        cost = summarise(cpu_percent / 100 * wall_s, requests, wall_s, 1, float(values.mean()))
        return {
            "requests": len(self.samples),
            "failures": self.failures,
            "wall_s": round(wall_s, 3),
            "requests_per_s": len(self.samples) / wall_s,
            "predictions_per_s": self.rows / wall_s,
            **{f"p{q}_ms": float(np.percentile(values, q)) for q in (50, 90, 99)},
            "mean_ms": float(values.mean()),
            "client_cpu_percent": round(cpu_percent, 1),
            "client_cpu_ms_per_request": cost["cpu_ms_per_request"],
            "client_cost": cost,
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

    from tritonkit.benchmarks.locustfile import close_all_senders, user_class

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
    close_all_senders()  # users killed before on_stop: this Environment's events are not locust.events
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

    from tritonkit.benchmarks.locustfile import GrpcSender, GrpcTritonUser, send_and_report
    from tritonkit.benchmarks.payloads import build_payloads, grpc_request
    from tritonkit.clients.endpoint import Endpoint
    from tritonkit.clients.realtime import TritonClient

    recorder = _Recorder(name, [GrpcTritonUser], host)
    endpoint = Endpoint(host, protocol="grpc")
    with TritonClient(endpoint) as client:
        meta = client.metadata(model)
    bodies = [grpc_request(meta, arrays) for arrays in build_payloads(meta, 1, None, 256, seed)]
    sender = GrpcSender(endpoint)
    for body in bodies[:20]:  # warm-up, not recorded
        sender.send(body)
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
            body = bodies[sent % len(bodies)]
            pool.spawn(send_and_report, recorder.env, sender.send, body, model, "grpc", 1, due)
            sent += 1
        due += rng.exponential(1.0 / rate)
    pool.join(timeout=30)
    cpu_percent = cpu()
    wall = seconds  # the arrival window: achieved rate = completed / window
    sender.close()
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


def server_sweep(host: str, model: str, rates: list[float], seconds: float, budget_ms: float, csv_dir: Path) -> dict:
    """Rising target rates until two in a row miss the budget (p99 above it, or failed requests).

    Two, not one: on a shared machine a single pause can push one short window's p99 over the budget.
    """
    points, best, misses = [], None, 0
    for rate in rates:
        point = open_loop(f"server_{model}_{int(rate)}", host, model, rate, seconds, csv_dir)
        # latency counts from the scheduled arrival, so a client or server falling behind shows in p99
        point["meets_budget"] = bool(point["p99_ms"] <= budget_ms and point["failures"] == 0)
        points.append(point)
        if point["meets_budget"]:
            best, misses = rate, 0
        else:
            misses += 1
            if misses >= 2:
                break
    return {
        "model": model,
        "budget_ms": budget_ms,
        "points": points,
        "max_rate_within_budget": best,
        "client_bound": any(p["client_bound"] for p in points),
    }


def micro_batch(
    url: str, model: str, users: int, rows: int, seconds: float, processes: int | None, csv_dir: Path, log
) -> list[dict]:
    """The closed-loop micro-batch point in this process, and again with Locust --processes N when asked for
    or when one process could not keep up (client-bound)."""
    from tritonkit.benchmarks import locust_processes

    name = f"micro_batch_{model}"
    log(f"closed-loop micro-batch: {model} {users} users x {rows} rows")
    point = closed_loop(name, url, "grpc", model, users, rows, seconds, csv_dir)
    points = [point]
    count = processes or (os.cpu_count() or 1 if point["client_bound"] else 0)
    if count > 1 and users > 1:
        why = "asked for" if processes else f"client at {point['client_cpu_percent']:.0f} % of a core"
        log(f"closed-loop micro-batch again with Locust --processes {count} ({why})")
        rerun = locust_processes.run(
            locust_processes.LocustRun(f"{name}_processes{count}", url, "grpc", model, users, rows, seconds, count),
            csv_dir,
        )
        rerun["rerun_of"] = name if point["client_bound"] else None
        points.append(rerun)
    return points
