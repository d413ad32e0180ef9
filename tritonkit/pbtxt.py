"""Generator and parser for config.pbtxt: typed ModelConfig <-> Triton's protobuf <-> text format.

Text is protobuf text format in Triton's field declaration order (map keys sorted), so writing the
same config twice gives the same bytes. Every protobuf error becomes a ConfigError naming the field
and listing the valid fields (or enum values) of the message it belongs to.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
from pathlib import Path

from google.protobuf import json_format, text_format
from google.protobuf.message import Message
from tritonclient.grpc import model_config_pb2 as pb

from tritonkit.errors import ConfigError

logger = logging.getLogger(__name__)

CONFIG_FILENAME = "config.pbtxt"
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
_UNKNOWN_FIELD = re.compile(r'Message type "([\w.]+)" has no field named "(\w+)"')
_DUPLICATE_FIELD = re.compile(r'Message type "([\w.]+)" should not have multiple "(\w+)" fields')
_UNKNOWN_ENUM = re.compile(r'Enum type "([\w.]+)" has no value (?:named|with number) (\S+?)\.?$')
_POSITION = re.compile(r"^(\d+):(\d+) : ")
_ACCELERATORS = "optimization.execution_accelerators.gpu_execution_accelerator"


def config_error(message: str, *, field: str | None = None, value=None) -> ConfigError:
    """Build a ConfigError that also carries ``field`` and ``value`` as attributes."""
    error = ConfigError(message)
    error.field, error.value = field, value
    return error


# ---- text and files ---------------------------------------------------------------------------


def dump(message: Message) -> str:
    """Return ``message`` as protobuf text, fields in .proto declaration order, map keys sorted."""
    return text_format.MessageToString(message, use_index_order=True, as_utf8=True)


def parse(text: str, *, source: str = CONFIG_FILENAME) -> pb.ModelConfig:
    """Parse config.pbtxt ``text`` into an ``inference.ModelConfig``; ``source`` names it in errors."""
    try:
        return text_format.Parse(text, pb.ModelConfig())
    except text_format.ParseError as e:
        raise _translate(str(e), source) from e


def parse_dict(data: dict, *, source: str = "config JSON") -> pb.ModelConfig:
    """Parse the JSON form (Triton's /v2/models/NAME/config) into an ``inference.ModelConfig``."""
    try:
        return json_format.ParseDict(data, pb.ModelConfig())
    except json_format.ParseError as e:
        raise _translate(str(e).split("\n")[0], source) from e


def config_path(path: str | os.PathLike) -> Path:
    """Resolve ``path`` (a .pbtxt file, or a model folder holding config.pbtxt) to the file."""
    path = Path(path)
    return path if path.suffix == ".pbtxt" else path / CONFIG_FILENAME


def read_text(path: str | os.PathLike) -> tuple[Path, str]:
    """Return the config file resolved from ``path`` and its text; an unreadable file is a ConfigError."""
    file = config_path(path)
    try:
        return file, file.read_text(encoding="utf-8")
    except OSError as e:
        raise config_error(
            f"cannot read model config {file} ({e.strerror}); expected a {CONFIG_FILENAME} "
            "file or a model folder containing one",
            field="path",
            value=str(file),
        ) from e


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` atomically to the config file resolved from ``path``; return that file."""
    file = config_path(path)
    file.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".config-", suffix=".tmp", dir=file.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.chmod(tmp, 0o644)  # mkstemp makes it private; Triton in a container may run as another user
        os.replace(tmp, file)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return file


def _translate(raw: str, source: str) -> ConfigError:
    """Turn a protobuf parse error's text into a ConfigError that names the field."""
    where, position = source, _POSITION.match(raw)
    if position:
        where, raw = f"{source}:{position.group(1)}:{position.group(2)}", raw[position.end() :]
    pool = pb.DESCRIPTOR.pool
    if match := _UNKNOWN_FIELD.search(raw):
        owner, name = match.groups()
        valid = ", ".join(f.name for f in pool.FindMessageTypeByName(owner).fields)
        return config_error(f"{where}: unknown field `{name}` in {owner}; valid fields: {valid}", field=name)
    if match := _DUPLICATE_FIELD.search(raw):
        owner, name = match.groups()
        return config_error(
            f"{where}: field `{name}` is set more than once in {owner}; expected at most once", field=name
        )
    if match := _UNKNOWN_ENUM.search(raw):
        enum, value = match.groups()
        named = re.search(r"(\w+)\s*:\s*" + re.escape(value), raw)
        name = named.group(1) if named else enum
        valid = ", ".join(v.name for v in pool.FindEnumTypeByName(enum).values if not v.name.endswith("INVALID"))
        return config_error(f"{where}: field `{name}` is {value}; expected one of {valid}", field=name, value=value)
    return config_error(f"{where}: {raw}")


# ---- typed config <-> protobuf -----------------------------------------------------------------


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


def from_proto(msg: pb.ModelConfig, *, strict: bool = True):
    """Build a typed ``ModelConfig`` from ``msg``; fields it does not model raise unless not ``strict``."""
    from tritonkit import model_config as mc  # model_config imports this module

    for path, supported in unsupported_fields(msg):
        if strict:
            raise config_error(
                f"field `{path}` is valid in Triton but not modelled by tritonkit's ModelConfig; "
                f"supported there: {', '.join(supported)}",
                field=path,
            )
        logger.warning("ignoring model config field %s (not modelled by tritonkit's ModelConfig)", path)
    accelerators = msg.optimization.execution_accelerators.gpu_execution_accelerator
    if len(accelerators) > 1:
        raise config_error(
            f"{_ACCELERATORS} has {len(accelerators)} entries; expected at most one",
            field=_ACCELERATORS,
            value=[a.name for a in accelerators],
        )

    def tensor(m: Message) -> mc.TensorSpec:
        reshape = tuple(m.reshape.shape) if m.HasField("reshape") else None
        return mc.TensorSpec(m.name, m.data_type, tuple(m.dims), reshape, getattr(m, "optional", False))

    def queue_policy(m: Message) -> mc.QueuePolicy:
        action = pb.ModelQueuePolicy.TimeoutAction.Name(m.timeout_action)
        return mc.QueuePolicy(action, m.default_timeout_microseconds, m.allow_timeout_override, m.max_queue_size)

    def warmup(m: Message) -> mc.ModelWarmup:
        inputs = {}
        for name, entry in m.inputs.items():
            which = entry.WhichOneof("input_data_type")  # zero_data | random_data | input_data_file | None
            data = f"file:{entry.input_data_file}" if which == "input_data_file" else (which or "")[: -len("_data")]
            inputs[name] = (entry.data_type, tuple(entry.dims), data)
        return mc.ModelWarmup(m.name, m.batch_size, inputs, m.count)

    batching = None
    if msg.HasField("dynamic_batching"):
        b = msg.dynamic_batching
        default = queue_policy(b.default_queue_policy) if b.HasField("default_queue_policy") else None
        batching = mc.DynamicBatching(
            b.max_queue_delay_microseconds,
            tuple(b.preferred_batch_size),
            b.preserve_ordering,
            b.priority_levels,
            b.default_priority_level,
            default,
            {level: queue_policy(p) for level, p in b.priority_queue_policy.items()},
        )
    version_policy = None
    if msg.HasField("version_policy"):
        v = msg.version_policy
        version_policy = mc.VersionPolicy(
            v.WhichOneof("policy_choice"), v.latest.num_versions, tuple(v.specific.versions)
        )
    return mc.ModelConfig(
        msg.name,
        backend=msg.backend,
        platform=msg.platform,
        max_batch_size=msg.max_batch_size,
        inputs=[tensor(m) for m in msg.input],
        outputs=[tensor(m) for m in msg.output],
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
        model_warmup=[warmup(m) for m in msg.model_warmup],
        version_policy=version_policy,
        response_cache=msg.response_cache.enable,
        gpu_execution_accelerator={"name": accelerators[0].name, "parameters": dict(accelerators[0].parameters)}
        if accelerators
        else None,
        default_model_filename=msg.default_model_filename,
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
