"""What every `tritonkit export SOURCE` shares: its options, and what they become in the repository.

A source module (sklearn.py, torch_source.py, ...) converts its model to ONNX and measures parity;
everything else goes through here: one frozen `ExportOptions` (the command line builds it in
`tritonkit/cli/export.py`), input/output renames, parity tolerances, `--sample`
files, the next version folder, and the ModelConfig written as config.pbtxt.
"""

from __future__ import annotations

import re
import shutil
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from tritonkit.errors import ExportError, UsageError
from tritonkit.export import profiles
from tritonkit.export.repository import new_version

if TYPE_CHECKING:  # numpy and the model config (protobuf, tritonclient) load when an export runs, not for --help
    import numpy as np

    from tritonkit.model_config import ModelConfig, ModelWarmup, QueuePolicy, TensorSpec

FORMATS = ("onnx", "tensorrt", "fil", "torchscript")
TIMEOUT_ACTIONS = ("reject", "delay")
KINDS = ("KIND_CPU", "KIND_GPU", "KIND_AUTO")
TABULAR_MAX_BATCH_SIZE = 4096  # rows are small: let the batcher build large batches
TENSOR_MAX_BATCH_SIZE = 64  # images, sequences: a batch of 4096 would not fit a GPU
DEFAULT_MAX_QUEUE_DELAY_US = 0  # as churn: queued requests batch anyway; a lone caller waits for nothing
TRT_WORKSPACE_BYTES = 1 << 30
TRT_CACHE_PATH = "/tmp/tritonkit-trt-cache"
SAMPLE_SUFFIXES = (".csv", ".parquet", ".pq", ".npz")
TENSORRT_HELP = (
    "onnx; tensorrt: the same ONNX file with ONNX Runtime's TensorRT execution accelerator in "
    "config.pbtxt (KIND_GPU; NVIDIA's onnxruntime backend builds the TensorRT engine on the GPU at load; "
    "no standalone .plan is built: the tensorrt package needs an NVIDIA GPU and is not installed here); "
    "fil (xgboost and lightgbm only): the model file and config for Triton's FIL backend (KIND_AUTO: GPU "
    "where there is one; nthread = --intra-op-threads; the embedded server serves it with the library's own "
    "predict on CPU; a Pipeline becomes an ensemble NAME: NAME_preprocess (ONNX) -> NAME_trees (FIL) -> "
    "NAME_postprocess (label)); "
    'torchscript (torch only): <version>/model.pt with backend "pytorch" (NVIDIA\'s LibTorch backend, or '
    "the kit's Python-based one in `tritonkit serve`), on --kind KIND_GPU or KIND_CPU."
)

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-]*")
_ONNX_TO_TRITON = {
    1: "FP32",
    2: "UINT8",
    3: "INT8",
    4: "UINT16",
    5: "INT16",
    6: "INT32",
    7: "INT64",
    8: "BYTES",
    9: "BOOL",
    10: "FP16",
    11: "FP64",
    12: "UINT32",
    13: "UINT64",
    16: "BF16",
}


