"""What `tritonkit tune` tries: candidate configs for real time and for bulk, and how one becomes a ModelConfig.

A candidate is the part of a model's config the sweep changes (instance count, onnxruntime threads per
instance, dynamic batching's queue delay and preferred batch sizes, max_batch_size) and, for bulk, the
requests `score` keeps in flight. Everything else (inputs, outputs, backend, queue policy, warmup) is
the starting config's.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from itertools import product

from tritonkit.model_config import DynamicBatching, InstanceGroup, ModelConfig

PROFILES = ("realtime", "bulk")
THREADS = "intra_op_thread_count"


@dataclass(frozen=True)
class Candidate:
    """One point of the sweep; `in_flight` is the client's (bulk: score --concurrency), not the server's."""

    instances: int
    threads: int
    max_queue_delay_us: int = 0
    preferred_batch_sizes: tuple[int, ...] = ()
    max_batch_size: int | None = None  # None: the starting config's
    in_flight: int | None = None

    @property
    def label(self) -> str:
        parts = [f"{self.instances}x{self.threads}t" if self.threads else f"{self.instances}x(all cores)"]
        if self.max_batch_size:
            parts.append(f"mbs {self.max_batch_size}")
        if self.max_queue_delay_us:
            parts.append(f"delay {self.max_queue_delay_us}us")
        if self.preferred_batch_sizes:
            parts.append("pref " + "/".join(map(str, self.preferred_batch_sizes)))
        if self.in_flight:
            parts.append(f"{self.in_flight} in flight")
        return ", ".join(parts)

    @property
    def server_key(self) -> tuple:
        """What the server config depends on (bulk candidates differing only in `in_flight` share a load)."""
        return (self.instances, self.threads, self.max_queue_delay_us, self.preferred_batch_sizes, self.max_batch_size)

    def to_dict(self) -> dict:
        return {
            "instances": self.instances,
            "threads": self.threads,
            "max_queue_delay_us": self.max_queue_delay_us,
            "preferred_batch_sizes": list(self.preferred_batch_sizes),
            "max_batch_size": self.max_batch_size,
            "in_flight": self.in_flight,
            "label": self.label,
        }


def describe(config: ModelConfig, in_flight: int | None = None) -> Candidate:
    """The candidate a config already is (the starting point of a sweep)."""
    groups = config.instance_groups or (InstanceGroup(count=1),)
    batching = config.dynamic_batching or DynamicBatching()
    threads = int(config.parameters.get(THREADS, "0") or 0)
    return Candidate(
        instances=sum(g.count for g in groups),
        threads=threads,
        max_queue_delay_us=batching.max_queue_delay_us,
        preferred_batch_sizes=tuple(batching.preferred_batch_sizes),
        max_batch_size=config.max_batch_size,
        in_flight=in_flight,
    )


def apply(candidate: Candidate, config: ModelConfig, name: str | None = None) -> ModelConfig:
    """`config` with the candidate's instances, threads, batching and max_batch_size (and `name`, if given)."""
    max_batch = candidate.max_batch_size or config.max_batch_size
    batching = config.dynamic_batching
    if batching is not None or candidate.max_queue_delay_us or candidate.preferred_batch_sizes:
        preferred = tuple(size for size in candidate.preferred_batch_sizes if size <= max_batch)
        batching = replace(
            batching or DynamicBatching(),
            max_queue_delay_us=candidate.max_queue_delay_us,
            preferred_batch_sizes=preferred,
        )
    kind = config.instance_groups[0].kind if config.instance_groups else "KIND_CPU"
    warmup = tuple(w for w in config.model_warmup if w.batch_size <= max_batch)
    return replace(
        config,
        name=name or config.name,
        max_batch_size=max_batch,
        dynamic_batching=batching,
        instance_groups=(InstanceGroup(count=candidate.instances, kind=kind),),
        parameters={**config.parameters, THREADS: str(candidate.threads), "inter_op_thread_count": "1"},
        model_warmup=warmup,
    )


def _cores() -> int:
    return os.cpu_count() or 1


def realtime_grid(quick: bool, cores: int | None = None) -> list[Candidate]:
    """instances x threads x queue delay x preferred batch sizes. Threads above one only for a single
    instance (several instances of several threads each oversubscribe the cores), and preferred batch
    sizes only with a queue delay (without one, requests do not wait for a batch to fill)."""
    cores = cores or _cores()
    instances = sorted({1, 2} if quick else {1, 2, cores, 2 * cores})
    threads = sorted({1, cores})
    delays = (0, 200) if quick else (0, 100, 500)
    preferred = ((),) if quick else ((), (4, 8))
    return [
        Candidate(i, t, d, p)
        for i, t, d, p in product(instances, threads, delays, preferred)
        if (t == 1 or i == 1) and not (p and not d)
    ]


def bulk_grid(quick: bool, tabular: bool, cores: int | None = None) -> list[Candidate]:
    """instances x threads x max_batch_size (= rows per request) x requests in flight."""
    cores = cores or _cores()
    sizes = ((4096, 65536) if quick else (4096, 16384, 65536)) if tabular else ((32, 64) if quick else (16, 64, 128))
    in_flight = (4,) if quick else (2, 4, 8)
    return [
        Candidate(i, t, 0, (), size, f)
        for i, t, size, f in product(sorted({1, 2}), sorted({1, cores}), sizes, in_flight)
        if i * t <= 2 * cores
    ]
