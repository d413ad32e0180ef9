"""What `tritonkit bench` serves and compares for each example model: churn (tabular MLP) and minilm (text).

A workload knows how to export its model into a bench repository together with a `_nobatch` twin
(the same files, no `dynamic_batching`), how to build the in-process onnxruntime reference on the
same inputs Triton gets, and which rows the offline scenario scores. This module never imports
Locust: the offline worker, which must stay free of gevent, uses it too.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

from tritonkit.model_config import ModelConfig

NOBATCH_SUFFIX = "_nobatch"
TEXT_WORDS = [
    "the",
    "quick",
    "brown",
    "fox",
    "jumps",
    "over",
    "a",
    "lazy",
    "dog",
    "while",
    "customers",
    "churn",
    "or",
    "stay",
]
WORDS_PER_TEXT = 6


def random_texts(shape: int | tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """UTF-8 texts of WORDS_PER_TEXT random words: what the Locust users, perf_analyzer and the reference send."""
    shape = (shape,) if isinstance(shape, int) else tuple(shape)
    words = rng.choice(TEXT_WORDS, size=(*shape, WORDS_PER_TEXT))
    return np.vectorize(str.encode, otypes=[object])(np.apply_along_axis(" ".join, -1, words))


def _export(kind: str, repository: Path, name: str) -> None:
    # The export runs torch.export, whose inductor imports redis (and ssl) when installed: in the bench
    # process that would follow Locust's gevent patching and hang gRPC users. A child process does it.
    subprocess.run(
        [sys.executable, "-m", "tritonkit.cli", "export", kind, "--repository", str(repository), "--name", name],
        check=True,
        stdout=subprocess.DEVNULL,
    )


def nobatch_twin(source: Path, target: Path, config: ModelConfig) -> None:
    """Copies the version folders of model folder `source` to `target`, with `config` renamed and without
    dynamic batching: the same model, one request per execution."""
    for version in (p for p in source.iterdir() if p.is_dir()):
        shutil.copytree(version, target / version.name)
    replace(config, name=target.name, dynamic_batching=None).write(target / "config.pbtxt")


def _latency(call, items: list, requests: int) -> dict[str, float]:
    """benchmarks.realtime's sequential latency, plus the rows/s one caller gets from it."""
    from tritonkit.benchmarks.realtime import _latency as sequential

    result = sequential(call, items, requests)
    return {**result, "rows_per_s": 1000.0 / result["mean_ms"]}


def _rows_per_s(call, batches: list, rows: int, seconds: float) -> float:
    import time

    call(batches[0])
    done, start = 0, time.perf_counter()
    while True:
        for batch in batches:
            call(batch)
            done += rows
        if time.perf_counter() - start >= seconds:
            return done / (time.perf_counter() - start)


class Churn:
    """The tabular churn MLP: five FP32 [1] inputs; offline rows are synthetic customers."""

    name = "churn"
    id_column = "customer_id"
    offline_rows = (100_000, 1_000_000)  # quick, full
    micro_batch_rows = 64
    rates = (50.0, 1600.0, 25600.0)  # the server sweep: first rate, last rate quick, last rate full

    def prepare(self, repository: Path, name: str) -> Path:
        """Exports churn as `name` and `name_nobatch`; returns the ONNX file for the reference."""
        _export("churn", repository, name)
        nobatch_twin(repository / name, repository / f"{name}{NOBATCH_SUFFIX}", ModelConfig.read(repository / name))
        return repository / name / "1" / "model.onnx"

    def offline_frame(self, rows: int, seed: int = 9):
        """`rows` synthetic customers (id and the five features) as a DataFrame."""
        from tritonkit.export.churn import synthetic_customers

        return synthetic_customers(rows, seed=seed).drop(columns=["churned"])

    def reference(self, onnx: Path, micro_batch_rows: int, seconds: float, offline_rows: int) -> dict:
        """In-process onnxruntime on the same ONNX: single-row latency, micro-batch and bulk throughput."""
        import onnxruntime as ort

        from tritonkit.benchmarks.bulk import reference_rows_per_s
        from tritonkit.export.churn import FEATURES, synthetic_customers

        session = ort.InferenceSession(str(onnx))
        frame = synthetic_customers(max(offline_rows, 1000), seed=3)
        columns = {f: frame[[f]].to_numpy(np.float32) for f in FEATURES}
        singles = [{f: c[i : i + 1] for f, c in columns.items()} for i in range(1000)]
        batch = {f: c[:micro_batch_rows] for f, c in columns.items()}
        return {
            "single_row": _latency(lambda r: session.run(None, r), singles, max(200, int(seconds * 500))),
            "micro_batch_rows_per_s": _rows_per_s(
                lambda b: session.run(None, b), [batch], micro_batch_rows, min(seconds, 3.0)
            ),
            "bulk_rows_per_s": reference_rows_per_s(onnx, columns, offline_rows, 1),
        }