@dataclass(frozen=True)
class ExportOptions:
    """The options every export source takes; validated on construction (UsageError names the flag)."""

    repository: Path
    name: str
    version: int | None = None
    replace: bool = False
    format: str = "onnx"
    fp16: bool = False
    opset: int | None = None
    max_batch_size: int | None = None
    dynamic_batching: bool = True
    max_queue_delay_us: int = DEFAULT_MAX_QUEUE_DELAY_US
    preferred_batch_sizes: tuple[int, ...] = ()
    max_queue_size: int = 0
    queue_timeout_us: int = 0
    timeout_action: str = "reject"
    instances: int | None = None
    kind: str | None = None
    intra_op_threads: int | None = None  # None: the profile's
    warmup_batch_size: int = 0
    response_cache: bool = False
    input_names: tuple[str, ...] = ()
    output_names: tuple[str, ...] = ()
    atol: float | None = None
    rtol: float | None = None
    sample: Path | None = None
    profile: str = "realtime"  # the job's starting config (export/profiles.py): realtime or bulk

    def __post_init__(self):
        object.__setattr__(self, "repository", Path(self.repository))
        for key in ("preferred_batch_sizes", "input_names", "output_names"):
            object.__setattr__(self, key, tuple(getattr(self, key) or ()))
        if not self.name or "/" in self.name or self.name.startswith("."):
            raise UsageError(f"--name is {self.name!r}; expected a model folder name (no '/', not hidden)")
        profiles.check(self.profile)
        if self.format not in FORMATS:
            raise UsageError(f"--format is {self.format!r}; expected one of {', '.join(FORMATS)}")
        if self.kind is not None and self.kind not in KINDS:
            raise UsageError(f"--kind is {self.kind!r}; expected one of {', '.join(KINDS)}")
        if self.format == "torchscript" and self.opset is not None:
            raise UsageError("--opset sets the ONNX opset; drop it with --format torchscript")
        if self.format == "tensorrt" and self.kind == "KIND_CPU":
            raise UsageError("--format tensorrt runs on NVIDIA GPUs only; drop --kind KIND_CPU (it implies KIND_GPU)")
        for flag, value, minimum in (
            ("--version", self.version, 1),
            ("--max-batch-size", self.max_batch_size, 1),
            ("--instances", self.instances, 1),
            ("--opset", self.opset, 7),
        ):
            if value is not None and value < minimum:
                raise UsageError(f"{flag} is {value}; expected {minimum} or more")
        object.__setattr__(self, "timeout_action", str(self.timeout_action).lower())
        if self.timeout_action not in TIMEOUT_ACTIONS:
            raise UsageError(
                f"--timeout-action is {self.timeout_action!r}; expected one of {', '.join(TIMEOUT_ACTIONS)}"
            )
        if self.queue_policy is not None and not self.dynamic_batching:
            raise UsageError(
                "--max-queue-size, --queue-timeout-us and --timeout-action bound the dynamic batcher's "
                "queue; drop --no-dynamic-batching"
            )
        for flag, value in (
            ("--max-queue-delay-us", self.max_queue_delay_us),
            ("--max-queue-size", self.max_queue_size),
            ("--queue-timeout-us", self.queue_timeout_us),
            ("--intra-op-threads", self.intra_op_threads),
            ("--warmup-batch-size", self.warmup_batch_size),
            ("--atol", self.atol),
            ("--rtol", self.rtol),
        ):
            if value is not None and value < 0:
                raise UsageError(f"{flag} is {value}; expected 0 or more")
        if any(size < 1 for size in self.preferred_batch_sizes):
            raise UsageError(f"--preferred-batch-size {list(self.preferred_batch_sizes)}; each must be 1 or more")
        if self.preferred_batch_sizes and not self.dynamic_batching:
            raise UsageError("--preferred-batch-size needs dynamic batching; drop --no-dynamic-batching")
        if self.sample is not None:
            sample = Path(self.sample)
            object.__setattr__(self, "sample", sample)
            if not sample.is_file():
                raise UsageError(f"--sample {sample} does not exist")
            if sample.suffix.lower() not in SAMPLE_SUFFIXES:
                raise UsageError(f"--sample {sample}: expected a {', '.join(SAMPLE_SUFFIXES)} file")

    @property
    def model_dir(self) -> Path:
        return self.repository / self.name

    @property
    def queue_policy(self) -> QueuePolicy | None:
        """The batcher's default queue policy: None (Triton's unbounded queue) unless a queue option is set."""
        from tritonkit.model_config import QueuePolicy

        if not self.max_queue_size and not self.queue_timeout_us and self.timeout_action == "reject":
            return None
        return QueuePolicy(
            timeout_action=self.timeout_action.upper(),
            default_timeout_us=self.queue_timeout_us,
            max_queue_size=self.max_queue_size,
        )

    @property
    def instance_kind(self) -> str:
        """KIND_GPU for TensorRT, KIND_AUTO for FIL, otherwise what --kind says (KIND_CPU by default)."""
        return self.kind or {"tensorrt": "KIND_GPU", "fil": "KIND_AUTO"}.get(self.format, "KIND_CPU")

    @property
    def fp16_graph(self) -> bool:
        """Whether the exported graph itself computes in FP16 (TensorRT takes FP32 ONNX and builds FP16 itself)."""
        return self.fp16 and self.format in ("onnx", "torchscript")

    def tolerance(self, expected: np.ndarray, atol: float, rtol: float) -> tuple[float, float]:
        """(atol, rtol) for one output: --atol/--rtol as given, else the defaults, atol scaled to the output.

        The default atol is relative to the output's largest magnitude (1 for probabilities), so that a
        regression target in the thousands is held to the same float32 precision as one in [0, 1].
        """
        import numpy as np

        if self.atol is None:
            values = np.asarray(expected)
            peak = float(np.abs(values).max(initial=0.0)) if values.dtype.kind in "fiu" else 0.0
            atol = atol * max(1.0, peak)
        return (self.atol if self.atol is not None else atol), (self.rtol if self.rtol is not None else rtol)

    def model_config(
        self,
        inputs: list[TensorSpec],
        outputs: list[TensorSpec],
        *,
        default_max_batch_size: int,
        parameters: dict[str, str] | None = None,
    ) -> ModelConfig:
        """The config.pbtxt for this export: batching, instances and accelerator from the options."""
        from tritonkit.model_config import DynamicBatching, InstanceGroup, ModelConfig

        kind = self.instance_kind
        point = profiles.starting_point(self.profile, default_max_batch_size >= TABULAR_MAX_BATCH_SIZE, kind)
        max_batch = self.max_batch_size or point.max_batch_size or default_max_batch_size
        too_large = [size for size in self.preferred_batch_sizes if size > max_batch]
        if too_large:
            raise UsageError(f"--preferred-batch-size {too_large} exceeds max_batch_size {max_batch}")
        batching = DynamicBatching(
            max_queue_delay_us=self.max_queue_delay_us,
            preferred_batch_sizes=tuple(sorted(set(self.preferred_batch_sizes))),
            default_queue_policy=self.queue_policy,
        )
        torchscript = self.format == "torchscript"  # the LibTorch backend's parameter names
        names = (
            ("INTRA_OP_THREAD_COUNT", "INTER_OP_THREAD_COUNT")
            if torchscript
            else ("intra_op_thread_count", "inter_op_thread_count")
        )
        threads = point.threads if self.intra_op_threads is None else self.intra_op_threads
        return ModelConfig(
            name=self.name,
            backend="pytorch" if torchscript else "onnxruntime",
            max_batch_size=max_batch,
            inputs=inputs,
            outputs=outputs,
            dynamic_batching=batching if self.dynamic_batching else None,
            instance_groups=[InstanceGroup(count=self.instances or point.instances, kind=kind)],
            parameters={names[0]: str(threads), names[1]: "1", **(parameters or {})},
            model_warmup=self._warmup(inputs, max_batch),
            response_cache=self.response_cache,
            gpu_execution_accelerator=self._tensorrt(inputs, max_batch),
        )

    def _warmup(self, inputs: list[TensorSpec], max_batch: int) -> list[ModelWarmup]:
        from tritonkit.model_config import ModelWarmup

        if not self.warmup_batch_size:
            return []
        if self.warmup_batch_size > max_batch:
            raise UsageError(f"--warmup-batch-size {self.warmup_batch_size} exceeds max_batch_size {max_batch}")
        variable = [spec.name for spec in inputs if -1 in spec.dims]
        if variable:
            raise UsageError(
                f"--warmup-batch-size needs fixed input shapes; {', '.join(variable)} has a variable dimension"
            )
        data = {
            spec.name: (spec.dtype, spec.dims, "random" if spec.dtype.startswith("FP") else "zero") for spec in inputs
        }
        return [ModelWarmup(name=f"batch_{self.warmup_batch_size}", batch_size=self.warmup_batch_size, inputs=data)]

    def _tensorrt(self, inputs: list[TensorSpec], max_batch: int) -> dict | None:
        if self.format != "tensorrt":
            return None
        parameters = {
            "precision_mode": "FP16" if self.fp16 else "FP32",
            "max_workspace_size_bytes": str(TRT_WORKSPACE_BYTES),
            "trt_engine_cache_enable": "1",
            "trt_engine_cache_path": f"{TRT_CACHE_PATH}/{self.name}",
        }
        shapes = {spec.name: spec.dims if spec.reshape is None else spec.reshape for spec in inputs}  # ONNX's
        if all(-1 not in dims for dims in shapes.values()):  # one optimization profile: batch 1..max_batch_size
            optimal = max(self.preferred_batch_sizes, default=max_batch)
            for key, batch in (("min", 1), ("opt", optimal), ("max", max_batch)):
                parameters[f"trt_profile_{key}_shapes"] = ",".join(
                    f"{name}:" + "x".join(map(str, (batch, *dims))) for name, dims in shapes.items()
                )
        return {"name": "tensorrt", "parameters": parameters}


