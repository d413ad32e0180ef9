"""Round trips of the typed model config against stored config.pbtxt files, valid and invalid."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import numpy as np
import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from tritonkit.errors import ConfigError, TritonKitError
from tritonkit.model_config import (
    TRITON_DTYPES,
    DynamicBatching,
    InstanceGroup,
    ModelConfig,
    ModelWarmup,
    QueuePolicy,
    ResponseCache,
    TensorSpec,
    VersionPolicy,
)

CONFIGS = Path(__file__).parent / "configs"
CANONICAL = ["minimal.pbtxt", "churn_full.pbtxt", "python_bytes_reshape.pbtxt"]
VALID = CANONICAL + ["gpu_instances_handwritten.pbtxt"]


def churn(**changes) -> ModelConfig:
    """The config from the module's documentation, with ``changes`` applied."""
    fields = dict(
        name="churn",
        backend="onnxruntime",
        max_batch_size=4096,
        inputs=[TensorSpec("tenure_months", "FP32", [1])],
        outputs=[TensorSpec("probability", "FP32", [1])],
        dynamic_batching=DynamicBatching(
            max_queue_delay_us=200,
            preferred_batch_sizes=[],
            priority_levels=0,
            default_priority_level=0,
            default_queue_policy=QueuePolicy(
                timeout_action="REJECT", default_timeout_us=0, allow_timeout_override=False, max_queue_size=0
            ),
        ),
        instance_groups=[InstanceGroup(count=2, kind="KIND_CPU")],
        parameters={"intra_op_thread_count": "1"},
        model_warmup=[ModelWarmup(name="zeros", batch_size=1, inputs={"tenure_months": ("FP32", [1], "zero")})],
        version_policy=VersionPolicy.latest(1),
        response_cache=False,
        gpu_execution_accelerator={"name": "tensorrt", "parameters": {"precision_mode": "FP16"}},
    )
    fields.update(changes)
    return ModelConfig(**fields)


# ---- stored valid configs ---------------------------------------------------------------------


@pytest.mark.parametrize("filename", VALID)
def test_model_config_round_trip_is_equal_when_parsed_written_and_parsed_again(filename, tmp_path):
    parsed = ModelConfig.read(CONFIGS / filename)
    written = parsed.write(tmp_path / "churn")
    assert written == tmp_path / "churn" / "config.pbtxt"
    assert ModelConfig.read(tmp_path / "churn") == parsed


@pytest.mark.parametrize("filename", CANONICAL)
def test_model_config_to_pbtxt_equals_stored_text_when_file_is_canonical(filename):
    text = (CONFIGS / filename).read_text()
    assert ModelConfig.from_pbtxt(text).to_pbtxt() == text


@pytest.mark.parametrize("filename", VALID)
def test_model_config_to_pbtxt_parses_with_triton_protobuf_when_written(filename):
    config = ModelConfig.read(CONFIGS / filename)
    message = text_format.Parse(config.to_pbtxt(), model_config_pb2.ModelConfig())
    assert message == config.to_proto()
    assert ModelConfig.from_proto(message) == config


def test_model_config_matches_typed_object_when_full_churn_file_is_read():
    expected = ModelConfig(
        "churn",
        backend="onnxruntime",
        max_batch_size=4096,
        default_model_filename="model.onnx",
        inputs=[
            TensorSpec("tenure_months", "FP32", [1]),
            TensorSpec("plan", "BYTES", [1]),
            TensorSpec("monthly_charges_usd", "FP32", [-1], optional=True),
        ],
        outputs=[TensorSpec("probability", "FP32", [1])],
        dynamic_batching=DynamicBatching(
            max_queue_delay_us=200,
            preferred_batch_sizes=[256, 1024],
            preserve_ordering=True,
            priority_levels=2,
            default_priority_level=2,
            default_queue_policy=QueuePolicy(
                "DELAY", default_timeout_us=50000, allow_timeout_override=True, max_queue_size=8192
            ),
            priority_queue_policy={1: QueuePolicy("REJECT", default_timeout_us=10000, max_queue_size=1024)},
        ),
        instance_groups=[InstanceGroup(count=2, kind="KIND_CPU")],
        parameters={"inter_op_thread_count": "1", "intra_op_thread_count": "1"},
        model_warmup=[
            ModelWarmup("zeros", inputs={"tenure_months": ("FP32", [1], "zero"), "plan": ("BYTES", [1], "zero")}),
            ModelWarmup(
                "random_batch",
                batch_size=64,
                count=3,
                inputs={"tenure_months": ("FP32", [1], "random"), "plan": ("BYTES", [1], "file:plan_sample")},
            ),
        ],
        version_policy=VersionPolicy.specific([1, 3]),
        response_cache=ResponseCache(enable=True),
        gpu_execution_accelerator={
            "name": "tensorrt",
            "parameters": {"precision_mode": "FP16", "max_workspace_size_bytes": "1073741824"},
        },
    )
    assert ModelConfig.read(CONFIGS / "churn_full.pbtxt") == expected
    assert expected.to_pbtxt() == (CONFIGS / "churn_full.pbtxt").read_text()


