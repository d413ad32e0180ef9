"""A lean closed-loop HTTP/1.1 load generator: N keep-alive connections, each sending its next request as soon
as the previous answer is in.

Locust's per-request cost (gevent, its HTTP client, its stats) is larger than a store hit's whole cost on
the gateway, so a Locust run on this 2-core machine measures Locust. This client spends a few tens of
microseconds per request (asyncio with uvloop, requests prepared once, responses read by Content-Length),
so the server is what is measured. Latency counts from the write of a request to the last byte of its
answer; per-request samples are exact (not bucketed).

    python -m tritonkit.benchmarks.http_load --url http://127.0.0.1:8080 --path /healthz --clients 16 --seconds 5
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections import Counter
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import numpy as np


@dataclass
class LoadResult:
    """What one closed-loop run measured: latencies of answered requests, status counts, errors."""

    clients: int
    wall_s: float
    latencies_ms: np.ndarray
    statuses: Counter = field(default_factory=Counter)
    errors: int = 0

    @property
    def requests(self) -> int:
        return int(self.latencies_ms.size)

    def summary(self) -> dict:
        values = self.latencies_ms if self.latencies_ms.size else np.asarray([np.nan])
        return {
            "clients": self.clients,
            "requests": self.requests,
            "errors": self.errors,
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "wall_s": round(self.wall_s, 3),
            "requests_per_s": self.requests / self.wall_s if self.wall_s else 0.0,
            **{f"p{q}_ms": float(np.percentile(values, q)) for q in (50, 90, 99)},
            "mean_ms": float(np.mean(values)),
        }


def request_bytes(host: str, path: str, method: str = "GET", body: bytes | None = None) -> bytes:
    """One HTTP/1.1 keep-alive request, ready to write."""
    head = f"{method} {path} HTTP/1.1\r\nHost: {host}\r\n"
    if body is not None:
        head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
    return (head + "\r\n").encode() + (body or b"")


async def _read_response(reader: asyncio.StreamReader) -> int:
    """Reads one response (Content-Length bodies only); returns its status code."""
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    for line in head.split(b"\r\n")[1:]:
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
            break
    if length:
        await reader.readexactly(length)
    return status


async def _client(host: str, port: int, requests: list[bytes], offset: int, state: dict) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    latencies, statuses = state["latencies"], state["statuses"]
    i, n = offset, len(requests)
    try:
        while not state["stop"]:
            start = time.perf_counter()
            writer.write(requests[i % n])
            try:
                status = await _read_response(reader)
            except (asyncio.IncompleteReadError, ConnectionError):
                state["errors"] += 1
                writer.close()
                reader, writer = await asyncio.open_connection(host, port)
                continue
            if state["recording"]:
                latencies.append(time.perf_counter() - start)
                statuses[status] += 1
            i += 1
    finally:
        writer.close()


async def _run(url: str, requests: list[bytes], clients: int, seconds: float, warmup_s: float) -> LoadResult:
    parts = urlsplit(url)
    state = {"stop": False, "recording": False, "latencies": [], "statuses": Counter(), "errors": 0}
    step = max(1, len(requests) // clients)
    tasks = [
        asyncio.create_task(_client(parts.hostname, parts.port, requests, c * step, state)) for c in range(clients)
    ]
    await asyncio.sleep(warmup_s)
    state["recording"], state["errors"] = True, 0
    start = time.perf_counter()
    await asyncio.sleep(seconds)
    state["recording"] = False
    wall = time.perf_counter() - start
    state["stop"] = True
    await asyncio.gather(*tasks, return_exceptions=True)
    latencies = np.asarray(state["latencies"]) * 1000.0
    return LoadResult(clients, wall, latencies, state["statuses"], state["errors"])


def run(url: str, requests: list[bytes], clients: int = 16, seconds: float = 5.0, warmup_s: float = 1.0) -> LoadResult:
    """Closed loop: `clients` connections cycle through `requests` (each from its own offset) for `seconds`."""
    try:
        import uvloop

        runner = uvloop.run
    except ImportError:  # plain asyncio still works, a little slower
        runner = asyncio.run
    return runner(_run(url, requests, clients, seconds, warmup_s))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m tritonkit.benchmarks.http_load", description=__doc__.splitlines()[0])
    p.add_argument("--url", required=True, help="http://HOST:PORT")
    p.add_argument("--path", action="append", default=[], help="path to GET (repeatable: cycled through)")
    p.add_argument("--paths-file", help="a file of paths to GET, one per line (cycled through)")
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--warmup-s", type=float, default=1.0)
    args = p.parse_args(argv)
    paths = list(args.path)
    if args.paths_file:
        with open(args.paths_file, encoding="utf-8") as handle:
            paths += [line.strip() for line in handle if line.strip()]
    if not paths:
        p.error("give --path or --paths-file")
    host = urlsplit(args.url).netloc
    result = run(args.url, [request_bytes(host, path) for path in paths], args.clients, args.seconds, args.warmup_s)
    print(json.dumps(result.summary()))


if __name__ == "__main__":
    main()