@dataclass(frozen=True)
class ExportResult:
    """What an export wrote and the parity it was checked with."""

    path: Path
    version: int
    config: ModelConfig
    parity: list = field(default_factory=list)
    checked: str = ""  # which rows parity ran on, for people: "2000 random rows + 100 rows of x.csv"
    parts: tuple[str, ...] = ()  # an ensemble's composing models, written beside it (e.g. NAME_preprocess)


def rename(defaults: list[str], overrides: tuple[str, ...], flag: str) -> list[str]:
    """Apply --input-name/--output-name: all `OLD=NEW` (rename some) or all plain names (one per tensor, in order)."""
    if not overrides:
        return list(defaults)
    pairs = [o.partition("=") for o in overrides]
    if all(sep for _, sep, _ in pairs):
        mapping = {old.strip(): new.strip() for old, _, new in pairs}
        unknown = sorted(set(mapping) - set(defaults))
        if unknown:
            raise UsageError(
                f"{flag} renames {', '.join(unknown)}, which the model does not have; "
                f"its names are {', '.join(defaults)}"
            )
        names = [mapping.get(name, name) for name in defaults]
    elif not any(sep for _, sep, _ in pairs):
        if len(overrides) != len(defaults):
            raise UsageError(
                f"{flag} gives {len(overrides)} names for {len(defaults)} tensors "
                f"({', '.join(defaults)}); give one per tensor in that order, or OLD=NEW pairs"
            )
        names = [o.strip() for o in overrides]
    else:
        raise UsageError(f"{flag}: use either OLD=NEW pairs or plain names, not both ({', '.join(overrides)})")
    if not all(_NAME.fullmatch(n) for n in names) or len(set(names)) != len(names):
        raise UsageError(
            f"{flag} gives {names}; names must be unique, start with a letter or '_' "
            "and hold only letters, digits, '_', '-', '.'"
        )
    return names


