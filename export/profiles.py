"""`--profile realtime|bulk`: the starting config an export writes for the job the model will do.

The rules (what `tritonkit tune` found on this kind of machine, as defaults a user gets without tuning;
any explicit --instances / --intra-op-threads / --max-batch-size wins over them):

| profile  | model cost per row                  | instances        | onnxruntime threads each | max_batch_size |
|----------|-------------------------------------|------------------|--------------------------|----------------|
| realtime | light (rows of features)            | min(cores, 2)    | 1                        | 4,096          |
| realtime | heavy (tensors, text: a transformer)| min(cores, 2)    | 1                        | 64             |
| bulk     | light                               | 1                | every core (0)           | 65,536         |
| bulk     | heavy                               | 1                | every core (0)           | 64             |

Real time wants several requests served at once, each on one thread, and no queue delay; bulk wants one
instance whose onnxruntime uses every core on requests as large as the client sends (`score` sends
max_batch_size rows per request). "Light" is what the source declares as rows of features (its default
max_batch_size is the tabular one); everything else is heavy. Cores are counted where the export runs
(`0` threads means onnxruntime's own default: one per core where the server runs). On KIND_GPU, one
instance per GPU in both profiles.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from tritonkit.errors import UsageError

if TYPE_CHECKING:  # the model config (protobuf, tritonclient) loads when a profile is applied, not for --help
    from tritonkit.model_config import ModelConfig

PROFILES = ("realtime", "bulk")
REALTIME_MAX_INSTANCES = 2  # more single-threaded instances than this: let `tritonkit tune` measure it
BULK_TABULAR_MAX_BATCH_SIZE = 65_536
ALL_CORES = 0  # intra_op_thread_count 0: onnxruntime picks one thread per core


@dataclass(frozen=True)
class StartingPoint:
    """What a profile sets; None leaves the source's default."""

    instances: int
    threads: int
    max_batch_size: int | None


def check(profile: str) -> str:
    if profile not in PROFILES:
        raise UsageError(f"--profile is {profile!r}; expected one of {', '.join(PROFILES)}")
    return profile


def starting_point(profile: str, light: bool, kind: str = "KIND_CPU", cores: int | None = None) -> StartingPoint:
    """The profile's instances, threads per instance and max_batch_size for a light or heavy model."""
    check(profile)
    cores = cores or os.cpu_count() or 1
    if kind == "KIND_GPU":
        return StartingPoint(1, 1, BULK_TABULAR_MAX_BATCH_SIZE if profile == "bulk" and light else None)
    if profile == "realtime":
        return StartingPoint(min(cores, REALTIME_MAX_INSTANCES), 1, None)
    return StartingPoint(1, ALL_CORES, BULK_TABULAR_MAX_BATCH_SIZE if light else None)


def apply_profile(config: ModelConfig, profile: str, light: bool) -> ModelConfig:
    """`config` with the profile's instances, threads and max_batch_size (for sources that write their own
    config: churn, hf, minilm). Warmups larger than the new max_batch_size are dropped."""
    from tritonkit.model_config import InstanceGroup

    kind = config.instance_groups[0].kind if config.instance_groups else "KIND_CPU"
    point = starting_point(profile, light, kind)
    max_batch = point.max_batch_size or config.max_batch_size
    return replace(
        config,
        max_batch_size=max_batch,
        instance_groups=(InstanceGroup(count=point.instances, kind=kind),),
        parameters={**config.parameters, "intra_op_thread_count": str(point.threads), "inter_op_thread_count": "1"},
        model_warmup=tuple(w for w in config.model_warmup if w.batch_size <= max_batch),
    )


def write_profile(model_dir, profile: str, light: bool) -> ModelConfig:
    """Rewrites `model_dir`'s config.pbtxt for the profile; returns the config written."""
    from tritonkit.model_config import ModelConfig

    config = apply_profile(ModelConfig.read(model_dir), profile, light)
    config.write(model_dir)
    return config
