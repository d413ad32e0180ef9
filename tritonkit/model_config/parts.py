"""The parts of a typed model config: tensors, dynamic batching, queue policies, instance groups, warmup,
version policy, response cache; each validated with a ConfigError that names the config.pbtxt field."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from tritonclient.grpc import model_config_pb2 as pb

from tritonkit import pbtxt

VALID_DTYPES = (
    "BOOL",
    "UINT8",
    "UINT16",
    "UINT32",
    "UINT64",
    "INT8",
    "INT16",
    "INT32",
    "INT64",
    "FP16",
    "FP32",
    "FP64",
    "BYTES",
    "BF16",
)
TRITON_DTYPES: dict[str, np.dtype] = {  # Triton datatype -> numpy dtype of the tensor's values
    "BOOL": np.dtype(bool),
    "BYTES": np.dtype(object),
    **{f"UINT{bits}": np.dtype(f"uint{bits}") for bits in (8, 16, 32, 64)},
    **{f"INT{bits}": np.dtype(f"int{bits}") for bits in (8, 16, 32, 64)},
    **{f"FP{bits}": np.dtype(f"float{bits}") for bits in (16, 32, 64)},
}
try:  # numpy has no bfloat16; tritonclient uses ml_dtypes' when it is installed
    import ml_dtypes

    TRITON_DTYPES["BF16"] = np.dtype(ml_dtypes.bfloat16)
except ImportError:  # pragma: no cover - depends on the environment
    pass

KINDS = tuple(pb.ModelInstanceGroup.Kind.keys())
TIMEOUT_ACTIONS = tuple(pb.ModelQueuePolicy.TimeoutAction.keys())
WARMUP_DATA = ("zero", "random", "file:<name>")


def _fail(path: str, value, expected: str) -> None:
    raise pbtxt.config_error(f"{path} is {value!r}; expected {expected}", field=path, value=value)


def _int(path: str, value, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        _fail(path, value, f"an integer >= {minimum}")


def _ints(path: str, values, expected: str, minimum: int, maximum: float = float("inf")) -> None:
    if not isinstance(values, tuple) or any(
        isinstance(v, bool) or not isinstance(v, int) or not minimum <= v <= maximum for v in values
    ):
        _fail(path, list(values) if isinstance(values, tuple) else values, expected)


def _seq(value):
    return tuple(value) if isinstance(value, (list, tuple, range)) else value


def _dims(path: str, dims, *, variable: bool = True) -> None:
    ok = (lambda d: d > 0 or d == -1) if variable else (lambda d: d > 0)
    if not isinstance(dims, tuple) or any(isinstance(d, bool) or not isinstance(d, int) or not ok(d) for d in dims):
        _fail(
            path,
            list(dims) if isinstance(dims, tuple) else dims,
            "each dim > 0" + (" or -1 (variable)" if variable else ""),
        )


def _dtype(path: str, dtype) -> None:
    if dtype not in VALID_DTYPES:
        _fail(path, dtype, "one of " + ", ".join(VALID_DTYPES))


def _norm_dtype(dtype):
    """``TYPE_FP32`` -> ``FP32``, ``TYPE_STRING`` -> ``BYTES``; an enum number -> its name."""
    if isinstance(dtype, int) and not isinstance(dtype, bool):
        dtype = pb.DataType.Name(dtype) if dtype in pb.DataType.values() else dtype
    if isinstance(dtype, str) and dtype.startswith("TYPE_"):
        dtype = "BYTES" if dtype == "TYPE_STRING" else dtype[5:]
    return dtype


def _set(obj, **values) -> None:
    for name, value in values.items():
        object.__setattr__(obj, name, value)


def _str_map(path: str, mapping) -> dict[str, str]:
    if not isinstance(mapping, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in mapping.items()):
        _fail(path, mapping, "a dict of string keys to string values")
    return dict(mapping)


@dataclass(frozen=True)
class TensorSpec:
    """One input or output: name, Triton datatype (``FP32``), dims without the batch dim."""

    name: str
    dtype: str
    dims: tuple[int, ...]
    reshape: tuple[int, ...] | None = None
    optional: bool = False

    def __post_init__(self):
        _set(self, dtype=_norm_dtype(self.dtype), dims=_seq(self.dims), reshape=_seq(self.reshape))

    @property
    def numpy_dtype(self) -> np.dtype:
        """The numpy dtype of this tensor (``object`` for BYTES)."""
        if self.dtype not in TRITON_DTYPES:
            _fail(f"tensor[{self.name}].data_type", self.dtype, "one of " + ", ".join(TRITON_DTYPES))
        return TRITON_DTYPES[self.dtype]

    def _check(self, role: str) -> None:
        if not isinstance(self.name, str) or not self.name:
            _fail(f"{role}.name", self.name, "a non-empty string")
        path = f"{role}[{self.name}]"
        _dtype(f"{path}.data_type", self.dtype)
        _dims(f"{path}.dims", self.dims)
        if self.reshape is not None:
            _dims(f"{path}.reshape.shape", self.reshape)
        if self.optional and role == "output":
            _fail(f"{path}.optional", True, "False (only inputs can be optional)")


@dataclass(frozen=True)
class QueuePolicy:
    """How a dynamic-batching queue treats waiting requests (timeout_action REJECT or DELAY)."""

    timeout_action: str = "REJECT"
    default_timeout_us: int = 0
    allow_timeout_override: bool = False
    max_queue_size: int = 0

    def _check(self, path: str) -> None:
        if self.timeout_action not in TIMEOUT_ACTIONS:
            _fail(f"{path}.timeout_action", self.timeout_action, "one of " + ", ".join(TIMEOUT_ACTIONS))
        _int(f"{path}.default_timeout_microseconds", self.default_timeout_us, 0)
        _int(f"{path}.max_queue_size", self.max_queue_size, 0)


@dataclass(frozen=True)
class DynamicBatching:
    """Triton's dynamic batcher; priority levels are 1..priority_levels (0 = no priorities)."""

    max_queue_delay_us: int = 0
    preferred_batch_sizes: tuple[int, ...] = ()
    preserve_ordering: bool = False
    priority_levels: int = 0
    default_priority_level: int = 0
    default_queue_policy: QueuePolicy | None = None
    priority_queue_policy: dict[int, QueuePolicy] = field(default_factory=dict)

    def __post_init__(self):
        _set(
            self,
            preferred_batch_sizes=_seq(self.preferred_batch_sizes),
            priority_queue_policy=dict(self.priority_queue_policy),
        )

    def _check(self, path: str, max_batch_size: int) -> None:
        _int(f"{path}.max_queue_delay_microseconds", self.max_queue_delay_us, 0)
        _ints(
            f"{path}.preferred_batch_size",
            self.preferred_batch_sizes,
            f"each in 1..max_batch_size ({max_batch_size})",
            1,
            max_batch_size,
        )
        _int(f"{path}.priority_levels", self.priority_levels, 0)
        levels = self.priority_levels
        if (self.default_priority_level not in range(1, levels + 1)) if levels else self.default_priority_level:
            _fail(
                f"{path}.default_priority_level",
                self.default_priority_level,
                f"in 1..priority_levels ({levels})" if levels else "0 when priority_levels is 0",
            )
        if self.default_queue_policy is not None:
            self.default_queue_policy._check(f"{path}.default_queue_policy")
        for level, policy in self.priority_queue_policy.items():
            if level not in range(1, levels + 1):
                _fail(f"{path}.priority_queue_policy", level, f"a key in 1..priority_levels ({levels})")
            policy._check(f"{path}.priority_queue_policy[{level}]")