def specs_from_onnx(path: Path) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """Triton inputs and outputs of an ONNX graph whose first dimension is the batch (dims without it).

    A tensor that is only a batch dimension ([N]) is served as dims [1] reshaped to [], Triton's way.
    """
    import onnx

    from tritonkit.model_config import TensorSpec

    graph = onnx.load(str(path), load_external_data=False).graph
    initializers = {i.name for i in graph.initializer}

    def spec(value) -> TensorSpec:
        tensor = value.type.tensor_type
        if tensor.elem_type not in _ONNX_TO_TRITON:
            raise ExportError(
                f"tensor `{value.name}` has ONNX element type {tensor.elem_type}, which Triton cannot carry"
            )
        dims = tuple(d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else -1 for d in tensor.shape.dim)[1:]
        if not dims:
            return TensorSpec(value.name, _ONNX_TO_TRITON[tensor.elem_type], (1,), reshape=())
        return TensorSpec(value.name, _ONNX_TO_TRITON[tensor.elem_type], dims)

    inputs = [spec(v) for v in graph.input if v.name not in initializers]
    return inputs, [spec(v) for v in graph.output]


def check_dynamic_batch(path: Path) -> None:
    """Raise ExportError unless every input and output of the ONNX graph has a variable first dimension."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    for value in [*graph.input, *graph.output]:
        dims = value.type.tensor_type.shape.dim
        if dims and dims[0].HasField("dim_value"):
            raise ExportError(
                f"the exported graph fixes the batch dimension of `{value.name}` to {dims[0].dim_value}; "
                "Triton's dynamic batching needs it variable"
            )


def read_sample(path: Path):
    """The rows of a --sample file: a pandas DataFrame (CSV, Parquet) or a dict of arrays (.npz)."""
    import numpy as np
    import pandas as pd

    suffix = path.suffix.lower()
    try:
        if suffix == ".npz":
            with np.load(path, allow_pickle=False) as arrays:
                return {name: arrays[name] for name in arrays.files}
        return pd.read_parquet(path) if suffix in (".parquet", ".pq") else pd.read_csv(path)
    except (OSError, ValueError) as e:
        raise UsageError(f"--sample {path} could not be read: {e}") from e


@contextmanager
def versioned(options: ExportOptions):
    """Yield (version, scratch folder); as `repository.new_version`, and a model folder this export created
    is removed again when it fails, so a failed first export leaves no empty model behind."""
    created = not options.model_dir.exists()
    try:
        with new_version(options.model_dir, options.version, replace=options.replace) as (number, scratch):
            yield number, scratch
            _readable(scratch, options.model_dir / "config.pbtxt")
    except BaseException:
        if created and options.model_dir.is_dir() and not any(options.model_dir.iterdir()):
            shutil.rmtree(options.model_dir, ignore_errors=True)
        raise


def _readable(*paths: Path) -> None:
    """Give files and folders the umask's usual modes: mkdtemp/mkstemp make them private (0700/0600),
    which a Triton container running as another user cannot read."""
    status = Path("/proc/self/status")
    lines = status.read_text().splitlines() if status.exists() else []
    umask = next((int(line.split()[1], 8) for line in lines if line.startswith("Umask:")), 0o022)
    for path in paths:
        for item in [path, *(path.rglob("*") if path.is_dir() else [])]:
            if item.exists():
                item.chmod((0o777 if item.is_dir() else 0o666) & ~umask)
