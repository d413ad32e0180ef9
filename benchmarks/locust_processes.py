"""A closed-loop point again with Locust's own multi-process mode, when one Locust process is not enough.

    locust -f benchmarks/locustfile.py --headless --processes N -u USERS -r USERS -t SECONDS --csv PREFIX

runs as a child process (a master and N forked workers, one core each); the figures come from
Locust's CSV (its Aggregated row, statistics reset once all users run: `--reset-stats`), the
client's CPU from the children's resource usage (start-up included).
"""

from __future__ import annotations

import csv
import math
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

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


def run(
    name: str,
    host: str,
    protocol: str,
    model: str,
    users: int,
    batch_rows: int,
    seconds: float,
    processes: int,
    csv_dir: Path,
) -> dict:
    """`users` closed-loop users spread over `processes` Locust worker processes for `seconds`."""
    csv_dir.mkdir(parents=True, exist_ok=True)
    prefix = csv_dir / name
    env = {
        **os.environ,
        "TRITONKIT_MODEL": model,
        "TRITONKIT_PROTOCOL": protocol,
        "TRITONKIT_BATCH_ROWS": str(batch_rows),
    }
    run_s = max(3, math.ceil(seconds) + 1)  # one more second: the statistics restart once all users run
    command = [
        sys.executable,
        "-m",
        "locust",
        "-f",
        str(LOCUSTFILE),
        "--host",
        host,
        "--headless",
        "--processes",
        str(processes),
        "-u",
        str(users),
        "-r",
        str(users),
        "-t",
        f"{run_s}s",
        "--reset-stats",
        "--csv",
        str(prefix),
        "--only-summary",
        "--loglevel",
        "WARNING",
    ]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=run_s + 90)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise RuntimeError(
            f"locust --processes {processes} for {name} exited {done.returncode}:\n{done.stderr[-3000:]}"
        )
    row = aggregated_row(Path(f"{prefix}_stats.csv"))
    requests_per_s = _number(row["Requests/s"])
    cpu_percent = 100 * ((after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)) / max(wall, 1e-9)
    return {
        "scenario": name,
        "model": model,
        "protocol": protocol,
        "users": users,
        "batch_rows": batch_rows,
        "loop": "closed",
        "processes": processes,
        "source": "locust --processes (Aggregated row of its CSV)",
        "requests": int(row["Request Count"]),
        "failures": int(row["Failure Count"]),
        "wall_s": round(wall, 3),
        "requests_per_s": requests_per_s,
        "predictions_per_s": requests_per_s * batch_rows,
        **{f"p{q}_ms": _number(row[f"{q}%"]) for q in (50, 90, 99)},
        "mean_ms": _number(row["Average Response Time"]),
        # all processes together, start-up included; `processes` cores are available to it
        "client_cpu_percent": round(cpu_percent, 1),
        "client_bound": cpu_percent > 90.0 * processes,
    }