def test_model_config_reads_list_syntax_when_file_is_handwritten():
    config = ModelConfig.read(CONFIGS / "gpu_instances_handwritten.pbtxt")
    assert config.platform == "tensorrt_plan" and config.backend is None
    assert config.inputs == (TensorSpec("images", "FP16", (3, 224, 224)),)
    assert config.instance_groups == (InstanceGroup(1, "KIND_GPU", (0,)), InstanceGroup(2, "KIND_GPU", (1, 2)))
    assert config.version_policy == VersionPolicy.all()
    assert config.dynamic_batching == DynamicBatching()


# ---- stored invalid configs -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("filename", "field", "mentions"),
    [
        ("invalid_unknown_field.pbtxt", "instance_groups", ["valid fields:", "instance_group,", "dynamic_batching"]),
        (
            "invalid_unknown_nested_field.pbtxt",
            "max_queue_delay_ms",
            ["ModelDynamicBatching", "max_queue_delay_microseconds"],
        ),
        ("invalid_bad_dtype.pbtxt", "data_type", ["TYPE_FLOAT32", "TYPE_FP32"]),
        ("invalid_missing_dtype.pbtxt", "input[tenure_months].data_type", ["FP32", "BYTES"]),
        ("invalid_preferred_batch_size_too_large.pbtxt", "dynamic_batching.preferred_batch_size", ["[32, 128]", "64"]),
        ("invalid_dynamic_batching_without_batch_dim.pbtxt", "max_batch_size", ["dynamic_batching", "> 0"]),
        ("invalid_negative_count.pbtxt", "instance_group[0].count", ["-1", ">= 1"]),
        ("invalid_zero_dim.pbtxt", "input[tenure_months].dims", ["[0]", "-1"]),
        ("invalid_duplicate_input.pbtxt", "input.name", ["'x'", "unique"]),
        ("invalid_bad_kind.pbtxt", "kind", ["KIND_TPU", "KIND_GPU"]),
        ("invalid_gpus_on_cpu.pbtxt", "instance_group[0].gpus", ["KIND_CPU"]),
        (
            "invalid_default_priority_level.pbtxt",
            "dynamic_batching.default_priority_level",
            ["3", "1..priority_levels (2)"],
        ),
        ("invalid_warmup_unknown_input.pbtxt", "model_warmup[zeros].inputs", ["'tenure'", "tenure_months"]),
        ("invalid_unsupported_field.pbtxt", "sequence_batching", ["not modelled", "dynamic_batching"]),
        ("invalid_empty_name.pbtxt", "name", ["non-empty"]),
    ],
)
def test_model_config_read_raises_config_error_naming_field_when_file_is_invalid(filename, field, mentions):
    path = CONFIGS / filename
    with pytest.raises(ConfigError) as caught:
        ModelConfig.read(path)
    message = str(caught.value)
    assert caught.value.field == field
    assert message.startswith(str(path)) and f"{field}" in message
    for text in mentions:
        assert text in message


def test_model_config_read_raises_config_error_with_position_when_text_is_not_pbtxt():
    with pytest.raises(ConfigError, match=r"invalid_syntax\.pbtxt:3:\d+: .*\}"):
        ModelConfig.read(CONFIGS / "invalid_syntax.pbtxt")


