"""How `tritonkit tune` measures one candidate config: load it, then perf_analyzer (real time) or score (bulk).

The sweep works on a scratch copy of the model's folders (an ensemble's members included), served by
the embedded Triton in explicit model control: each candidate is written there as config.pbtxt with
the typed ModelConfig and loaded with `TritonClient.load_model` (the admin key opens the repository
API), so the user's repository is only touched once, by the winner. Reloading in place was chosen by
measurement over restarting the server per config: see the README's "Tuning" section.
"""

from __future__ import annotations

import logging
import secrets
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tritonkit import pbtxt
from tritonkit.errors import UsageError
from tritonkit.model_config import ModelConfig

logger = logging.getLogger(__name__)

PROBE_ROWS = {"tabular": 50_000, "text": 256}
MAX_ROWS = 1_000_000
PLATEAU = 1.05  # a concurrency level must add 5 % throughput for the next one to be tried


@dataclass(frozen=True)
class Target:
    """The model a sweep sends to (`served`: an ensemble or the model) and the one whose config it changes."""

    served: str
    tuned: str
    members: tuple[str, ...]  # every model folder the served model needs, itself included

    @classmethod
    def find(cls, repository: Path, model: str) -> Target:
        """`model` itself, or for an ensemble its heaviest onnxruntime member (by ONNX file size)."""
        if not (repository / model).is_dir():
            raise UsageError(f"--model {model}: no folder {repository / model} in the repository")
        message = pbtxt.parse(pbtxt.read_text(repository / model)[1])
        if message.platform != "ensemble":
            return cls(model, model, (model,))
        members = tuple(dict.fromkeys(step.model_name for step in message.ensemble_scheduling.step))
        onnx = {m: sum(p.stat().st_size for p in (repository / m).glob("*/model.onnx")) for m in members}
        return cls(model, max(onnx, key=onnx.get), (model, *members))


def copy_model(source: Path, target: Path) -> None:
    """The model folder `source` as `target` (versions hard-linked where the file system allows)."""
    if target.exists():
        shutil.rmtree(target)

    def link(src: str, dst: str) -> None:
        try:
            Path(dst).hardlink_to(src)
        except OSError:
            shutil.copy2(src, dst)

    shutil.copytree(source, target, copy_function=link)


class Trials:
    """A scratch repository with the target's folders, served in explicit model control; `load` a candidate."""

    def __init__(self, repository: Path, target: Target, workdir: Path):
        from tritonkit.clients.endpoint import Endpoint
        from tritonkit.clients.realtime import TritonClient
        from tritonkit.server import EmbeddedServer

        self.target = target
        self.scratch = workdir / "repository"
        self.scratch.mkdir(parents=True)
        for name in target.members:
            copy_model(repository / name, self.scratch / name)
        self.server = EmbeddedServer(
            self.scratch,
            http_port=0,
            grpc_port=0,
            metrics_port=0,
            model_control_mode="explicit",
            admin_key=secrets.token_urlsafe(32),
            log_file=workdir / "triton.log",
        ).start()
        admin = Endpoint(self.server.grpc_url, headers=self.server.admin_headers("grpc"), timeout_s=300)
        self.client = TritonClient(admin)
        self.load_s: list[float] = []

    @property
    def url(self) -> str:
        return self.server.grpc_url

    def load(self, config: ModelConfig) -> float:
        """Writes `config` for the tuned model and (re)loads it and the served model; returns the seconds it took."""
        start = time.perf_counter()
        config.write(self.scratch / self.target.tuned)
        self.client.load_model(self.target.tuned)
        if self.target.served != self.target.tuned:
            self.client.load_model(self.target.served)
        self.load_s.append(time.perf_counter() - start)
        return self.load_s[-1]

    def restart_s(self) -> float:
        """Seconds a server restart with the target loaded takes (compared with `load` in the report)."""
        start = time.perf_counter()
        self.server.stop()
        self.server.start()
        self.client.load_model(self.target.served)
        return time.perf_counter() - start

    def close(self) -> None:
        self.client.close()
        self.server.stop()

    def __enter__(self) -> Trials:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# ---------------------------------------------------------------- real time: perf_analyzer, rising concurrency


