"""`tritonkit bench --scenarios hybrid`, briefly: both services answer every request at each hit ratio, the
gateway measures the hit ratio the mix asked for, and the report and cost view are written. Benchmarks
measure; this only checks that the scenario works (no timing is asserted)."""

from __future__ import annotations

import shutil
from types import SimpleNamespace

import pytest

pytest.importorskip("fastapi", reason="fastapi is not installed (the bench extra): no seed-style service")
if shutil.which("redis-server") is None:
    pytest.skip("redis-server is not installed (bash scripts/ensure-redis.sh)", allow_module_level=True)

from tritonkit.benchmarks import hybrid


def test_hybrid_scenario_measures_both_services_at_every_ratio_when_run(server, churn_repository, tmp_path):
    options = SimpleNamespace(
        model="churn", concurrency=4, seconds=0.5, price_realtime_per_hour=0.17, price_batch_per_hour=0.06
    )
    onnx = churn_repository / "churn" / "1" / "model.onnx"
    summary = hybrid.run(server.grpc_url, onnx, options, tmp_path, log=lambda _: None, entities=200)
    points = {(p["service"], p["hit_ratio"]): p for p in summary["points"]}
    assert set(points) == {(s, r) for s in ("gateway", "seed") for r in hybrid.RATIOS}
    for (service, ratio), point in points.items():
        assert point["requests"] > 0 and point["errors"] == 0
        assert set(point["statuses"]) == {"200"}, (service, ratio, point["statuses"])
        if service == "gateway":
            assert point["measured_hit_ratio"] == pytest.approx(ratio, abs=0.02)
    assert summary["batch"]["rows_scored"] == 200
    assert len(summary["cost"]) == len(points) + 1
    report = (tmp_path / "hybrid" / "hybrid.md").read_text()
    assert "| gateway | 90% |" in report and "## Cost" in report