def test_model_config_read_raises_config_error_when_folder_has_no_config(tmp_path):
    with pytest.raises(ConfigError, match="config.pbtxt"):
        ModelConfig.read(tmp_path)


def test_config_error_is_kit_error_with_exit_code_2():
    with pytest.raises(TritonKitError) as caught:
        ModelConfig.from_pbtxt('name: "x"\nbogus: 1\n')
    assert caught.value.exit_code == 2


# ---- typed API ----------------------------------------------------------------------------------


def test_model_config_round_trip_is_equal_when_built_in_python():
    config = churn()
    assert ModelConfig.from_pbtxt(config.to_pbtxt()) == config
    assert ModelConfig.from_proto(config.to_proto()) == config
    assert ModelConfig.from_dict(config.to_dict()) == config


def test_model_config_writes_to_file_path_when_path_ends_in_pbtxt(tmp_path):
    written = churn().write(tmp_path / "custom.pbtxt")
    assert written == tmp_path / "custom.pbtxt"
    assert ModelConfig.read(written) == churn()
    assert [p.name for p in tmp_path.iterdir()] == ["custom.pbtxt"]


def test_model_config_to_pbtxt_is_stable_when_parameters_are_inserted_in_another_order():
    one = churn(parameters={"a": "1", "b": "2"})
    other = churn(parameters={"b": "2", "a": "1"})
    assert one.to_pbtxt() == other.to_pbtxt()
    assert one.to_pbtxt().index('key: "a"') < one.to_pbtxt().index('key: "b"')


def test_model_config_to_pbtxt_uses_triton_type_names_when_dtype_is_kit_name():
    text = churn(inputs=[TensorSpec("tenure_months", "FP32", [1]), TensorSpec("plan", "BYTES", [1])]).to_pbtxt()
    assert "data_type: TYPE_FP32" in text and "data_type: TYPE_STRING" in text
    assert "BYTES" not in text


def test_model_config_to_pbtxt_omits_unset_sections_when_defaults_are_used():
    text = ModelConfig("m", inputs=[TensorSpec("x", "INT64", [-1])]).to_pbtxt()
    assert text == 'name: "m"\ninput {\n  name: "x"\n  data_type: TYPE_INT64\n  dims: -1\n}\n'


def test_model_config_to_dict_uses_proto_field_names_when_serialised():
    data = churn().to_dict()
    assert data["max_batch_size"] == 4096
    assert data["input"][0]["data_type"] == "TYPE_FP32"
    assert data["dynamic_batching"]["max_queue_delay_microseconds"] == "200"  # uint64 -> JSON string
    accelerator = data["optimization"]["execution_accelerators"]["gpu_execution_accelerator"][0]
    assert accelerator == {"name": "tensorrt", "parameters": {"precision_mode": "FP16"}}


def test_model_config_from_dict_raises_config_error_listing_fields_when_key_is_unknown():
    with pytest.raises(ConfigError, match=r"unknown field `max_batch` .*max_batch_size"):
        ModelConfig.from_dict({"name": "m", "max_batch": 4})


def test_model_config_from_proto_drops_unsupported_field_when_not_strict(caplog):
    text = (CONFIGS / "invalid_unsupported_field.pbtxt").read_text()
    message = text_format.Parse(text, model_config_pb2.ModelConfig())
    with caplog.at_level(logging.WARNING, logger="tritonkit.pbtxt"):
        config = ModelConfig.from_proto(message, strict=False)
    assert config == ModelConfig("churn", backend="onnxruntime", max_batch_size=8)
    assert "sequence_batching" in caplog.text


def test_model_config_is_frozen_when_constructed():
    with pytest.raises(dataclasses.FrozenInstanceError):
        churn().max_batch_size = 8


def test_tensor_spec_accepts_triton_enum_names_when_dtype_has_type_prefix():
    assert TensorSpec("plan", "TYPE_STRING", [1]) == TensorSpec("plan", "BYTES", (1,))
    assert TensorSpec("x", "TYPE_FP16", [2]).dtype == "FP16"


