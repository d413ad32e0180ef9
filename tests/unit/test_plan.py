"""`tritonkit plan`: the mode figures, the recommendation, the inputs read from a real bench summary, a
gateway's metrics and a SQLite store, and the command line.

tests/data/churn_bench_summary.json is the summary.json of a real run on the development machine
(x86_64, 2 shared cores, no GPU), 2026-11-26, copied unchanged:
    tritonkit bench --quick --out /tmp/plan-bench/churn
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tritonkit.benchmarks.plan import PlanInputs, Value, make_plan
from tritonkit.benchmarks.plan_inputs import (
    PlanOptions,
    gateway_hit_ratio,
    parse_duration_s,
    resolve,
    store_inputs,
    summary_inputs,
)
from tritonkit.benchmarks.plan_modes import ASSUMED, GIVEN, MEASURED, realtime_instances
from tritonkit.benchmarks.plan_render import mode_rows, to_dict
from tritonkit.clients.store import Entry, open_store
from tritonkit.errors import UsageError

SUMMARY = Path(__file__).resolve().parents[1] / "data" / "churn_bench_summary.json"

# The classic example, with its own assumptions: a nightly batch of 1,000,000 entities at 10,000
# predictions/s on $3/hour instances against 100 requests/s served at 100 requests/s per instance with
# 50 % headroom on $5/hour instances; storage at $0.25/GB-month, 1 KB per prediction, no batch start-up.
CLASSIC = dict(
    entities=1_000_000,
    freshness_s=86_400,
    batch_rows_per_s=10_000,
    price_batch_per_hour=3.0,
    batch_startup_s=0,
    request_rate=100,
    realtime_rps_per_instance=100,
    headroom=0.5,
    price_realtime_per_hour=5.0,
    price_storage_gb_month=0.25,
    bytes_per_prediction=1000,
    realtime_p99_ms=50,
    store_p99_ms=5,
    hit_ratio=1.0,
    latency_budget_ms=100,
)


def classic(**changes) -> PlanInputs:
    return PlanInputs.build(**{**CLASSIC, **changes})


# ---------------------------------------------------------------- the figures


def test_plan_reproduces_the_classic_example_to_the_cent_when_given_its_assumptions():
    plan = make_plan(classic())
    batch, realtime = plan.mode("batch"), plan.mode("realtime")
    assert batch.value("batch_instances") == 1
    assert batch.value("compute_hours_per_day") == pytest.approx(100 / 3600)  # 1e6 / 1e4 = 100 s
    assert round(batch.value("batch_usd_per_day"), 2) == 0.08  # 100 s at $3/hour
    assert batch.value("storage_gb") == pytest.approx(1.0)
    assert batch.value("storage_usd_per_day") == pytest.approx(0.25 * 24 / 730)  # $0.25/GB-month, 730 h a month
    assert round(batch.value("usd_per_day"), 2) == 0.09
    assert realtime.value("always_on_instances") == 2  # 100 / 100 / (1 - 0.5)
    assert realtime.value("compute_hours_per_day") == 48
    assert round(realtime.value("usd_per_day"), 2) == 240.00
    assert round(realtime.value("usd_per_million_requests"), 2) == 27.78  # 240 / 8.64 M requests
    assert realtime.value("storage_gb") == 0


def test_realtime_instances_are_not_bought_by_float_noise_when_load_fills_them_exactly():
    assert realtime_instances(60, 100, 0.4) == 1  # 0.6 / 0.6 is 1.0000000000000002 in floats
    assert realtime_instances(100, 100, 0.5) == 2
    assert realtime_instances(101, 100, 0.5) == 3
    assert realtime_instances(0, 100, 0.5) == 1  # an always-on service keeps one up


def test_hybrid_sizes_its_realtime_fleet_for_the_misses_when_hit_ratio_is_below_one():
    plan = make_plan(classic(request_rate=1000, hit_ratio=0.9))
    hybrid, batch = plan.mode("hybrid"), plan.mode("batch")
    assert plan.mode("realtime").value("always_on_instances") == 20
    assert hybrid.value("always_on_instances") == 2  # 100 misses/s at 100/s per instance, 50 % headroom
    assert hybrid.value("usd_per_day") == pytest.approx(batch.value("usd_per_day") + 2 * 24 * 5.0)
    assert hybrid.value("p99_ms") == 50  # 10 % of requests miss: the p99 request is a real-time call
    assert hybrid.value("coverage") == 1.0


def test_nrt_rescores_the_changed_entities_when_they_peak_with_traffic():
    plan = make_plan(classic(changed_per_day=864_000_000, peak_rate=300))  # 10,000/s average, 30,000/s at peak
    nrt = plan.mode("nrt")
    assert nrt.value("always_on_instances") == 6  # 30,000 / 10,000 / 0.5
    assert nrt.value("usd_per_day") == pytest.approx(6 * 24 * 5.0 + plan.mode("batch").value("storage_usd_per_day"))
    assert nrt.value("freshness_s") == 900


def test_batch_needs_more_instances_when_a_run_cannot_finish_in_its_period():
    plan = make_plan(classic(freshness_s=100, batch_startup_s=10))  # 100 s of work, 40 s per run window
    assert plan.mode("batch").value("batch_instances") == 3
    assert plan.mode("batch").value("compute_hours_per_day") == pytest.approx(864 * (3 * 10 + 100) / 3600)


def test_figures_are_assumed_when_any_input_is_a_default():
    given = make_plan(classic())
    assert {f.basis for f in given.mode("realtime").figures.values()} == {GIVEN}
    assumed = make_plan(classic(headroom=None)).mode("realtime").figures
    assert assumed["always_on_instances"].basis == ASSUMED
    assert "headroom" in assumed["always_on_instances"].inputs
    assert assumed["p99_ms"].basis == GIVEN


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"request_rate": -5}, "request_rate is -5"),
        ({"hit_ratio": 1.5}, "hit_ratio is 1.5"),
        ({"requested_share": -0.1}, "requested_share is -0.1"),
        ({"headroom": 1.0}, "headroom is 1.0"),
        ({"entities": 2.5}, "entities is 2.5"),
        ({"batch_rows_per_s": 0}, "batch_rows_per_s is 0"),
        ({"peak_rate": 50}, "peak_rate is 50"),
        ({"price_realtime_per_hour": float("nan")}, "price_realtime_per_hour is nan"),
    ],
)
def test_plan_inputs_raise_usage_error_naming_the_field_when_out_of_range(change, named):
    with pytest.raises(UsageError, match=named):
        classic(**change)


def test_plan_inputs_raise_usage_error_when_a_capacity_is_missing_or_unknown():
    with pytest.raises(UsageError, match="batch_rows_per_s"):
        classic(batch_rows_per_s=None)
    with pytest.raises(UsageError, match="unknown plan input.*rows_per_second"):
        classic(rows_per_second=3)


def test_parse_duration_s_accepts_zero_as_request_time_when_given_0():
    assert parse_duration_s("0", "--freshness") == 0
    assert parse_duration_s("15m", "--nrt-every") == 900
    with pytest.raises(UsageError, match="--freshness"):
        parse_duration_s("soon", "--freshness")


# ---------------------------------------------------------------- the recommendation


def test_recommendation_is_batch_when_a_day_old_prediction_will_do():
    plan = make_plan(classic())
    assert plan.recommendation.mode == "batch"
    assert any(r.startswith("batch: the cheapest") for r in plan.recommendation.reasons)


def test_recommendation_is_realtime_when_predictions_must_be_computed_at_request_time():
    plan = make_plan(classic(freshness_s=0))
    assert plan.recommendation.mode == "realtime"
    assert plan.mode("batch").value("usd_per_day") is None
    assert not plan.mode("nrt").meets["freshness"]


def test_recommendation_is_hybrid_when_many_requests_miss_the_batch():
    plan = make_plan(classic(request_rate=1000, hit_ratio=Value(0.7, MEASURED, "gateway")))
    assert not plan.mode("batch").meets["coverage"]
    assert plan.recommendation.mode == "hybrid"
    assert any("70.0% of requests find a stored prediction (measured)" in r for r in plan.recommendation.reasons)


def test_recommendation_is_nrt_when_few_of_many_entities_change_within_the_freshness_need():
    plan = make_plan(classic(entities=500_000_000, freshness_s=1800, requested_share=0.01, request_rate=2000))
    assert plan.mode("nrt").meets_all
    assert plan.recommendation.mode == "nrt"
    assert plan.mode("nrt").value("usd_per_day") < plan.mode("batch").value("usd_per_day")


def test_recommendation_is_none_when_no_mode_meets_the_latency_budget():
    plan = make_plan(classic(latency_budget_ms=1, freshness_s=0))
    assert plan.recommendation.mode is None
    assert plan.recommendation.reasons[0].startswith("no mode meets")


def test_recommendation_prefers_the_simpler_mode_when_costs_tie_to_the_cent():
    plan = make_plan(classic(price_batch_per_hour=0, price_realtime_per_hour=0, price_storage_gb_month=0))
    assert plan.recommendation.mode == "batch"


def test_crossover_is_where_realtime_buys_its_second_instance_when_rate_sweeps():
    plan = make_plan(classic())
    found = {c.modes: c for c in plan.crossovers}
    assert found[("realtime", "hybrid")].request_rate == pytest.approx(50, rel=1e-6)  # 50/s fills one at 50 %
    assert found[("realtime", "hybrid")].usd_per_day == pytest.approx(plan.mode("hybrid").value("usd_per_day"))


# ---------------------------------------------------------------- inputs from a real bench summary

# The workload and prices of the churn plan below: everything but the capacities given.
CHURN_WORKLOAD = {
    "entities": 1_000_000,
    "request_rate": 100,
    "peak_rate": 300,
    "headroom": 0.5,
    "batch_startup_s": 0,
    "freshness_s": 86_400,
    "latency_budget_ms": 100,
    "price_realtime_per_hour": 0.17,
    "price_batch_per_hour": 0.06,
    "price_storage_gb_month": 0.25,
    "bytes_per_prediction": 100,
    "store_p99_ms": 5,
    "hit_ratio": 1.0,
}


def test_plan_from_a_churn_bench_summary_uses_its_numbers_when_read():
    summary = json.loads(SUMMARY.read_text())
    inputs = resolve(PlanOptions(summary=SUMMARY, given={**CHURN_WORKLOAD}))
    assert inputs.model == "churn"
    rows_per_s = summary["offline"]["churn"]["rows_per_s"]
    rate = summary["server"]["churn"]["max_rate_within_budget"]
    point = next(p for p in summary["server"]["churn"]["points"] if p["target_rate"] == rate)
    assert inputs.values["batch_rows_per_s"] == Value(rows_per_s, MEASURED, f"{SUMMARY.name}: offline.churn.rows_per_s")
    assert inputs.values["realtime_rps_per_instance"].value == rate
    assert inputs.values["realtime_p99_ms"].value == point["p99_ms"]
    single = next(r for r in summary["single_stream"] if r["model"] == "churn" and r["protocol"] == "grpc")
    assert inputs.values["single_stream_p99_ms"].value == single["p99_ms"]
    plan = make_plan(inputs)
    batch, realtime = plan.mode("batch"), plan.mode("realtime")
    assert batch.value("batch_hours_per_day") == pytest.approx(1_000_000 / rows_per_s / 3600)
    assert batch.figures["batch_hours_per_day"].basis == MEASURED
    assert realtime.value("always_on_instances") == math.ceil(300 / rate / 0.5)
    assert realtime.value("p99_ms") == point["p99_ms"]
    assert realtime.figures["usd_per_day"].basis == MEASURED
    assert any("tritonkit bench --quick" in line for line in inputs.provenance)


def test_summary_capacity_is_recomputed_from_the_sweep_when_the_budget_is_stricter():
    points = json.loads(SUMMARY.read_text())["server"]["churn"]["points"]
    within = [p for p in points if p["p99_ms"] <= 12 and not p["failures"]]
    _, values, _ = summary_inputs(SUMMARY, "churn", 12.0)
    best = max(within, key=lambda p: p["target_rate"])
    assert values["realtime_rps_per_instance"].value == best["target_rate"]
    assert values["realtime_p99_ms"].value == best["p99_ms"]


def test_summary_raises_usage_error_when_it_measured_another_model():
    with pytest.raises(UsageError, match="measured model `churn`; --model is `minilm`"):
        summary_inputs(SUMMARY, "minilm", 100.0)


@pytest.mark.parametrize(
    ("drop", "named"),
    [
        (("offline", "churn"), "offline.churn"),
        (("server",), "server"),
        (("options", "model"), "options.model"),
    ],
)
def test_summary_raises_usage_error_naming_the_field_when_it_is_missing(tmp_path, drop, named):
    data = json.loads(SUMMARY.read_text())
    node = data
    for key in drop[:-1]:
        node = node[key]
    del node[drop[-1]]
    broken = tmp_path / "summary.json"
    broken.write_text(json.dumps(data))
    with pytest.raises(UsageError, match=f"has no `{named}"):
        summary_inputs(broken, None, 100.0)


def test_summary_raises_usage_error_when_it_is_not_json(tmp_path):
    broken = tmp_path / "summary.json"
    broken.write_text("{not json")
    with pytest.raises(UsageError, match="is not JSON"):
        summary_inputs(broken, None, 100.0)


# ---------------------------------------------------------------- gateway metrics and the store


METRICS = """# HELP tritonkit_gateway_lookups_total Lookups by outcome.
# TYPE tritonkit_gateway_lookups_total counter
tritonkit_gateway_lookups_total{model="churn",status="hit"} 80
tritonkit_gateway_lookups_total{model="churn",status="miss"} 15
tritonkit_gateway_lookups_total{model="churn",status="stale"} 5
tritonkit_gateway_lookups_total{model="minilm",status="hit"} 1000
tritonkit_gateway_lookups_created{model="churn",status="hit"} 1.7e9
"""


def test_gateway_hit_ratio_is_hits_over_all_lookups_when_read_from_a_metrics_file(tmp_path):
    path = tmp_path / "metrics.txt"
    path.write_text(METRICS)
    ratio = gateway_hit_ratio(str(path), "churn")
    assert ratio.value == pytest.approx(0.8)
    assert ratio.basis == MEASURED
    assert gateway_hit_ratio(str(path), "minilm").value == 1.0
    with pytest.raises(UsageError, match="churn, minilm; give --model"):
        gateway_hit_ratio(str(path), None)
    with pytest.raises(UsageError, match="no lookups of model `forest`"):
        gateway_hit_ratio(str(path), "forest")


def test_gateway_hit_ratio_raises_usage_error_when_the_counter_is_absent(tmp_path):
    path = tmp_path / "metrics.txt"
    path.write_text("process_cpu_seconds_total 3\n")
    with pytest.raises(UsageError, match="no `tritonkit_gateway_lookups_total` samples"):
        gateway_hit_ratio(str(path), "churn")


def test_store_inputs_measure_entry_size_when_a_sqlite_store_holds_the_model(tmp_path):
    url = f"sqlite://{tmp_path / 'preds.db'}"
    outputs = {"probability": [0.25], "label": [0], "risk_segment": [0]}
    with open_store(url) as store:
        store.put_many([Entry(str(i), "churn", "1", outputs, time.time(), "batch") for i in range(100, 150)])
    measured = store_inputs(url, "churn")
    row = len("churn") + 3 + len("1") + len(json.dumps(outputs, separators=(",", ":"))) + len("batch") + 16
    assert measured["bytes_per_prediction"].value == pytest.approx(row)
    assert measured["bytes_per_prediction"].basis == MEASURED
    assert measured["store_p99_ms"].value > 0
    with pytest.raises(UsageError, match="no unexpired predictions of model `minilm`"):
        store_inputs(url, "minilm")
    with pytest.raises(UsageError, match="given by hand and measured from --store"):
        resolve(PlanOptions(model="churn", store=url, given={**CLASSIC, "bytes_per_prediction": 10}))


def test_plan_modules_import_no_locust_gevent_or_matplotlib_when_loaded():
    code = (
        "import sys, tritonkit.benchmarks.plan, tritonkit.benchmarks.plan_inputs, tritonkit.benchmarks.plan_render;"
        "print(sorted(m for m in ('locust', 'gevent', 'matplotlib') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert done.stdout.strip() == "[]"


def test_plan_default_prices_match_bench_when_compared():
    from tritonkit.benchmarks import bench, plan_modes

    assert plan_modes.DEFAULT_PRICE_REALTIME_PER_HOUR == bench.DEFAULT_PRICE_REALTIME_PER_HOUR
    assert plan_modes.DEFAULT_PRICE_BATCH_PER_HOUR == bench.DEFAULT_PRICE_BATCH_PER_HOUR


def test_render_tags_every_figure_with_its_basis_when_rows_are_built():
    plan = make_plan(classic(headroom=None))
    rows = {row[0].rstrip(" *"): row for row in mode_rows(plan)}
    assert rows["real time"][5] == "240.00 a"  # 2 instances by the assumed 50 % headroom
    assert rows["real time"][2] == "2 a"
    assert rows["batch"][9] == "5 g"  # a store read: given, no headroom in it
    data = to_dict(plan)
    assert data["modes"]["realtime"]["figures"]["always_on_instances"]["basis"] == ASSUMED
    assert data["inputs"]["headroom"] == {"value": 0.5, "unit": "share", "basis": ASSUMED, "source": "default"}


# ---------------------------------------------------------------- the command line


def test_plan_command_prints_json_and_writes_a_png_when_given_a_summary(tmp_path):
    pytest.importorskip("matplotlib", reason="--png needs the bench extra (matplotlib)")
    from tritonkit.cli import app

    png = tmp_path / "cost.png"
    args = ["plan", "--from", str(SUMMARY), "--entities", "1000000", "--request-rate", "100", "--peak-rate", "300"]
    result = CliRunner().invoke(app, [*args, "--price-realtime-per-hour", "5", "--json", "--png", str(png)])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["model"] == "churn"
    assert data["inputs"]["batch_rows_per_s"]["basis"] == MEASURED
    assert set(data["modes"]) == {"batch", "realtime", "hybrid", "nrt"}
    assert data["recommendation"]["mode"] in data["modes"]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert png.stat().st_size > 10_000


def test_plan_command_exits_2_naming_the_option_when_a_fraction_is_out_of_range():
    from tritonkit.cli import app

    args = ["plan", "--from", str(SUMMARY), "--entities", "10", "--request-rate", "1", "--hit-ratio", "1.5"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2
    assert "hit_ratio is 1.5 (from --hit-ratio)" in result.output
