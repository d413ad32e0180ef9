"""Does this Triton survive gRPC cancellations? A check to run against a test server, never a live one.

    python -m tritonkit.benchmarks.cancel_check --url 127.0.0.1:8001 --model churn --seconds 60

Threads send single-row requests with deadlines of 0.3 to 2 ms, so that many expire just as Triton
answers: each expiry is a cancellation that reaches the server as its response completes. Triton up to
25.03 (2.51, the embedded server's version, included) can crash with SIGSEGV in that race
(triton-inference-server/server issue 8034); the embedded server died within 40 s here. Prints what was
sent and whether the server still answers; exit code 0 when it survived, 1 when it is gone, 2 when
nothing could be sent (no server there, no such model).
"""

from __future__ import annotations

import argparse
import sys
import threading
import time

import grpc

from tritonkit.benchmarks.payloads import GRPC_INFER_METHOD, build_payloads, grpc_request
from tritonkit.clients.endpoint import Endpoint
from tritonkit.clients.realtime import TritonClient
from tritonkit.errors import ServerError

DEADLINES_S = (0.0003, 0.0005, 0.0008, 0.001, 0.0015, 0.002)


def _alive(endpoint: Endpoint, model: str) -> bool:
    try:
        with TritonClient(endpoint) as client:
            client.metadata(model)
        return True
    except ServerError:
        return False


def check(url: str, model: str, seconds: float) -> dict:
    """Sends cancellations for `seconds` (or until the server stops answering); the tallies and the verdict."""
    endpoint = Endpoint(url, protocol="grpc", timeout_s=5)
    with TritonClient(endpoint) as client:
        meta = client.metadata(model)
    bodies = [grpc_request(meta, arrays) for arrays in build_payloads(meta, 1, None, 16)]
    tally = {"answered": 0, "cancelled": 0, "other_errors": 0}
    lock, gone = threading.Lock(), threading.Event()
    stop = time.monotonic() + seconds

    def send(deadline_s: float) -> None:
        channel = endpoint.grpc_channel()
        infer = channel.unary_unary(GRPC_INFER_METHOD, _registered_method=True)
        i = 0
        try:
            while time.monotonic() < stop and not gone.is_set():
                i += 1
                try:
                    infer(bodies[i % len(bodies)], timeout=deadline_s)
                    key = "answered"
                except grpc.RpcError as e:
                    if e.code() == grpc.StatusCode.UNAVAILABLE:
                        gone.set()
                    key = "cancelled" if e.code() == grpc.StatusCode.DEADLINE_EXCEEDED else "other_errors"
                with lock:
                    tally[key] += 1
        finally:
            channel.close()

    threads = [threading.Thread(target=send, args=(d,)) for d in DEADLINES_S]
    start = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    survived = not gone.is_set() and _alive(endpoint, model)
    return {**tally, "seconds": round(time.monotonic() - start, 1), "survived": survived}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="127.0.0.1:8001", help="Triton's gRPC HOST:PORT (a test server)")
    parser.add_argument("--model", required=True, help="a model that answers single-row requests")
    parser.add_argument("--seconds", type=float, default=60.0, help="how long to keep cancelling")
    options = parser.parse_args(argv)
    try:
        result = check(options.url, options.model, options.seconds)
    except ServerError as e:  # not reached, or no such model: nothing was sent, so no verdict
        print(f"cancel_check: nothing sent: {e}", file=sys.stderr)
        return 2
    verdict = "still answers" if result["survived"] else "is gone (crashed or unreachable)"
    print(
        f"{result['cancelled']} requests cancelled by their deadline, {result['answered']} answered, "
        f"{result['other_errors']} other errors in {result['seconds']} s: Triton at {options.url} {verdict}"
    )
    return 0 if result["survived"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