@dataclass(frozen=True)
class InstanceGroup:
    """``count`` model instances of one ``kind`` (KIND_CPU, KIND_GPU, ...), optionally pinned to ``gpus``."""

    count: int = 1
    kind: str = "KIND_AUTO"
    gpus: tuple[int, ...] | None = None
    name: str = ""

    def __post_init__(self):
        _set(self, gpus=_seq(self.gpus))

    def _check(self, path: str) -> None:
        _int(f"{path}.count", self.count, 1)
        if self.kind not in KINDS:
            _fail(f"{path}.kind", self.kind, "one of " + ", ".join(KINDS))
        if self.gpus is not None:
            if self.kind not in ("KIND_GPU", "KIND_AUTO"):
                _fail(f"{path}.gpus", list(self.gpus), f"no gpus for kind {self.kind}")
            _ints(f"{path}.gpus", self.gpus, "GPU indices >= 0", 0)


@dataclass(frozen=True)
class ModelWarmup:
    """One warmup sample: ``inputs`` maps input name -> (dtype, dims, "zero" | "random" | "file:NAME")."""

    name: str
    batch_size: int = 1
    inputs: dict[str, tuple[str, tuple[int, ...], str]] = field(default_factory=dict)
    count: int = 0

    def __post_init__(self):
        _set(
            self,
            inputs={
                k: (_norm_dtype(v[0]), _seq(v[1]), v[2]) if isinstance(v, (tuple, list)) and len(v) == 3 else v
                for k, v in dict(self.inputs).items()
            },
        )

    def _check(self, path: str, max_batch_size: int, input_names: set[str]) -> None:
        path = f"{path}[{self.name}]"
        _int(f"{path}.batch_size", self.batch_size, 1)
        if self.batch_size > max(max_batch_size, 1):
            _fail(f"{path}.batch_size", self.batch_size, f"<= max(max_batch_size, 1) ({max(max_batch_size, 1)})")
        _int(f"{path}.count", self.count, 0)
        for name, spec in self.inputs.items():
            if input_names and name not in input_names:
                _fail(f"{path}.inputs", name, "a model input: " + ", ".join(sorted(input_names)))
            if not isinstance(spec, tuple) or len(spec) != 3:
                _fail(f"{path}.inputs[{name}]", spec, "a (dtype, dims, data) tuple")
            _dtype(f"{path}.inputs[{name}].data_type", spec[0])
            _dims(f"{path}.inputs[{name}].dims", spec[1], variable=False)
            if spec[2] not in WARMUP_DATA[:2] and not (isinstance(spec[2], str) and spec[2].startswith("file:")):
                _fail(f"{path}.inputs[{name}].input_data_type", spec[2], "one of " + ", ".join(WARMUP_DATA))


