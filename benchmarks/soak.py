"""A bounded soak: sustained real-time traffic and bulk scoring together, watched for errors, p99 drift and memory.

    python -m tritonkit.benchmarks.soak --duration 120 [--threads 4] [--rate 200] [--window-s 10] [--json soak.json]

Exports the churn example to a temporary repository and starts the embedded Triton. For the whole
duration, `--threads` threads (each with its own client, gRPC and HTTP alternately) send single-row
predictions paced to `--rate` requests/s in all, while `tritonkit score` runs back to back in a
child process over `--bulk-rows` rows. Every second the resident memory of the tritonserver process
and its children (the Python backend stubs) is sampled. The report has one row per window (requests,
errors, p50/p99 latency, server RSS) and a summary: errors (expected 0), p99 drift (last window
against the first), RSS growth, bulk runs and rows lost (expected 0).

Latency is measured from each request's send (paced closed loop: a thread that falls behind its pace
sends at once, and the late sends are counted).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import psutil

from tritonkit.clients import TritonClient
from tritonkit.export.churn import FEATURES, export_churn, synthetic_customers
from tritonkit.server import EmbeddedServer


@dataclass
class Samples:
    """What the traffic, bulk and memory threads record; appended from several threads (list.append is atomic)."""

    started: float = field(default_factory=time.monotonic)
    calls: list[tuple[float, float, str | None]] = field(default_factory=list)  # (t, latency ms, error)
    memory: list[tuple[float, int, int]] = field(default_factory=list)  # (t, RSS bytes, processes)
    bulk: list[dict] = field(default_factory=list)
    late_sends: list[int] = field(default_factory=list)  # one count per traffic thread

    def now(self) -> float:
        return time.monotonic() - self.started


def server_rss(pid: int) -> tuple[int, int]:
    """Resident bytes of the tritonserver process and all its children, and how many processes that is."""
    root = psutil.Process(pid)
    processes = [root, *root.children(recursive=True)]
    total = 0
    for process in processes:
        try:
            total += process.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total, len(processes)


def _traffic(
    url: str, protocol: str, rate: float, records: list[dict], samples: Samples, stop: threading.Event, offset: int
) -> None:
    interval = 1.0 / rate if rate > 0 else 0.0
    with TritonClient(url, protocol=protocol, timeout_s=10) as client:
        client.metadata("churn")
        next_send = time.monotonic()
        i, late = offset, 0
        while not stop.is_set():
            if interval:
                wait = next_send - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
                elif wait < -interval:
                    late += 1
                next_send = max(next_send + interval, time.monotonic() - interval)
            start = time.perf_counter()
            error = None
            try:
                client.predict("churn", records[i % len(records)])
            except Exception as e:  # noqa: BLE001 - every failure is counted, none stops the soak
                error = f"{type(e).__name__}: {e}"[:300]
            samples.calls.append((samples.now(), (time.perf_counter() - start) * 1000, error))
            i += 1
    samples.late_sends.append(late)


def _memory(pid: int, samples: Samples, stop: threading.Event, every_s: float = 1.0) -> None:
    while not stop.wait(every_s):
        try:
            rss, processes = server_rss(pid)
        except psutil.NoSuchProcess:
            return
        samples.memory.append((samples.now(), rss, processes))


def _bulk(url: str, data: Path, rows: int, until: float, samples: Samples, folder: Path) -> None:
    run = 0
    while samples.now() < until:
        out, report = folder / f"scores-{run}.parquet", folder / f"report-{run}.json"
        started = samples.now()
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "tritonkit.cli",
                "score",
                "--model",
                "churn",
                "--input",
                str(data),
                "--output",
                str(out),
                "--url",
                url,
                "--id-column",
                "customer_id",
                "--concurrency",
                "2",
                "--no-progress",
                "--report",
                str(report),
            ],
            capture_output=True,
            text=True,
        )
        entry = {
            "run": run,
            "started_s": round(started, 1),
            "wall_s": round(samples.now() - started, 1),
            "exit_code": result.returncode,
        }
        if report.exists():
            r = json.loads(report.read_text())
            entry.update(
                rows_read=r["rows_read"],
                rows_scored=r["rows_scored"],
                rows_rejected=r["rows_rejected"],
                rows_per_s=r["rows_per_s"],
                retries=r["retries"],
                rows_lost=rows - r["rows_scored"] - r["rows_rejected"],
            )
        else:
            entry.update(rows_lost=rows, error=result.stderr.strip()[-300:])
        samples.bulk.append(entry)
        out.unlink(missing_ok=True)
        run += 1


def _server_failures(metrics_url: str) -> float:
    """Triton's own count of failed inference requests (nv_inference_request_failure, all models)."""
    with urllib.request.urlopen(metrics_url, timeout=5) as response:
        text = response.read().decode()
    return sum(
        float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith("nv_inference_request_failure{")
    )


