"""The typed Triton model config: frozen dataclasses that convert to and from config.pbtxt.

``ModelConfig`` covers the part of Triton's ``inference.ModelConfig`` the kit writes; reading a
config that sets any other field is a ConfigError (``strict=False`` drops such fields with a
warning). Datatypes are Triton's strings (``FP32``, ``BYTES``); config.pbtxt spells them
``TYPE_FP32``/``TYPE_STRING``. Error messages use config.pbtxt field names.

The pair, as in PyTriton's model_config: the typed object (`parts` and `ModelConfig` here), its
mapping to Triton's protobuf message (`proto`), and the text format (`tritonkit.pbtxt`, which only
reads and writes text).
"""

from __future__ import annotations

import os
from dataclasses import KW_ONLY, dataclass, field
from pathlib import Path

from google.protobuf import json_format
from google.protobuf.message import Message

from tritonkit import pbtxt
from tritonkit.errors import ConfigError
from tritonkit.model_config import proto
from tritonkit.model_config.parts import (
    KINDS,
    TIMEOUT_ACTIONS,
    TRITON_DTYPES,
    VALID_DTYPES,
    WARMUP_DATA,
    DynamicBatching,
    InstanceGroup,
    ModelWarmup,
    QueuePolicy,
    ResponseCache,
    TensorSpec,
    VersionPolicy,
    _accelerator,
    _fail,
    _int,
    _seq,
    _set,
    _str_map,
)

__all__ = [
    "KINDS",
    "TIMEOUT_ACTIONS",
    "TRITON_DTYPES",
    "VALID_DTYPES",
    "WARMUP_DATA",
    "DynamicBatching",
    "InstanceGroup",
    "ModelConfig",
    "ModelWarmup",
    "QueuePolicy",
    "ResponseCache",
    "TensorSpec",
    "VersionPolicy",
]


@dataclass(frozen=True)
class ModelConfig:
    """A Triton model config; validated on construction, equal after a config.pbtxt round trip.

    Sequences are stored as tuples; ``response_cache`` takes a bool or a ``ResponseCache`` (stored as
    a bool); ``gpu_execution_accelerator`` is ``{"name": ..., "parameters": {str: str}}`` or None.
    """

    name: str
    _: KW_ONLY
    backend: str | None = None
    platform: str | None = None
    max_batch_size: int = 0
    inputs: tuple[TensorSpec, ...] = ()
    outputs: tuple[TensorSpec, ...] = ()
    dynamic_batching: DynamicBatching | None = None
    instance_groups: tuple[InstanceGroup, ...] = ()
    parameters: dict[str, str] = field(default_factory=dict)
    model_warmup: tuple[ModelWarmup, ...] = ()
    version_policy: VersionPolicy | None = None
    response_cache: bool = False
    gpu_execution_accelerator: dict | None = None
    default_model_filename: str | None = None

    def __post_init__(self):
        cache = self.response_cache
        _set(
            self,
            inputs=_seq(self.inputs),
            outputs=_seq(self.outputs),
            model_warmup=_seq(self.model_warmup),
            instance_groups=_seq(self.instance_groups),
            parameters=_str_map("parameters", self.parameters),
            response_cache=cache.enable if isinstance(cache, ResponseCache) else cache,
            gpu_execution_accelerator=_accelerator(self.gpu_execution_accelerator),
            **{k: getattr(self, k) or None for k in ("backend", "platform", "default_model_filename")},
        )
        self.validate()

    def validate(self) -> None:
        """Raise ConfigError naming the first invalid field (run on construction)."""
        if not isinstance(self.name, str) or not self.name:
            _fail("name", self.name, "a non-empty string")
        for key in ("backend", "platform", "default_model_filename"):
            if getattr(self, key) is not None and not isinstance(getattr(self, key), str):
                _fail(key, getattr(self, key), "a string or None")
        _int("max_batch_size", self.max_batch_size, 0)
        for role, specs in (("input", self.inputs), ("output", self.outputs)):
            names = [spec.name if isinstance(spec, TensorSpec) else _fail(role, spec, "a TensorSpec") for spec in specs]
            for spec in specs:
                spec._check(role)
            if len(set(names)) != len(names):
                _fail(f"{role}.name", sorted({n for n in names if names.count(n) > 1}), f"unique {role} names")
        if self.dynamic_batching is not None:
            if self.max_batch_size == 0:
                _fail("max_batch_size", 0, "> 0 when dynamic_batching is set (batching needs a batch dim)")
            self.dynamic_batching._check("dynamic_batching", self.max_batch_size)
        for i, group in enumerate(self.instance_groups):
            group._check(f"instance_group[{i}]")
        for warmup in self.model_warmup:
            warmup._check("model_warmup", self.max_batch_size, {spec.name for spec in self.inputs})
        if self.version_policy is not None:
            self.version_policy._check("version_policy")
        if not isinstance(self.response_cache, bool):
            _fail("response_cache.enable", self.response_cache, "a bool or ResponseCache")

    def to_proto(self) -> Message:
        """Return the config as Triton's ``inference.ModelConfig`` protobuf message."""
        return proto.to_proto(self)

    @classmethod
    def from_proto(cls, msg: Message, *, strict: bool = True) -> ModelConfig:
        """Build from ``inference.ModelConfig``; a field the typed API lacks is a ConfigError when ``strict``."""
        return cls(**proto.fields_from_proto(msg, strict=strict))

    def to_pbtxt(self) -> str:
        """Return config.pbtxt text: protobuf text format, fields in Triton's declaration order."""
        return pbtxt.dump(self.to_proto())

    @classmethod
    def from_pbtxt(cls, text: str, *, source: str = "config.pbtxt", strict: bool = True) -> ModelConfig:
        """Parse config.pbtxt text; ``source`` (a file name) starts every error message."""
        msg = pbtxt.parse(text, source=source)
        try:
            return cls.from_proto(msg, strict=strict)
        except ConfigError as e:
            raise pbtxt.config_error(f"{source}: {e}", field=e.field, value=e.value) from e

    def to_dict(self) -> dict:
        """Return the JSON-able form Triton serves at /v2/models/NAME/config (proto field names)."""
        return json_format.MessageToDict(self.to_proto(), preserving_proto_field_name=True)

    @classmethod
    def from_dict(cls, data: dict, *, strict: bool = True) -> ModelConfig:
        """Build from the JSON form (``to_dict`` output or Triton's /v2/models/NAME/config)."""
        return cls.from_proto(pbtxt.parse_dict(data), strict=strict)

    def write(self, path: str | os.PathLike) -> Path:
        """Write config.pbtxt to ``path`` (a .pbtxt file or a model folder); return the file written."""
        return pbtxt.write_text(path, self.to_pbtxt())

    @classmethod
    def read(cls, path: str | os.PathLike, *, strict: bool = True) -> ModelConfig:
        """Read config.pbtxt from ``path`` (a .pbtxt file or a model folder containing one)."""
        file, text = pbtxt.read_text(path)
        return cls.from_pbtxt(text, source=str(file), strict=strict)
