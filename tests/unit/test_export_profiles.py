"""`--profile realtime|bulk`: the starting config each export writes, and explicit options winning over it."""

from __future__ import annotations

import pytest

from tritonkit.errors import UsageError
from tritonkit.export import profiles
from tritonkit.export.options import TABULAR_MAX_BATCH_SIZE, TENSOR_MAX_BATCH_SIZE, ExportOptions
from tritonkit.model_config import InstanceGroup, ModelConfig, ModelWarmup, TensorSpec

INPUTS = [TensorSpec("features", "FP32", [5])]
OUTPUTS = [TensorSpec("score", "FP32", [1])]


def _config(options: ExportOptions, default: int = TABULAR_MAX_BATCH_SIZE) -> ModelConfig:
    return options.model_config(INPUTS, OUTPUTS, default_max_batch_size=default)


def _shape(config: ModelConfig) -> tuple:
    group = config.instance_groups[0]
    return group.count, config.parameters["intra_op_thread_count"], config.max_batch_size


@pytest.mark.parametrize(
    ("profile", "default", "cores", "expected"),
    [
        ("realtime", TABULAR_MAX_BATCH_SIZE, 2, (2, 1, None)),
        ("realtime", TABULAR_MAX_BATCH_SIZE, 16, (2, 1, None)),
        ("realtime", TABULAR_MAX_BATCH_SIZE, 1, (1, 1, None)),
        ("realtime", TENSOR_MAX_BATCH_SIZE, 8, (2, 1, None)),
        ("bulk", TABULAR_MAX_BATCH_SIZE, 2, (1, 0, 65_536)),
        ("bulk", TENSOR_MAX_BATCH_SIZE, 8, (1, 0, None)),
    ],
)
def test_starting_point_follows_the_documented_rules_when_given_cores_and_cost(profile, default, cores, expected):
    point = profiles.starting_point(profile, default >= TABULAR_MAX_BATCH_SIZE, "KIND_CPU", cores)
    assert (point.instances, point.threads, point.max_batch_size) == expected


def test_export_options_write_the_bulk_profile_when_asked(tmp_path):
    config = _config(ExportOptions(tmp_path, "forest", profile="bulk"))
    assert _shape(config) == (1, "0", 65_536)
    assert config.dynamic_batching is not None and config.dynamic_batching.max_queue_delay_us == 0


def test_export_options_keep_todays_default_when_profile_is_realtime(tmp_path):
    assert _shape(_config(ExportOptions(tmp_path, "forest"))) == (2, "1", TABULAR_MAX_BATCH_SIZE)
    assert _shape(_config(ExportOptions(tmp_path, "net"), TENSOR_MAX_BATCH_SIZE)) == (2, "1", TENSOR_MAX_BATCH_SIZE)


def test_explicit_options_win_over_the_profile_when_given(tmp_path):
    options = ExportOptions(tmp_path, "forest", profile="bulk", instances=3, intra_op_threads=1, max_batch_size=1024)
    assert _shape(_config(options)) == (3, "1", 1024)


def test_gpu_instances_stay_one_per_gpu_when_profile_is_bulk(tmp_path):
    config = _config(ExportOptions(tmp_path, "forest", profile="bulk", kind="KIND_GPU"))
    assert [(g.count, g.kind) for g in config.instance_groups] == [(1, "KIND_GPU")]


def test_unknown_profile_is_refused_naming_the_choices(tmp_path):
    with pytest.raises(UsageError, match="--profile is 'nightly'; expected one of realtime, bulk"):
        ExportOptions(tmp_path, "forest", profile="nightly")


def test_apply_profile_drops_warmups_larger_than_the_new_batch_when_rewriting_a_config():
    config = ModelConfig(
        name="enc",
        backend="onnxruntime",
        max_batch_size=64,
        inputs=INPUTS,
        outputs=OUTPUTS,
        instance_groups=[InstanceGroup(count=2, kind="KIND_CPU")],
        parameters={"intra_op_thread_count": "1"},
        model_warmup=[ModelWarmup(name="w", batch_size=8, inputs={"features": ("FP32", (5,), "zero")})],
    )
    bulk = profiles.apply_profile(config, "bulk", light=False)
    assert _shape(bulk) == (1, "0", 64) and bulk.model_warmup == config.model_warmup
    light = profiles.apply_profile(config, "bulk", light=True)
    assert _shape(light) == (1, "0", 65_536)
