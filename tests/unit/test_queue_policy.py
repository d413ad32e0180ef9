"""Overload settings without a server: export queue options -> config.pbtxt, retry policy bounds, error texts."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from tritonkit.clients.endpoint import RetryPolicy, overload_reason
from tritonkit.errors import DeadlineExceededError, OutputError, OverloadedError, ServerError, UsageError, exit_code_for
from tritonkit.export.options import ExportOptions
from tritonkit.model_config import ModelConfig, QueuePolicy, TensorSpec

X, Y = [TensorSpec("x", "FP32", [4])], [TensorSpec("y", "FP32", [4])]


def config_of(**options) -> ModelConfig:
    return ExportOptions("repo", "m", **options).model_config(X, Y, default_max_batch_size=64)


def test_export_writes_default_queue_policy_when_queue_options_given():
    config = config_of(max_queue_size=16, queue_timeout_us=50_000, timeout_action="DELAY")
    assert config.dynamic_batching.default_queue_policy == QueuePolicy(
        timeout_action="DELAY", default_timeout_us=50_000, max_queue_size=16
    )
    text = config.to_pbtxt()
    assert "max_queue_size: 16" in text and "default_timeout_microseconds: 50000" in text
    assert "timeout_action: DELAY" in text
    assert ModelConfig.from_pbtxt(text) == config


def test_export_leaves_queue_unbounded_when_no_queue_option_given():
    assert config_of().dynamic_batching.default_queue_policy is None
    assert "default_queue_policy" not in config_of().to_pbtxt()


@pytest.mark.parametrize(
    "options, mentions",
    [
        ({"timeout_action": "drop"}, "--timeout-action is 'drop'; expected one of reject, delay"),
        ({"max_queue_size": -1}, "--max-queue-size is -1"),
        ({"queue_timeout_us": -5}, "--queue-timeout-us is -5"),
        ({"max_queue_size": 4, "dynamic_batching": False}, "drop --no-dynamic-batching"),
    ],
)
def test_export_options_raise_usage_error_naming_flag_when_queue_option_is_invalid(options, mentions):
    with pytest.raises(UsageError) as bad:
        ExportOptions("repo", "m", **options)
    assert mentions in str(bad.value)


def test_export_command_lists_queue_options_in_help():
    from tritonkit.cli import app

    result = CliRunner().invoke(app, ["export", "sklearn", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    for flag in ("--max-queue-size", "--queue-timeout-us", "--timeout-action"):
        assert flag in result.output


def test_retry_policy_gives_up_at_attempts_or_total_deadline_whichever_first():
    policy = RetryPolicy(attempts=5, max_total_s=10.0)
    assert not policy.gives_up(0, elapsed_s=1.0, delay_s=1.0)
    assert policy.gives_up(4, elapsed_s=1.0, delay_s=0.1)  # the fifth try was the last
    assert policy.gives_up(1, elapsed_s=9.5, delay_s=1.0)  # sleeping would pass the deadline
    assert not RetryPolicy(attempts=5, max_total_s=None).gives_up(1, elapsed_s=1e6, delay_s=1.0)


def test_retry_policy_backoff_is_jittered_and_capped():
    policy = RetryPolicy(base_s=0.1, max_s=0.8)
    delays = [policy.delay(10) for _ in range(200)]
    assert all(0 <= d <= 0.8 for d in delays) and len(set(delays)) > 100
    assert all(policy.delay(0) <= 0.1 for _ in range(50))


def test_retry_policy_raises_usage_error_when_bounds_are_invalid():
    with pytest.raises(UsageError):
        RetryPolicy(attempts=0)
    with pytest.raises(UsageError):
        RetryPolicy(max_total_s=0)


def test_overload_reason_explains_triton_queue_refusals_only():
    assert (
        overload_reason("[request id: <id_unknown>] Exceeds maximum queue size") == "its queue is full (max_queue_size)"
    )
    assert overload_reason("Request timeout expired") == "the request waited longer than its queue allows"
    assert overload_reason("failed to connect to all addresses") is None


def test_reliability_errors_state_what_happened_and_map_to_their_exit_codes():
    late = DeadlineExceededError("churn", 250, 251.4)
    assert str(late) == "model `churn`: no answer within the 250 ms budget (gave up after 251 ms)"
    assert (late.budget_ms, late.status, exit_code_for(late)) == (250, "DEADLINE_EXCEEDED", 11)
    busy = OverloadedError("model `churn` is overloaded", model="churn")
    assert isinstance(busy, ServerError) and busy.status == "UNAVAILABLE" and exit_code_for(busy) == 10
    full = OutputError("/data/out.parquet", "No space left on device", parts="/data/out.parquet.parts")
    assert str(full) == (
        "cannot write /data/out.parquet: No space left on device; no final output was left; "
        "finished chunks stay in /data/out.parquet.parts for --resume"
    )
    assert exit_code_for(full) == 12