def summarise(samples: Samples, duration_s: float, window_s: float) -> dict:
    """Per-window figures and the summary (the report's JSON form)."""
    calls = np.array([(t, ms) for t, ms, _ in samples.calls]) if samples.calls else np.zeros((0, 2))
    errors = [(t, e) for t, _, e in samples.calls if e]
    windows = []
    for start in np.arange(0, duration_s, window_s):
        end = min(start + window_s, duration_s)
        ok = calls[(calls[:, 0] >= start) & (calls[:, 0] < end)] if len(calls) else calls
        memory = [rss for t, rss, _ in samples.memory if start <= t < end]
        windows.append(
            {
                "start_s": round(float(start), 1),
                "seconds": round(float(end - start), 1),
                "requests": len(ok),
                "errors": sum(1 for t, _ in errors if start <= t < end),
                "rps": round(len(ok) / (end - start), 1) if end > start else 0.0,
                "p50_ms": round(float(np.percentile(ok[:, 1], 50)), 3) if len(ok) else None,
                "p99_ms": round(float(np.percentile(ok[:, 1], 99)), 3) if len(ok) else None,
                "server_rss_mb": round(max(memory) / 2**20, 1) if memory else None,
            }
        )
    # Drift compares whole windows: a short last window's p99 rests on too few requests.
    p99 = [w["p99_ms"] for w in windows if w["p99_ms"] is not None and w["seconds"] >= window_s / 2]
    rss = [m[1] for m in samples.memory]
    rows_lost = sum(b["rows_lost"] for b in samples.bulk)
    return {
        "duration_s": duration_s,
        "window_s": window_s,
        "realtime": {
            "requests": len(samples.calls),
            "errors": len(errors),
            "first_errors": [e for _, e in errors[:5]],
            "late_sends": sum(samples.late_sends),
            "p50_ms": round(float(np.percentile(calls[:, 1], 50)), 3) if len(calls) else None,
            "p99_ms": round(float(np.percentile(calls[:, 1], 99)), 3) if len(calls) else None,
            "p99_first_window_ms": p99[0] if p99 else None,
            "p99_last_window_ms": p99[-1] if p99 else None,
            "p99_drift": round(p99[-1] / p99[0], 2) if len(p99) > 1 and p99[0] else None,
            "p99_max_over_min": round(max(p99) / min(p99), 2) if p99 and min(p99) else None,
        },
        "bulk": {
            "runs": len(samples.bulk),
            "failed_runs": sum(1 for b in samples.bulk if b["exit_code"] != 0),
            "rows_scored": sum(b.get("rows_scored", 0) for b in samples.bulk),
            "rows_lost": rows_lost,
            "retries": sum(b.get("retries", 0) for b in samples.bulk),
            "runs_detail": samples.bulk,
        },
        "server_memory": {
            "processes": samples.memory[-1][2] if samples.memory else None,
            "rss_first_mb": round(rss[0] / 2**20, 1) if rss else None,
            "rss_last_mb": round(rss[-1] / 2**20, 1) if rss else None,
            "rss_max_mb": round(max(rss) / 2**20, 1) if rss else None,
            "rss_growth_mb": round((rss[-1] - rss[0]) / 2**20, 1) if rss else None,
        },
        "windows": windows,
    }


