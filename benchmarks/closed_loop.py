"""Closed-loop load from Python: N concurrent single-row gRPC clients for S seconds.

perf_analyzer's concurrency mode for machines that lack perf_analyzer (the lent GPU machine). Each
client sends its next request as soon as the last one is answered; rows come round-robin from a
prepared list. Three engines, since on a many-core machine the client can be the bottleneck:

- `aio`: one process, `tritonclient.grpc.aio`, one coroutine per client;
- `threads`: one process, `tritonclient.grpc`, one thread (and channel) per client;
- `procs`: `processes` worker processes (`python -m tritonkit.benchmarks.closed_loop`), each running
  `aio` with its share of the clients; the window opens once all of them are ready.

Every engine warms up for `warmup_s`, then counts only what it sends inside the measured window.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field

import numpy as np

ENGINES = ("aio", "threads", "procs")


@dataclass
class Tally:
    """What the clients of one process saw inside the window."""

    latencies_ms: list[float] = field(default_factory=list)
    errors: int = 0
    first_error: str | None = None

    def error(self, e: BaseException) -> None:
        self.errors += 1
        if self.first_error is None:
            self.first_error = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:300]

    def merge(self, other: Tally) -> None:
        self.latencies_ms += other.latencies_ms
        self.errors += other.errors
        self.first_error = self.first_error or other.first_error


@dataclass(frozen=True)
class LoadResult:
    """One closed-loop run: requests answered per second and their latency percentiles."""

    engine: str
    model: str
    concurrency: int
    seconds: float
    requests: int
    errors: int
    first_error: str | None
    p50_ms: float | None
    p90_ms: float | None
    p99_ms: float | None
    mean_ms: float | None

    @property
    def infer_per_s(self) -> float:
        return self.requests / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> dict:
        return {**self.__dict__, "infer_per_s": self.infer_per_s}


def _inputs(module, rows: list[dict[str, np.ndarray]]) -> list[list]:
    """Each row as ready tritonclient InferInputs (read-only once built, so clients share them)."""
    from tritonclient.utils import np_to_triton_dtype

    built = []
    for row in rows:
        inputs = []
        for name, array in row.items():
            value = module.InferInput(name, list(array.shape), np_to_triton_dtype(array.dtype))
            value.set_data_from_numpy(array)
            inputs.append(value)
        built.append(inputs)
    return built


async def _aio(url: str, model: str, rows: list[dict], clients: int, start: float, end: float) -> Tally:
    """`clients` coroutines on one channel from now until `end` (wall clock); counts requests sent after `start`."""
    import tritonclient.grpc.aio as grpc_aio

    prepared = _inputs(grpc_aio, rows)
    tally = Tally()
    async with grpc_aio.InferenceServerClient(url) as client:

        async def one(offset: int) -> None:
            i = offset
            while (now := time.time()) < end:
                begin = time.perf_counter()
                try:
                    await client.infer(model, prepared[i % len(prepared)])
                except Exception as e:  # noqa: BLE001 - counted and reported, the load goes on
                    if now >= start:
                        tally.error(e)
                else:
                    if now >= start:
                        tally.latencies_ms.append((time.perf_counter() - begin) * 1000)
                i += clients

        await asyncio.gather(*(one(k) for k in range(clients)))
    return tally


def _threads(url: str, model: str, rows: list[dict], clients: int, start: float, end: float) -> Tally:
    import tritonclient.grpc as grpc_sync

    prepared = _inputs(grpc_sync, rows)
    tallies = [Tally() for _ in range(clients)]

    def one(offset: int) -> None:
        tally, i = tallies[offset], offset
        with grpc_sync.InferenceServerClient(url) as client:
            while (now := time.time()) < end:
                begin = time.perf_counter()
                try:
                    client.infer(model, prepared[i % len(prepared)])
                except Exception as e:  # noqa: BLE001 - counted and reported, the load goes on
                    if now >= start:
                        tally.error(e)
                else:
                    if now >= start:
                        tally.latencies_ms.append((time.perf_counter() - begin) * 1000)
                i += clients

    threads = [threading.Thread(target=one, args=(k,), daemon=True) for k in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    total = Tally()
    for tally in tallies:
        total.merge(tally)
    return total


def _encode_rows(rows: list[dict[str, np.ndarray]]) -> list[dict]:
    return [{k: [str(v.dtype), list(v.shape), v.ravel().tolist()] for k, v in row.items()} for row in rows]


def _decode_rows(rows: list[dict]) -> list[dict[str, np.ndarray]]:
    return [
        {k: np.asarray(values, dtype=dtype).reshape(shape) for k, (dtype, shape, values) in row.items()} for row in rows
    ]


def _worker() -> None:
    """`python -m tritonkit.benchmarks.closed_loop`: one `procs` process, driven over stdin and stdout.

    Reads the job (a JSON line), imports the client, prints `ready`, waits for `go START END`, runs
    `aio` and prints its Tally as JSON.
    """
    job = json.loads(sys.stdin.readline())
    rows = _decode_rows(job["rows"])
    import tritonclient.grpc.aio  # noqa: F401 - imported before `ready`, so the window measures requests only

    print("ready", flush=True)
    _, start, end = sys.stdin.readline().split()
    try:
        tally = asyncio.run(_aio(job["url"], job["model"], rows, job["clients"], float(start), float(end)))
    except Exception as e:  # noqa: BLE001 - reported to the parent
        tally = Tally()
        tally.error(e)
    print(json.dumps(tally.__dict__), flush=True)


def _procs(url: str, model: str, rows: list[dict], clients: int, warmup_s: float, seconds: float, processes: int):
    """`processes` worker processes sharing `clients`; the window opens `warmup_s` after all are ready."""
    shares = [clients // processes + (1 if k < clients % processes else 0) for k in range(processes)]
    command = [sys.executable, "-m", "tritonkit.benchmarks.closed_loop"]
    workers = []
    for k, n in enumerate(share for share in shares if share):
        worker = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        job = {"url": url, "model": model, "clients": n, "rows": _encode_rows(rows[k::processes] or rows)}
        worker.stdin.write(json.dumps(job) + "\n")
        worker.stdin.flush()
        workers.append(worker)
    total = Tally()
    try:
        for worker in workers:
            if worker.stdout.readline().strip() != "ready":
                raise RuntimeError(f"a load process exited with code {worker.wait(timeout=10)} before it was ready")
        start = time.time() + warmup_s
        for worker in workers:
            worker.stdin.write(f"go {start} {start + seconds}\n")
            worker.stdin.flush()
        for worker in workers:
            total.merge(Tally(**json.loads(worker.stdout.readline())))
    except BaseException:
        for worker in workers:
            worker.kill()
        raise
    for worker in workers:
        worker.wait(timeout=30)
    return total


def run(
    engine: str,
    url: str,
    model: str,
    rows: list[dict[str, np.ndarray]],
    concurrency: int = 16,
    seconds: float = 10.0,
    warmup_s: float = 1.0,
    processes: int = 4,
) -> LoadResult:
    """`concurrency` closed-loop clients of `model` for `seconds` after `warmup_s`, through `engine`."""
    if engine not in ENGINES:
        raise ValueError(f"engine {engine!r}; expected one of {', '.join(ENGINES)}")
    start = time.time() + warmup_s
    if engine == "aio":
        tally = asyncio.run(_aio(url, model, rows, concurrency, start, start + seconds))
    elif engine == "threads":
        tally = _threads(url, model, rows, concurrency, start, start + seconds)
    else:
        tally = _procs(url, model, rows, concurrency, warmup_s, seconds, max(1, min(processes, concurrency)))
    values = np.asarray(tally.latencies_ms)
    pct = (lambda q: float(np.percentile(values, q))) if len(values) else (lambda q: None)
    return LoadResult(
        engine=engine,
        model=model,
        concurrency=concurrency,
        seconds=seconds,
        requests=len(values),
        errors=tally.errors,
        first_error=tally.first_error,
        p50_ms=pct(50),
        p90_ms=pct(90),
        p99_ms=pct(99),
        mean_ms=float(values.mean()) if len(values) else None,
    )


if __name__ == "__main__":
    _worker()
