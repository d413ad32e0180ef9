"""`tritonkit bench --scenarios hybrid`: the gateway against a seed-style service, at hit ratios 100, 90, 50, 0 %.

Both services answer `churn` predictions by entity id from one throwaway redis-server, seeded the way
production is: a real batch run (`tritonkit score --store --features`) for the entities that hit, and
`tritonkit features push` for those that miss. The gateway (`tritonkit gateway`, write-back off so a miss
stays a miss) scores misses on Triton; the seed-style service (benchmarks/seed_service.py: FastAPI, one
Redis GET, else the model in process) scores them with onnxruntime. Each point is a closed loop of
`--concurrency` clients (16 by default) from benchmarks/http_load.py in its own process, for `--seconds`:
p50/p99 latency, requests/s, the server's CPU per request (robust on a shared machine) and, for the gateway,
the hit ratio it measured itself (/metrics). The cost view prices a million requests at each point.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from tritonkit.benchmarks.spawn import stop_group

RATIOS = (1.0, 0.9, 0.5, 0.0)
ENTITIES = 5000  # entities with a batch prediction; as many again with features only
REQUEST_MIX = 1000  # requests in one cycle of a point's mix
MODEL = "churn"


@dataclass
class Service:
    """A server child process and where it answers."""

    name: str
    process: subprocess.Popen
    url: str

    def cpu_s(self) -> float:
        import psutil

        try:
            main = psutil.Process(self.process.pid)
            return sum(sum(p.cpu_times()[:2]) for p in [main, *main.children(recursive=True)])
        except psutil.NoSuchProcess:
            return 0.0

    def stop(self) -> None:
        stop_group(self.process)


def _spawn(name: str, command: list[str], url: str, health: str, log: Path, env: dict | None = None) -> Service:
    with open(log, "ab") as handle:
        process = subprocess.Popen(
            command, stdout=handle, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}, start_new_session=True
        )
    service = Service(name, process, url)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited ({process.returncode}): {log.read_text()[-1500:]}")
        try:
            with urllib.request.urlopen(url + health, timeout=2) as answer:
                if answer.status == 200:
                    return service
        except OSError:
            pass
        time.sleep(0.2)
    service.stop()
    raise RuntimeError(f"{name} did not answer {health} within 60 s: {log.read_text()[-1500:]}")


def _redis(folder: Path) -> tuple[subprocess.Popen, str]:
    from tritonkit.server import free_port

    port = free_port()
    command = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    with open(folder / "redis.log", "ab") as handle:
        process = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"redis://127.0.0.1:{port}/0"
    import redis

    client = redis.Redis.from_url(url, socket_connect_timeout=0.5)
    for _ in range(100):
        try:
            client.ping()
            return process, url
        except redis.ConnectionError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError(f"redis-server did not start: {(folder / 'redis.log').read_text()[-500:]}")


def _cli(args: list[str]) -> None:
    done = subprocess.run([sys.executable, "-m", "tritonkit.cli", *args], capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise RuntimeError(f"tritonkit {args[0]} failed ({done.returncode}): {done.stderr[-1500:]}")


def seed(store_url: str, triton_url: str, folder: Path, entities: int = ENTITIES) -> dict:
    """Batch predictions and features for `h<i>`, features only for `m<i>`; returns the batch run's report."""
    from tritonkit.export.churn import synthetic_customers

    frame = synthetic_customers(2 * entities, seed=21)
    frame["customer_id"] = [f"h{i}" for i in range(entities)] + [f"m{i}" for i in range(entities)]
    frame.iloc[:entities].drop(columns=["churned"]).to_parquet(folder / "hits.parquet")
    frame.iloc[entities:].drop(columns=["churned"]).to_parquet(folder / "misses.parquet")
    batch = ["score", "-m", MODEL, "-i", str(folder / "hits.parquet"), "-o", str(folder / "scored.parquet")]
    batch += ["--id-column", "customer_id", "--store", store_url, "--features", "--url", triton_url]
    batch += ["--no-progress", "--report", str(folder / "report.json")]
    _cli(batch)
    push = ["features", "push", "-m", MODEL, "-i", str(folder / "misses.parquet"), "--id-column", "customer_id"]
    _cli([*push, "--store", store_url])
    return json.loads((folder / "report.json").read_text())


def mix(ratio: float, prefix: str, entities: int = ENTITIES) -> list[str]:
    """REQUEST_MIX paths, hits spread evenly at `ratio`, each id used in turn."""
    paths, hits, misses = [], 0, 0
    for i in range(REQUEST_MIX):
        if int((i + 1) * ratio) > int(i * ratio):
            paths.append(f"{prefix}h{hits % entities}")
            hits += 1
        else:
            paths.append(f"{prefix}m{misses % entities}")
            misses += 1
    return paths


def _lookups(service: Service) -> dict[str, float]:
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(service.url + "/metrics", timeout=10) as answer:
        text = answer.read().decode()
    counts: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "tritonkit_gateway_lookups_total" and sample.labels.get("model") == MODEL:
                counts[sample.labels["status"]] = sample.value
    return counts