def run(
    duration_s: float = 120.0, threads: int = 4, rate: float = 200.0, window_s: float = 10.0, bulk_rows: int = 200_000
) -> dict:
    """Runs the soak and returns its report (see `summarise`); `errors` and `rows_lost` should be 0."""
    with tempfile.TemporaryDirectory(prefix="tritonkit-soak-") as tmp:
        folder = Path(tmp)
        export_churn(folder / "repository")
        frame = synthetic_customers(bulk_rows, seed=5).drop(columns=["churned"])
        frame.to_parquet(folder / "customers.parquet")
        records = [{f: float(frame[f].iloc[i]) for f in FEATURES} for i in range(1000)]
        with EmbeddedServer(
            folder / "repository",
            http_port=0,
            grpc_port=0,
            metrics_port=0,
            exit_timeout_s=10,
            log_file=folder / "triton.log",
        ) as server:
            samples, stop = Samples(), threading.Event()
            workers = [threading.Thread(target=_memory, args=(server.pid, samples, stop), daemon=True)]
            for i in range(threads):
                protocol = "grpc" if i % 2 == 0 else "http"
                url = server.grpc_url if protocol == "grpc" else server.http_url
                workers.append(
                    threading.Thread(
                        target=_traffic,
                        daemon=True,
                        args=(url, protocol, rate / threads, records, samples, stop, i * 250),
                    )
                )
            bulk = threading.Thread(
                target=_bulk,
                daemon=True,
                args=(server.grpc_url, folder / "customers.parquet", bulk_rows, duration_s, samples, folder),
            )
            for worker in [*workers, bulk]:
                worker.start()
            time.sleep(max(0.0, duration_s - samples.now()))
            bulk.join()  # the last run started before the end finishes
            stop.set()
            for worker in workers:
                worker.join()
            report = summarise(samples, samples.now(), window_s)
            report["realtime"]["server_failures"] = _server_failures(server.metrics_url)
    report.update(threads=threads, target_rate=rate, bulk_rows_per_run=bulk_rows)
    return report


def print_report(report: dict) -> None:
    print(
        f"soak: {report['duration_s']:.0f} s, {report['threads']} real-time threads at {report['target_rate']:g} "
        f"req/s in all, `tritonkit score` of {report['bulk_rows_per_run']:,} rows back to back"
    )
    print(f"{'window':>8}{'requests':>10}{'errors':>8}{'req/s':>8}{'p50 ms':>9}{'p99 ms':>9}{'server RSS MB':>15}")
    for w in report["windows"]:
        p50 = f"{w['p50_ms']:.2f}" if w["p50_ms"] is not None else "-"
        p99 = f"{w['p99_ms']:.2f}" if w["p99_ms"] is not None else "-"
        rss = f"{w['server_rss_mb']:.0f}" if w["server_rss_mb"] is not None else "-"
        print(f"{w['start_s']:>7.0f}s{w['requests']:>10,}{w['errors']:>8}{w['rps']:>8.0f}{p50:>9}{p99:>9}{rss:>15}")
    rt, bulk, memory = report["realtime"], report["bulk"], report["server_memory"]
    print(
        f"real time: {rt['requests']:,} requests, {rt['errors']} errors (server counted "
        f"{rt['server_failures']:.0f} failures), p50 {rt['p50_ms']} ms, p99 {rt['p99_ms']} ms, "
        f"p99 last/first window {rt['p99_drift']}, max/min {rt['p99_max_over_min']}, late sends {rt['late_sends']}"
    )
    print(
        f"bulk: {bulk['runs']} runs ({bulk['failed_runs']} failed), {bulk['rows_scored']:,} rows scored, "
        f"{bulk['rows_lost']} lost, {bulk['retries']} retries"
    )
    print(
        f"server memory ({memory['processes']} processes): RSS {memory['rss_first_mb']} -> {memory['rss_last_mb']} MB "
        f"(max {memory['rss_max_mb']}, growth {memory['rss_growth_mb']} MB)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=120.0, help="seconds of traffic")
    parser.add_argument("--threads", type=int, default=4, help="real-time client threads (gRPC and HTTP alternately)")
    parser.add_argument(
        "--rate", type=float, default=200.0, help="real-time requests/s in all (0: as fast as possible)"
    )
    parser.add_argument("--window-s", type=float, default=10.0, help="seconds per reported window")
    parser.add_argument("--bulk-rows", type=int, default=200_000, help="rows per `tritonkit score` run")
    parser.add_argument("--json", type=Path, help="also write the report here")
    args = parser.parse_args()
    report = run(args.duration, args.threads, args.rate, args.window_s, args.bulk_rows)
    print_report(report)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    if report["realtime"]["errors"] or report["bulk"]["rows_lost"] or report["bulk"]["failed_runs"]:
        sys.exit(1)


if __name__ == "__main__":
    main()
