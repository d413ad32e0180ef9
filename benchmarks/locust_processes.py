"""A closed-loop point again with Locust's own multi-process mode, when one Locust process is not enough.

    locust -f benchmarks/locustfile.py --headless --processes N -u USERS -r USERS -t SECONDS --csv PREFIX

runs as a child process (a master and N forked workers, one core each); the figures come from
Locust's CSV (its Aggregated row, statistics reset once all users run: `--reset-stats`), the
client's own cost from the users' accounting (client_cost.py: CPU per request and share of the cores
over the same window, every worker summed), or from the children's resource usage (start-up
included) when that is missing.
"""

from __future__ import annotations

import csv
import json
import math
import os
import resource
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from tritonkit.benchmarks import spawn
from tritonkit.benchmarks.client_cost import COST_FILE_ENV

LOCUSTFILE = Path(__file__).with_name("locustfile.py")


def aggregated_row(stats_csv: Path) -> dict[str, str]:
    """The `Aggregated` row of a Locust `<prefix>_stats.csv`."""
    with open(stats_csv, newline="") as handle:
        for row in csv.DictReader(handle):
            if row["Name"] == "Aggregated":
                return row
    raise ValueError(f"{stats_csv} has no Aggregated row")


def _number(value: str) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


@dataclass(frozen=True)
class LocustRun:
    """One multi-process closed-loop point: `users` users over `processes` Locust worker processes."""

    name: str
    host: str
    protocol: str
    model: str
    users: int
    batch_rows: int
    seconds: float
    processes: int

    @property
    def run_s(self) -> int:
        return max(3, math.ceil(self.seconds) + 1)  # one more second: the statistics restart once all users run

    def command(self, prefix: Path) -> list[str]:
        users = str(self.users)
        return [
            *(sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--host", self.host, "--headless"),
            *("--processes", str(self.processes), "-u", users, "-r", users, "-t", f"{self.run_s}s"),
            *("--reset-stats", "--csv", str(prefix), "--only-summary", "--loglevel", "WARNING"),
        ]

    def environment(self, cost_file: Path) -> dict[str, str]:
        return {
            **os.environ,
            "TRITONKIT_MODEL": self.model,
            "TRITONKIT_PROTOCOL": self.protocol,
            "TRITONKIT_BATCH_ROWS": str(self.batch_rows),
            COST_FILE_ENV: str(cost_file),
        }


def run(point: LocustRun, csv_dir: Path) -> dict:
    """Runs `point` with `locust --processes` and returns its figures (Locust's CSV) and the client's cost."""
    csv_dir.mkdir(parents=True, exist_ok=True)
    prefix = csv_dir / point.name
    cost_file = csv_dir / f"{point.name}_client_cost.json"
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = spawn.run(point.command(prefix), timeout_s=point.run_s + 90, env=point.environment(cost_file))
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise RuntimeError(
            f"locust --processes {point.processes} for {point.name} exited {done.returncode}:\n{done.stderr[-3000:]}"
        )
    row = aggregated_row(Path(f"{prefix}_stats.csv"))
    cpu_percent = 100 * ((after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)) / max(wall, 1e-9)
    cost = json.loads(cost_file.read_text()) if cost_file.is_file() else {}
    return _result(point, row, wall, cpu_percent, cost)


def _result(point: LocustRun, row: dict[str, str], wall: float, cpu_percent: float, cost: dict) -> dict:
    requests_per_s = _number(row["Requests/s"])
    # the measured window's share of the cores (start-up left out) when the users reported it
    window_percent = cost.get("cpu_percent", cpu_percent)
    return {
        "scenario": point.name,
        "model": point.model,
        "protocol": point.protocol,
        "users": point.users,
        "batch_rows": point.batch_rows,
        "loop": "closed",
        "processes": point.processes,
        "source": "locust --processes (Aggregated row of its CSV)",
        "requests": int(row["Request Count"]),
        "failures": int(row["Failure Count"]),
        "wall_s": round(wall, 3),
        "requests_per_s": requests_per_s,
        "predictions_per_s": requests_per_s * point.batch_rows,
        **{f"p{q}_ms": _number(row[f"{q}%"]) for q in (50, 90, 99)},
        "mean_ms": _number(row["Average Response Time"]),
        # all processes together; `processes` cores are available to it
        "client_cpu_percent": round(window_percent, 1),
        "client_cpu_ms_per_request": cost.get("cpu_ms_per_request"),
        "client_cost": cost,
        "client_bound": window_percent > 90.0 * point.processes,
    }
