"""The bounded soak (benchmarks/soak.py) for 30 s: opt-in, as it is long for a test run (TRITONKIT_SLOW_TESTS=1)."""

from __future__ import annotations

import os

import pytest

from tritonkit.benchmarks.soak import run

pytestmark = pytest.mark.skipif(
    os.environ.get("TRITONKIT_SLOW_TESTS") != "1",
    reason="opt-in (TRITONKIT_SLOW_TESTS=1): a 30 s soak with bulk runs alongside",
)


def test_soak_reports_no_errors_and_no_lost_rows_when_traffic_and_bulk_run_together():
    report = run(duration_s=30, threads=2, rate=100, window_s=10, bulk_rows=50_000)
    realtime, bulk, memory = report["realtime"], report["bulk"], report["server_memory"]
    assert realtime["errors"] == 0 and realtime["server_failures"] == 0, realtime["first_errors"]
    assert realtime["requests"] > 0 and realtime["p99_ms"] >= realtime["p50_ms"] > 0
    assert bulk["runs"] >= 1 and bulk["failed_runs"] == 0 and bulk["rows_lost"] == 0
    assert bulk["rows_scored"] == 50_000 * bulk["runs"]
    assert len(report["windows"]) >= 3 and all(w["requests"] > 0 for w in report["windows"])
    assert {"p50_ms", "p99_ms", "errors", "server_rss_mb"} <= set(report["windows"][0])
    assert memory["processes"] >= 2, "the Python backend stubs are the server's children and count too"
    assert memory["rss_max_mb"] >= memory["rss_first_mb"] > 0
