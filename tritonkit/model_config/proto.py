"""Typed model config <-> Triton's ``inference.ModelConfig`` protobuf message (the text lives in pbtxt)."""

from __future__ import annotations

import logging

from google.protobuf.message import Message
from tritonclient.grpc import model_config_pb2 as pb

from tritonkit import pbtxt
from tritonkit.model_config import parts as mc

logger = logging.getLogger(__name__)

SUPPORTED_FIELDS = {  # message -> the fields the typed API models; messages not listed are modelled whole
    "inference.ModelConfig": (
        "name",
        "platform",
        "backend",
        "version_policy",
        "max_batch_size",
        "input",
        "output",
        "optimization",
        "dynamic_batching",
        "instance_group",
        "default_model_filename",
        "parameters",
        "model_warmup",
        "response_cache",
    ),
    "inference.ModelInput": ("name", "data_type", "dims", "reshape", "optional"),
    "inference.ModelOutput": ("name", "data_type", "dims", "reshape"),
    "inference.ModelInstanceGroup": ("name", "kind", "count", "gpus"),
    "inference.ModelOptimizationPolicy": ("execution_accelerators",),
    "inference.ModelOptimizationPolicy.ExecutionAccelerators": ("gpu_execution_accelerator",),
}
_ACCELERATORS = "optimization.execution_accelerators.gpu_execution_accelerator"


def _proto_dtype(dtype: str) -> int:
    return pb.DataType.Value("TYPE_STRING" if dtype == "BYTES" else f"TYPE_{dtype}")


def to_proto(config) -> pb.ModelConfig:
    """Return the ``inference.ModelConfig`` message for a (validated) typed ``ModelConfig``."""
    msg = pb.ModelConfig(
        name=config.name,
        platform=config.platform or "",
        backend=config.backend or "",
        max_batch_size=config.max_batch_size,
        default_model_filename=config.default_model_filename or "",
    )
    if (policy := config.version_policy) is not None:
        getattr(msg.version_policy, policy.policy).SetInParent()
        if policy.policy == "latest":
            msg.version_policy.latest.num_versions = policy.num_versions
        elif policy.policy == "specific":
            msg.version_policy.specific.versions.extend(policy.versions)
    for specs, target in ((config.inputs, msg.input), (config.outputs, msg.output)):
        for spec in specs:
            tensor = target.add(name=spec.name, data_type=_proto_dtype(spec.dtype), dims=spec.dims)
            if spec.reshape is not None:
                tensor.reshape.SetInParent()
                tensor.reshape.shape.extend(spec.reshape)
            if spec.optional:
                tensor.optional = True
    if (accelerator := config.gpu_execution_accelerator) is not None:
        target = msg.optimization.execution_accelerators.gpu_execution_accelerator.add(name=accelerator["name"])
        target.parameters.update(accelerator["parameters"])
    if (batching := config.dynamic_batching) is not None:
        target = msg.dynamic_batching
        target.SetInParent()
        target.preferred_batch_size.extend(batching.preferred_batch_sizes)
        target.max_queue_delay_microseconds = batching.max_queue_delay_us
        target.preserve_ordering = batching.preserve_ordering
        target.priority_levels = batching.priority_levels
        target.default_priority_level = batching.default_priority_level
        if batching.default_queue_policy is not None:
            _queue_policy_to(batching.default_queue_policy, target.default_queue_policy)
        for level, queue_policy in sorted(batching.priority_queue_policy.items()):
            _queue_policy_to(queue_policy, target.priority_queue_policy[level])
    for group in config.instance_groups:
        msg.instance_group.add(
            name=group.name, count=group.count, gpus=group.gpus or (), kind=pb.ModelInstanceGroup.Kind.Value(group.kind)
        )
    for key, value in config.parameters.items():
        msg.parameters[key].string_value = value
    for warmup in config.model_warmup:
        target = msg.model_warmup.add(name=warmup.name, batch_size=warmup.batch_size, count=warmup.count)
        for name, (dtype, dims, data) in sorted(warmup.inputs.items()):
            entry = target.inputs[name]
            entry.data_type = _proto_dtype(dtype)
            entry.dims.extend(dims)
            if data.startswith("file:"):
                entry.input_data_file = data[len("file:") :]
            else:
                setattr(entry, f"{data}_data", True)
    if config.response_cache:
        msg.response_cache.enable = True
    return msg


def _queue_policy_to(policy, target: Message) -> None:
    target.SetInParent()
    target.timeout_action = pb.ModelQueuePolicy.TimeoutAction.Value(policy.timeout_action)
    target.default_timeout_microseconds = policy.default_timeout_us
    target.allow_timeout_override, target.max_queue_size = policy.allow_timeout_override, policy.max_queue_size