def realtime_point(binary: str, url: str, model: str, input_data: Path, folder: Path, settings: dict) -> dict:
    """perf_analyzer at rising concurrency (single-row requests) until p99 passes the budget; the best within it."""
    from tritonkit.benchmarks import perf_analyzer

    budget = settings["budget_ms"]
    points = []
    for concurrency in settings["levels"]:
        point = perf_analyzer.measure(
            binary,
            url,
            model,
            input_data,
            folder / f"c{concurrency}.csv",
            concurrency=concurrency,
            window_ms=settings["window_ms"],
            stability=settings["stability"],
            max_trials=settings["max_trials"],
        )
        if "error" in point:
            return {"throughput": 0.0, "p99_ms": None, "points": points, "error": point["error"]}
        points.append({k: point[k] for k in ("concurrency", "infer_per_s", "p50_ms", "p99_ms", "stable")})
        if point["p99_ms"] > budget:
            break  # past the budget: more concurrency only queues longer
        if len(points) > 1 and point["infer_per_s"] < PLATEAU * points[-2]["infer_per_s"]:
            break  # throughput has stopped growing with concurrency
    within = [p for p in points if p["p99_ms"] <= budget]
    best = max(within, key=lambda p: p["infer_per_s"]) if within else None
    return {
        "throughput": best["infer_per_s"] if best else 0.0,
        "p99_ms": best["p99_ms"] if best else min(p["p99_ms"] for p in points),
        "concurrency": best["concurrency"] if best else None,
        "points": points,
    }


# ---------------------------------------------------------------- bulk: tritonkit score end to end


def bulk_frame(meta, rows: int, seed: int = 0):
    """`rows` rows for `meta`'s inputs: a column per scalar input, a list column per vector, text for BYTES."""
    import pandas as pd
    import pyarrow as pa

    from tritonkit.benchmarks.bulk import sentences

    rng = np.random.default_rng(seed)
    columns = {}
    for tensor in meta.inputs:
        inner = tensor.shape[1:] if meta.batching else tensor.shape
        if tensor.datatype == "BYTES" and list(inner) == [1]:
            columns[tensor.name] = sentences(rows, seed)
        elif len(inner) == 1 and inner[0] == 1:
            columns[tensor.name] = rng.standard_normal(rows).astype(tensor.numpy_dtype)
        elif len(inner) == 1 and inner[0] > 1 and tensor.datatype != "BYTES":
            values = rng.standard_normal((rows, inner[0])).astype(tensor.numpy_dtype)
            columns[tensor.name] = pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1)), inner[0])
        else:
            raise UsageError(
                f"input `{tensor.name}` of `{meta.name}` has shape {list(inner)} ({tensor.datatype}): tune cannot "
                "make rows for it; give --data FILE with real rows"
            )
    return pa.table(columns) if any(isinstance(c, pa.Array) for c in columns.values()) else pd.DataFrame(columns)


def write_bulk_data(meta, rows: int, path: Path) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    frame = bulk_frame(meta, rows)
    pq.write_table(frame if isinstance(frame, pa.Table) else pa.Table.from_pandas(frame, preserve_index=False), path)
    return path


def bulk_point(url: str, model: str, data: Path, candidate, workdir: Path, maps: list[str]) -> dict:
    """One `score` run of `data` with the candidate's request size and requests in flight; rows/s end to end."""
    from tritonkit.clients.score import ScoreOptions, score

    output = workdir / f"scored-{secrets.token_hex(4)}.parquet"
    try:
        report = score(
            ScoreOptions(
                model=model,
                input=data,
                output=output,
                endpoint=url,
                concurrency=candidate.in_flight or 4,
                batch_size=candidate.max_batch_size,
                maps=maps,
            )
        )
    finally:
        for leftover in workdir.glob(output.name + "*"):
            shutil.rmtree(leftover) if leftover.is_dir() else leftover.unlink()
    return {
        "throughput": report.rows_per_s,
        "p99_ms": report.latency_ms.get("p99"),
        "rows": report.rows_scored,
        "rejected": report.rows_rejected,
        "requests": report.requests,
        "wall_s": report.wall_s,
    }