@dataclass(frozen=True)
class VersionPolicy:
    """Which versions Triton serves: ``VersionPolicy.latest(n)``, ``.all()`` or ``.specific([1, 3])``."""

    policy: str
    num_versions: int = 0
    versions: tuple[int, ...] = ()

    def __post_init__(self):
        _set(self, versions=_seq(self.versions))

    @classmethod
    def latest(cls, num_versions: int = 1) -> VersionPolicy:
        """Serve the ``num_versions`` highest-numbered versions."""
        return cls("latest", num_versions=num_versions)

    @classmethod
    def all(cls) -> VersionPolicy:
        """Serve every version in the model folder."""
        return cls("all")

    @classmethod
    def specific(cls, versions) -> VersionPolicy:
        """Serve exactly ``versions``."""
        return cls("specific", versions=tuple(versions))

    def _check(self, path: str) -> None:
        if self.policy == "latest":
            _int(f"{path}.latest.num_versions", self.num_versions, 1)
        elif self.policy == "specific":
            _ints(f"{path}.specific.versions", self.versions, "a non-empty list of versions >= 1", 1)
            if not self.versions:
                _fail(f"{path}.specific.versions", [], "a non-empty list of versions >= 1")
        elif self.policy != "all":
            _fail(f"{path}", self.policy, "one of latest, all, specific")


@dataclass(frozen=True)
class ResponseCache:
    """Triton's response cache switch; ``ModelConfig(response_cache=...)`` also takes a bool."""

    enable: bool = True


def _accelerator(value) -> dict | None:
    path = "optimization.execution_accelerators.gpu_execution_accelerator"
    if value is None:
        return None
    if not isinstance(value, dict) or set(value) - {"name", "parameters"}:
        _fail(path, value, "None or a dict with keys name, parameters")
    if not isinstance(value.get("name"), str) or not value["name"]:
        _fail(f"{path}.name", value.get("name"), "a non-empty string such as tensorrt")
    return {"name": value["name"], "parameters": _str_map(f"{path}.parameters", value.get("parameters", {}))}