def fields_from_proto(msg: pb.ModelConfig, *, strict: bool = True) -> dict:
    """``ModelConfig``'s fields from ``msg``; fields it does not model raise unless not ``strict``."""
    for path, supported in unsupported_fields(msg):
        if strict:
            raise pbtxt.config_error(
                f"field `{path}` is valid in Triton but not modelled by tritonkit's ModelConfig; "
                f"supported there: {', '.join(supported)}",
                field=path,
            )
        logger.warning("ignoring model config field %s (not modelled by tritonkit's ModelConfig)", path)
    accelerators = msg.optimization.execution_accelerators.gpu_execution_accelerator
    if len(accelerators) > 1:
        raise pbtxt.config_error(
            f"{_ACCELERATORS} has {len(accelerators)} entries; expected at most one",
            field=_ACCELERATORS,
            value=[a.name for a in accelerators],
        )

    batching = _batching(msg.dynamic_batching) if msg.HasField("dynamic_batching") else None
    version_policy = None
    if msg.HasField("version_policy"):
        v = msg.version_policy
        version_policy = mc.VersionPolicy(
            v.WhichOneof("policy_choice"), v.latest.num_versions, tuple(v.specific.versions)
        )
    return dict(
        name=msg.name,
        backend=msg.backend,
        platform=msg.platform,
        max_batch_size=msg.max_batch_size,
        inputs=[_tensor(m) for m in msg.input],
        outputs=[_tensor(m) for m in msg.output],
        dynamic_batching=batching,
        instance_groups=[
            mc.InstanceGroup(
                m.count or 1,
                pb.ModelInstanceGroup.Kind.Name(m.kind),  # absent count = 1
                tuple(m.gpus) or None,
                m.name,
            )
            for m in msg.instance_group
        ],
        parameters={key: value.string_value for key, value in msg.parameters.items()},
        model_warmup=[_warmup(m) for m in msg.model_warmup],
        version_policy=version_policy,
        response_cache=msg.response_cache.enable,
        gpu_execution_accelerator={"name": accelerators[0].name, "parameters": dict(accelerators[0].parameters)}
        if accelerators
        else None,
        default_model_filename=msg.default_model_filename,
    )


def _tensor(m: Message) -> mc.TensorSpec:
    reshape = tuple(m.reshape.shape) if m.HasField("reshape") else None
    return mc.TensorSpec(m.name, m.data_type, tuple(m.dims), reshape, getattr(m, "optional", False))


def _queue_policy(m: Message) -> mc.QueuePolicy:
    action = pb.ModelQueuePolicy.TimeoutAction.Name(m.timeout_action)
    return mc.QueuePolicy(action, m.default_timeout_microseconds, m.allow_timeout_override, m.max_queue_size)


def _warmup(m: Message) -> mc.ModelWarmup:
    inputs = {}
    for name, entry in m.inputs.items():
        which = entry.WhichOneof("input_data_type")  # zero_data | random_data | input_data_file | None
        data = f"file:{entry.input_data_file}" if which == "input_data_file" else (which or "")[: -len("_data")]
        inputs[name] = (entry.data_type, tuple(entry.dims), data)
    return mc.ModelWarmup(m.name, m.batch_size, inputs, m.count)


def _batching(b: Message) -> mc.DynamicBatching:
    default = _queue_policy(b.default_queue_policy) if b.HasField("default_queue_policy") else None
    return mc.DynamicBatching(
        b.max_queue_delay_microseconds,
        tuple(b.preferred_batch_size),
        b.preserve_ordering,
        b.priority_levels,
        b.default_priority_level,
        default,
        {level: _queue_policy(p) for level, p in b.priority_queue_policy.items()},
    )


def unsupported_fields(msg: Message, path: str = "") -> list[tuple[str, tuple[str, ...]]]:
    """Fields set in ``msg`` (recursively) that the typed API does not model, each with what it does."""
    supported, found = SUPPORTED_FIELDS.get(msg.DESCRIPTOR.full_name), []
    for descriptor, value in msg.ListFields():
        where = f"{path}.{descriptor.name}" if path else descriptor.name
        if supported is not None and descriptor.name not in supported:
            found.append((where, supported))
        elif descriptor.message_type is not None:
            children = [value] if isinstance(value, Message) else value.values() if hasattr(value, "values") else value
            for child in children:
                found += unsupported_fields(child, where) if isinstance(child, Message) else []
    return found