def measure(service: Service, paths: list[str], clients: int, seconds: float, folder: Path) -> dict:
    """One closed-loop point from a separate load process; the server's CPU per request beside it."""
    path_file = folder / f"paths-{service.name}.txt"
    path_file.write_text("\n".join(paths) + "\n")
    before = _lookups(service) if service.name == "gateway" else None
    cpu0 = service.cpu_s()
    command = [
        sys.executable,
        "-m",
        "tritonkit.benchmarks.http_load",
        "--url",
        service.url,
        "--paths-file",
        str(path_file),
    ]
    command += ["--clients", str(clients), "--seconds", str(seconds), "--warmup-s", str(min(1.0, seconds / 3))]
    done = subprocess.run(command, capture_output=True, text=True, timeout=seconds * 4 + 60)
    if done.returncode != 0:
        raise RuntimeError(f"the load generator failed: {done.stderr[-1500:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    served = result["requests_per_s"] * (result["wall_s"] + min(1.0, seconds / 3))  # the warm-up's requests too
    result["server_cpu_us_per_request"] = (service.cpu_s() - cpu0) / served * 1e6 if served else None
    result["load_average_1m"] = round(os.getloadavg()[0], 2)  # a shared machine: what else was running
    if before is not None:
        after = _lookups(service)
        delta = {k: after.get(k, 0.0) - before.get(k, 0.0) for k in after}
        total = sum(delta.values())
        result["measured_hit_ratio"] = delta.get("hit", 0.0) / total if total else None
    return result


def run(triton_url: str, onnx: Path | None, options, out: Path, log, entities: int = ENTITIES) -> dict:
    """The scenario; `options` is bench's BenchOptions (model, seconds, concurrency, prices)."""
    if options.model != MODEL:
        return {"skipped": f"the hybrid scenario runs the churn workload (--model {options.model} given)"}
    if shutil.which("redis-server") is None:
        return {"skipped": "redis-server is not installed (bash scripts/ensure-redis.sh)"}
    folder = out / "hybrid"
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="tritonkit-hybrid-") as tmp:
        redis_process, store_url = _redis(Path(tmp))
        services: list[Service] = []
        try:
            log(f"hybrid: seeding {entities:,} batch predictions (tritonkit score --store --features) and features")
            batch = seed(store_url, triton_url, Path(tmp), entities)
            services = _start_services(store_url, triton_url, onnx, folder, log)
            points = _points(services, options, folder, log, entities)
        finally:
            for service in services:
                service.stop()
            redis_process.terminate()
            redis_process.wait()
    from tritonkit.benchmarks.hybrid_report import cost_rows, write_markdown

    summary = {
        "entities": entities,
        "clients": options.concurrency,
        "seconds": options.seconds,
        "batch": {k: batch.get(k) for k in ("rows_scored", "rows_per_s", "wall_s")},
        "services": [s.name for s in services],
        "points": points,
    }
    summary["cost"] = cost_rows(summary, options.price_realtime_per_hour, options.price_batch_per_hour)
    write_markdown(summary, folder / "hybrid.md")
    for line in (folder / "hybrid.md").read_text().splitlines():
        log(line)
    return summary


def _start_services(store_url: str, triton_url: str, onnx: Path | None, folder: Path, log) -> list[Service]:
    from tritonkit.server import free_port

    port = free_port()
    gateway = [sys.executable, "-m", "tritonkit.cli", "gateway", "-m", MODEL, "--store", store_url, "--url", triton_url]
    gateway += ["--port", str(port), "--no-write-back", "--timeout-ms", "2000"]
    log("hybrid: starting the gateway (1 worker) and the seed-style service (1 uvicorn worker)")
    services = [_spawn("gateway", gateway, f"http://127.0.0.1:{port}", "/readyz", folder / "gateway.log")]
    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError:
        log(
            "hybrid: fastapi/uvicorn not installed: no seed-style service to compare with (pip install fastapi uvicorn)"
        )
        return services
    if onnx is None:
        log("hybrid: no ONNX file for the seed-style service's in-process model (give --onnx with --url)")
        return services
    port = free_port()
    seed_service = [sys.executable, "-m", "uvicorn", "tritonkit.benchmarks.seed_service:app", "--port", str(port)]
    seed_service += ["--no-access-log", "--log-level", "warning"]
    env = {"TRITONKIT_SEED_REDIS": store_url, "TRITONKIT_SEED_ONNX": str(onnx), "TRITONKIT_SEED_MODEL": MODEL}
    services.append(_spawn("seed", seed_service, f"http://127.0.0.1:{port}", "/docs", folder / "seed.log", env))
    return services


def _points(services: list[Service], options, folder: Path, log, entities: int) -> list[dict]:
    prefixes = {"gateway": f"/v1/models/{MODEL}/predictions/", "seed": "/predict/"}
    points = []
    for ratio in RATIOS:
        for service in services:
            log(f"hybrid: {service.name} at {ratio:.0%} hits, {options.concurrency} clients, {options.seconds:g} s")
            paths = mix(ratio, prefixes[service.name], entities)
            result = measure(service, paths, options.concurrency, options.seconds, folder)
            points.append({"service": service.name, "hit_ratio": ratio, **result})
    return points