class Minilm:
    """all-MiniLM-L6-v2 as the ensemble tokenizer (Python backend) -> encoder (ONNX): one BYTES text per row."""

    name = "minilm"
    id_column = "id"
    offline_rows = (1_000, 20_000)  # quick, full: a transformer, not an MLP
    micro_batch_rows = 16
    rates = (5.0, 320.0, 2560.0)

    def prepare(self, repository: Path, name: str) -> Path:
        """Exports `name` (ensemble, tokenizer, encoder) and `name_nobatch` (all three without dynamic batching)."""
        from tritonkit import pbtxt
        from tritonkit.export.hf import ensemble_pbtxt

        _export("minilm", repository, name)
        twin = f"{name}{NOBATCH_SUFFIX}"
        for part in ("tokenizer", "encoder"):
            nobatch_twin(
                repository / f"{name}_{part}",
                repository / f"{twin}_{part}",
                ModelConfig.read(repository / f"{name}_{part}"),
            )
        encoder = ModelConfig.read(repository / f"{name}_encoder")
        (repository / twin / "1").mkdir(parents=True)
        pbtxt.write_text(repository / twin, ensemble_pbtxt(twin, encoder.outputs[0].dims[0], encoder.max_batch_size))
        return repository / f"{name}_encoder" / "1" / "model.onnx"

    def texts(self, rows: int, seed: int) -> list[str]:
        return [t.decode() for t in random_texts(rows, np.random.default_rng(seed))]

    def offline_frame(self, rows: int, seed: int = 9):
        """`rows` random texts with an id column, as a DataFrame."""
        import pandas as pd

        return pd.DataFrame({"id": np.arange(rows, dtype=np.int64), "text": self.texts(rows, seed)})

    def reference(self, onnx: Path, micro_batch_rows: int, seconds: float, offline_rows: int) -> dict:
        """In-process tokenizer (the exported tokenizer.json's settings) + onnxruntime encoder on the same texts."""
        import onnxruntime as ort

        from tritonkit.export.hf import (
            DEFAULT_MAX_BATCH_SIZE,
            DEFAULT_MAX_LENGTH,
            build_tokenizer,
            minilm_dir,
            tokenize,
        )

        tokenizer = build_tokenizer(minilm_dir(), DEFAULT_MAX_LENGTH, None)
        session = ort.InferenceSession(str(onnx), providers=["CPUExecutionProvider"])
        texts = self.texts(max(offline_rows, 1000), seed=3)

        def embed(batch: list[str]):
            return session.run(None, tokenize(tokenizer, batch))

        chunk = DEFAULT_MAX_BATCH_SIZE  # what `tritonkit score` sends per request: the model's max_batch_size
        bulk = [texts[i : i + chunk] for i in range(0, offline_rows, chunk)]
        return {
            "single_row": _latency(embed, [[t] for t in texts[:200]], max(50, int(seconds * 50))),
            "micro_batch_rows_per_s": _rows_per_s(
                embed, [texts[:micro_batch_rows]], micro_batch_rows, min(seconds, 3.0)
            ),
            "bulk_rows_per_s": _bulk(embed, bulk),
        }


def _bulk(embed, batches: list) -> float:
    import time

    embed(batches[0])
    start = time.perf_counter()
    rows = 0
    for batch in batches:
        embed(batch)
        rows += len(batch)
    return rows / (time.perf_counter() - start)


WORKLOADS = {w.name: w for w in (Churn(), Minilm())}


def workload_for(model: str):
    """The workload that knows `model` (its name, or a name starting with it), or None."""
    if model in WORKLOADS:
        return WORKLOADS[model]
    return next((w for name, w in WORKLOADS.items() if model.startswith(name)), None)
