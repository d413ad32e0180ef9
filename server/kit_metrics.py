"""The kit's own Prometheus metrics beside Triton's: what the guard refused and how often Triton was restarted.

Triton publishes its metrics on its own port; these counters live in the process that runs the guard and
the supervisor (`tritonkit serve`, `tritonkit guard`) and are served as Prometheus text by `MetricsServer`
on a port of their own (`--kit-metrics-port`, 8003 by default), at `/metrics`.
"""

from __future__ import annotations

import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

logger = logging.getLogger(__name__)

# Why the guard refused a request: the label values of tritonkit_guard_rejected_total (all exported from 0).
REJECT_REASONS = (
    "http",  # malformed HTTP: request line, headers, framing, encoding, method
    "body_too_large",  # Content-Length (or the chunks, or the decompressed body) over the body limit
    "json",  # the JSON part is not JSON, is too large, or is not an inference request
    "unknown_model",  # Triton does not serve the model (or version) named in the path
    "unknown_tensor",  # an input or output the model does not have, or one named twice
    "missing_input",  # a required input is absent
    "datatype",  # an input's datatype differs from the model's
    "shape",  # rank, a negative or non-integer entry, a fixed dimension or the batch size is wrong
    "too_large",  # element count x datatype size over the tensor byte budget
    "data_size",  # the data (JSON values, binary bytes, shared-memory size) does not match the shape
    "timeout",  # the client was too slow to send its request
    "busy",  # the guard already held max_buffered_bytes of request bodies (503)
)


class KitMetrics:
    """Thread-safe counters, rendered in Prometheus' text exposition format."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.rejected = dict.fromkeys(REJECT_REASONS, 0)
        self.forwarded = 0
        self.upstream_errors = 0
        self.restarts = 0

    def reject(self, reason: str) -> None:
        with self._lock:
            self.rejected[reason] = self.rejected.get(reason, 0) + 1

    def forward(self) -> None:
        with self._lock:
            self.forwarded += 1

    def upstream_error(self) -> None:
        with self._lock:
            self.upstream_errors += 1

    def restart(self) -> None:
        with self._lock:
            self.restarts += 1

    def render(self) -> str:
        with self._lock:
            rejected, forwarded, errors, restarts = (
                dict(self.rejected),
                self.forwarded,
                self.upstream_errors,
                self.restarts,
            )
        lines = [
            "# HELP tritonkit_guard_rejected_total HTTP requests the guard refused before they reached Triton.",
            "# TYPE tritonkit_guard_rejected_total counter",
            *(f'tritonkit_guard_rejected_total{{reason="{r}"}} {n}' for r, n in rejected.items()),
            "# HELP tritonkit_guard_forwarded_total HTTP requests the guard passed on to Triton.",
            "# TYPE tritonkit_guard_forwarded_total counter",
            f"tritonkit_guard_forwarded_total {forwarded}",
            "# HELP tritonkit_guard_upstream_errors_total Requests answered 502: Triton's HTTP was unreachable.",
            "# TYPE tritonkit_guard_upstream_errors_total counter",
            f"tritonkit_guard_upstream_errors_total {errors}",
            "# HELP tritonkit_triton_restarts_total Times the supervisor restarted Triton after it exited unasked.",
            "# TYPE tritonkit_triton_restarts_total counter",
            f"tritonkit_triton_restarts_total {restarts}",
        ]
        return "\n".join(lines) + "\n"


class MetricsServer:
    """Serves `KitMetrics` at GET /metrics on (host, port) from a daemon thread; port 0 picks a free one."""

    def __init__(self, host: str, port: int, metrics: KitMetrics):
        metrics_ref = metrics

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path.split("?")[0] != "/metrics":
                    self.send_error(404, "the kit's metrics are at /metrics")
                    return
                body = metrics_ref.render().encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format, *args) -> None:
                logger.debug("kit metrics: " + format, *args)

        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        self.host, self.port = host, self._server.server_address[1]
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/metrics"

    def start(self) -> MetricsServer:
        self._thread = threading.Thread(target=self._server.serve_forever, name="kit-metrics", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self._server.server_close()
