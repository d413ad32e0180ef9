"""The Locust client's own cost: per request, and the verdict on who set the numbers (no sockets, no Locust)."""

from __future__ import annotations

import pytest

from tritonkit.benchmarks.client_cost import Window, summarise


@pytest.mark.parametrize(
    ("cpu_s", "wall_s", "processes", "verdict"),
    [
        (9.5, 10.0, 1, "client-bound"),
        (19.0, 10.0, 2, "client-bound"),
        (6.0, 10.0, 1, "client-heavy"),
        (6.0, 10.0, 2, "server-bound"),
        (1.0, 10.0, 1, "server-bound"),
    ],
)
def test_summarise_says_who_set_the_numbers_when_given_cpu_and_wall(cpu_s, wall_s, processes, verdict):
    summary = summarise(cpu_s, 10_000, wall_s, processes, 0.8)
    assert summary["verdict"].startswith(verdict)
    assert summary["client_bound"] == (verdict == "client-bound")
    assert summary["cpu_ms_per_request"] == pytest.approx(1000 * cpu_s / 10_000)
    assert summary["cpu_percent"] == pytest.approx(100 * cpu_s / wall_s)


def test_summarise_has_no_cost_per_request_when_nothing_was_sent():
    assert summarise(0.5, 0, 1.0, 1, None)["cpu_ms_per_request"] is None


def test_window_reports_deltas_since_the_last_take_when_taken_twice():
    window = Window()
    window.requests = 5
    first_cpu, first_requests = window.take()
    window.requests = 12
    second_cpu, second_requests = window.take()
    assert (first_requests, second_requests) == (5, 7)
    assert first_cpu >= 0 and second_cpu >= 0
