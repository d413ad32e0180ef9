"""What a Locust run cost the client itself: CPU per request beside the latency it measured.

A closed-loop load generator that spends a millisecond of CPU per request cannot measure a server
that answers in half a millisecond: past about 90 % of its cores, the throughput and much of the
latency it reports are its own. Every process of a Locust run (the local runner, or the master and
each worker of `--processes N`) counts its CPU time (all threads, gRPC's included) and its requests
from the moment all users run (when Locust resets its statistics) to the end; workers send theirs to
the master with their statistics. At the end the run logs one line and, when
TRITONKIT_CLIENT_COST_FILE is set, writes the figures there as JSON:

    {"processes": 2, "requests": 41234, "cpu_s": 9.1, "cpu_ms_per_request": 0.221,
     "cpu_percent": 182.0, "mean_latency_ms": 0.95, "client_bound": true, "verdict": "..."}

This module imports nothing from Locust: the locustfile installs it on Locust's events.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

logger = logging.getLogger(__name__)

COST_FILE_ENV = "TRITONKIT_CLIENT_COST_FILE"
REPORT_KEY = "tritonkit_client_cost"
CLIENT_BOUND_PERCENT = 90.0  # of each process's core: past it the client, not the server, sets the numbers
CLIENT_HEAVY_PERCENT = 50.0  # past it the client's own work is a large share of every measured latency


@dataclass
class Window:
    """This process's CPU seconds and requests since the window opened, and since the last `take`."""

    cpu0: float = field(default_factory=time.process_time)
    wall0: float = field(default_factory=time.perf_counter)
    requests: int = 0
    taken_cpu: float = 0.0
    taken_requests: int = 0
    wall_end: float | None = None

    def take(self) -> tuple[float, int]:
        """(CPU seconds, requests) since the last take: what a worker reports to its master."""
        cpu = time.process_time() - self.cpu0
        delta = (cpu - self.taken_cpu, self.requests - self.taken_requests)
        self.taken_cpu, self.taken_requests = cpu, self.requests
        return delta

    @property
    def cpu_s(self) -> float:
        return time.process_time() - self.cpu0

    @property
    def wall_s(self) -> float:
        return (self.wall_end or time.perf_counter()) - self.wall0


def summarise(cpu_s: float, requests: int, wall_s: float, processes: int, mean_latency_ms: float | None) -> dict:
    """The client's cost per request and the verdict on who set the numbers."""
    per_request = 1000.0 * cpu_s / requests if requests else None
    percent = 100.0 * cpu_s / wall_s if wall_s > 0 else 0.0
    per_process = percent / max(processes, 1)
    if per_process > CLIENT_BOUND_PERCENT:
        verdict = (
            f"client-bound: the load generator used {per_process:.0f} % of each of its {processes} process(es)' "
            "core; these numbers are the client's, not the server's (add processes or another machine)"
        )
    elif per_process > CLIENT_HEAVY_PERCENT:
        verdict = (
            f"client-heavy: the load generator used {per_process:.0f} % of each process' core; its own work is "
            "a large share of every latency it measured"
        )
    else:
        verdict = "server-bound: the client had spare CPU"
    return {
        "processes": processes,
        "requests": requests,
        "cpu_s": round(cpu_s, 3),
        "wall_s": round(wall_s, 3),
        "cpu_ms_per_request": None if per_request is None else round(per_request, 4),
        "cpu_percent": round(percent, 1),
        "mean_latency_ms": None if mean_latency_ms is None else round(mean_latency_ms, 3),
        "client_bound": per_process > CLIENT_BOUND_PERCENT,
        "verdict": verdict,
    }


class ClientCost:
    """Installed on one Locust Environment; its role (local, master, worker) comes from the runner."""

    def __init__(self, environment):
        self.environment = environment
        self.role = type(environment.runner).__name__.replace("Runner", "").lower()  # local, master, worker
        self.window = Window()
        self.workers: dict[str, list[float]] = {}  # worker id -> [CPU seconds, requests] reported
        events = environment.events
        events.request.add_listener(self._on_request)
        events.spawning_complete.add_listener(self._restart)
        events.test_stop.add_listener(self._stopped)
        if self.role == "worker":
            events.report_to_master.add_listener(self._report)
        else:
            events.worker_report.add_listener(self._collect)
            events.quitting.add_listener(self._finish)

    def _on_request(self, **_) -> None:
        self.window.requests += 1

    def _restart(self, **_) -> None:
        """All users run: Locust resets its statistics (--reset-stats), and the window restarts with them."""
        self.window = Window()
        self.workers.clear()

    def _stopped(self, **_) -> None:
        self.window.wall_end = time.perf_counter()

    def _report(self, data: dict, **_) -> None:
        cpu_s, requests = self.window.take()
        data[REPORT_KEY] = {"cpu_s": cpu_s, "requests": requests}

    def _collect(self, client_id: str, data: dict, **_) -> None:
        report = data.get(REPORT_KEY)
        if report:
            totals = self.workers.setdefault(client_id, [0.0, 0])
            totals[0] += report["cpu_s"]
            totals[1] += report["requests"]

    def summary(self) -> dict:
        """This run's figures: the master's own CPU plus every worker's, over the requests they sent."""
        cpu_s = self.window.cpu_s + sum(cpu for cpu, _ in self.workers.values())
        requests = self.window.requests if self.role == "local" else int(sum(n for _, n in self.workers.values()))
        processes = max(len(self.workers), 1) if self.role == "master" else 1
        stats = self.environment.stats.total if self.environment.stats else None
        mean = stats.avg_response_time if stats is not None and stats.num_requests else None
        return summarise(cpu_s, requests, self.window.wall_s, processes, mean)

    def _finish(self, **_) -> None:
        summary = self.summary()
        level = logging.WARNING if summary["client_bound"] else logging.INFO
        logger.log(
            level,
            "client cost: %s ms CPU per request over %d requests (%d process(es), %.0f %% of a core); "
            "mean latency measured %s ms; %s",
            summary["cpu_ms_per_request"],
            summary["requests"],
            summary["processes"],
            summary["cpu_percent"],
            summary["mean_latency_ms"],
            summary["verdict"],
        )
        target = os.environ.get(COST_FILE_ENV)
        if target:
            Path(target).write_text(json.dumps(summary, indent=2))