@pytest.mark.parametrize(
    ("dtype", "expected"),
    [
        ("FP32", np.float32),
        ("FP16", np.float16),
        ("FP64", np.float64),
        ("INT64", np.int64),
        ("INT32", np.int32),
        ("UINT8", np.uint8),
        ("INT8", np.int8),
        ("BOOL", np.bool_),
        ("BYTES", np.object_),
    ],
)
def test_tensor_spec_numpy_dtype_maps_triton_datatype_when_dtype_is_valid(dtype, expected):
    assert TensorSpec("x", dtype, [1]).numpy_dtype == np.dtype(expected)
    assert TRITON_DTYPES[dtype] == np.dtype(expected)


def test_tensor_spec_numpy_dtype_raises_config_error_when_dtype_is_unknown():
    with pytest.raises(ConfigError, match="FP33"):
        TensorSpec("x", "FP33", [1]).numpy_dtype


def test_version_policy_writes_each_choice_when_converted():
    assert "latest {\n    num_versions: 2" in churn(version_policy=VersionPolicy.latest(2)).to_pbtxt()
    assert "all {\n  }" in churn(version_policy=VersionPolicy.all()).to_pbtxt()
    assert "versions: 1\n    versions: 3" in churn(version_policy=VersionPolicy.specific([1, 3])).to_pbtxt()


@pytest.mark.parametrize(
    ("changes", "field", "mentions"),
    [
        ({"name": ""}, "name", "non-empty"),
        ({"max_batch_size": -1}, "max_batch_size", ">= 0"),
        ({"inputs": [TensorSpec("x", "FP33", [1])]}, "input[x].data_type", "FP32"),
        ({"inputs": [TensorSpec("x", "FP32", [0, 3])]}, "input[x].dims", "[0, 3]"),
        ({"outputs": [TensorSpec("y", "FP32", [1]), TensorSpec("y", "FP32", [2])]}, "output.name", "unique"),
        ({"outputs": [TensorSpec("y", "FP32", [1], optional=True)]}, "output[y].optional", "only inputs"),
        ({"instance_groups": [InstanceGroup(count=0, kind="KIND_CPU")]}, "instance_group[0].count", ">= 1"),
        ({"instance_groups": [InstanceGroup(count=1, kind="GPU")]}, "instance_group[0].kind", "KIND_GPU"),
        ({"max_batch_size": 0, "model_warmup": []}, "max_batch_size", "dynamic_batching"),
        (
            {"max_batch_size": 8, "dynamic_batching": DynamicBatching(preferred_batch_sizes=[16])},
            "dynamic_batching.preferred_batch_size",
            "max_batch_size (8)",
        ),
        (
            {"dynamic_batching": DynamicBatching(default_queue_policy=QueuePolicy(timeout_action="DROP"))},
            "dynamic_batching.default_queue_policy.timeout_action",
            "REJECT, DELAY",
        ),
        (
            {"dynamic_batching": DynamicBatching(max_queue_delay_us=-5)},
            "dynamic_batching.max_queue_delay_microseconds",
            ">= 0",
        ),
        ({"parameters": {"intra_op_thread_count": 1}}, "parameters", "string values"),
        (
            {"model_warmup": [ModelWarmup("w", 8192, {"tenure_months": ("FP32", [1], "zero")})]},
            "model_warmup[w].batch_size",
            "4096",
        ),
        (
            {"model_warmup": [ModelWarmup("w", 1, {"tenure_months": ("FP32", [-1], "zero")})]},
            "model_warmup[w].inputs[tenure_months].dims",
            "each dim > 0",
        ),
        (
            {"model_warmup": [ModelWarmup("w", 1, {"tenure_months": ("FP32", [1], "ones")})]},
            "model_warmup[w].inputs[tenure_months].input_data_type",
            "zero, random",
        ),
        ({"version_policy": VersionPolicy.specific([])}, "version_policy.specific.versions", "non-empty"),
        ({"version_policy": VersionPolicy.latest(0)}, "version_policy.latest.num_versions", ">= 1"),
        (
            {"gpu_execution_accelerator": {"name": "tensorrt", "precision_mode": "FP16"}},
            "optimization.execution_accelerators.gpu_execution_accelerator",
            "name, parameters",
        ),
    ],
)
def test_model_config_raises_config_error_naming_field_when_typed_value_is_invalid(changes, field, mentions):
    with pytest.raises(ConfigError) as caught:
        churn(**changes)
    assert caught.value.field == field
    assert str(caught.value).startswith(field) and mentions in str(caught.value)
