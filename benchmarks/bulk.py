"""Bulk `tritonkit score` end to end against in-process onnxruntime, on the same model and rows, in one run.

    python -m tritonkit.benchmarks.bulk [--rows 400000] [--repeat 3] [--model forest|churn|minilm|all]

forest: the seeds' tabular pipeline (StandardScaler + 100-tree RandomForest, skl2onnx), served as
a bulk deployment: one instance with onnxruntime on both cores, max_batch_size 65,536 (the reference's
slices). Measured side by side here: 2 instances x 1 thread with 4,096-row requests 0.70-0.74x,
1 x 2 threads with 16,384 rows 0.86x, with 65,536 rows 0.89-0.90x. churn: the example MLP. minilm: the
all-MiniLM-L6-v2 ensemble (tokenizer + encoder) on --text-rows sentences of 4 to 40 words; its
reference tokenizes and encodes in this process, in batches of the model's max_batch_size (the
requests `score` sends), since the padding width depends on the batch. The score figure is end to
end after start-up (read Parquet, validate, send, write Parquet); the reference is onnxruntime in
this process with its default threads on the same rows already in memory.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pyarrow as pa

from tritonkit.clients.score import ScoreOptions, score
from tritonkit.export.churn import FEATURES, export_churn, synthetic_customers
from tritonkit.model_config import DynamicBatching, InstanceGroup, ModelConfig, TensorSpec
from tritonkit.server import EmbeddedServer


def export_forest(repository: Path) -> None:
    """StandardScaler + RandomForest(100) on the churn features, one FP32 [5] input `features`."""
    from skl2onnx import to_onnx
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    data = synthetic_customers(20_000, seed=0)
    pipeline = make_pipeline(StandardScaler(), RandomForestClassifier(n_estimators=100, max_depth=10, random_state=0))
    pipeline.fit(data[FEATURES].to_numpy(np.float32), data["churned"])
    onnx = to_onnx(
        pipeline,
        data[FEATURES].to_numpy(np.float32)[:1],
        options={"zipmap": False},
        final_types=None,
        target_opset={"": 17, "ai.onnx.ml": 3},
    )
    for value in list(onnx.graph.input) + list(onnx.graph.output):
        value.type.tensor_type.shape.dim[0].dim_param = "batch"
    onnx.graph.input[0].name = "features"
    for node in onnx.graph.node:
        node.input[:] = ["features" if i == "X" else i for i in node.input]
    (repository / "forest" / "1").mkdir(parents=True)
    (repository / "forest" / "1" / "model.onnx").write_bytes(onnx.SerializeToString())
    ModelConfig(
        name="forest",
        backend="onnxruntime",
        max_batch_size=65_536,
        inputs=[TensorSpec("features", "FP32", [5])],
        outputs=[TensorSpec("label", "INT64", [1], reshape=[]), TensorSpec("probabilities", "FP32", [2])],
        dynamic_batching=DynamicBatching(max_queue_delay_us=200),
        instance_groups=[InstanceGroup(count=1, kind="KIND_CPU")],
        parameters={"intra_op_thread_count": str(os.cpu_count() or 1), "inter_op_thread_count": "1"},
    ).write(repository / "forest" / "config.pbtxt")


def sentences(rows: int, seed: int = 0) -> list[str]:
    """Sentences of 4 to 40 words from a fixed vocabulary (deterministic)."""
    vocabulary = [
        "customer",
        "account",
        "plan",
        "monthly",
        "charge",
        "support",
        "call",
        "login",
        "product",
        "churn",
        "stay",
        "leave",
        "price",
        "contract",
        "renewal",
        "discount",
        "service",
        "outage",
        "billing",
        "question",
        "answer",
        "team",
        "network",
        "speed",
        "upgrade",
        "downgrade",
        "cancel",
        "offer",
        "loyal",
        "year",
        "month",
        "day",
        "week",
        "happy",
        "unhappy",
        "slow",
        "fast",
    ]
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(vocabulary, size=int(n))) for n in rng.integers(4, 41, rows)]


def minilm_reference_rows_per_s(repository: Path, texts: list[str], batch: int, repeat: int) -> float:
    """Tokenizer + encoder in this process, in batches of `batch` texts (what `score` sends per request)."""
    from tokenizers import Tokenizer

    from tritonkit.export.hf import tokenize

    tokenizer = Tokenizer.from_file(str(repository / "minilm_tokenizer" / "1" / "tokenizer.json"))
    session = ort.InferenceSession(str(repository / "minilm_encoder" / "1" / "model.onnx"))
    session.run(None, tokenize(tokenizer, texts[:batch]))
    best = 0.0
    for _ in range(repeat):
        start = time.perf_counter()
        for first in range(0, len(texts), batch):
            session.run(None, tokenize(tokenizer, texts[first : first + batch]))
        best = max(best, len(texts) / (time.perf_counter() - start))
    return best


def reference_rows_per_s(model_path: Path, feeds: dict[str, np.ndarray], rows: int, repeat: int) -> float:
    session = ort.InferenceSession(str(model_path))
    session.run(None, {k: v[:4096] for k, v in feeds.items()})
    best = 0.0
    for _ in range(repeat):
        start = time.perf_counter()
        for first in range(0, rows, 65_536):
            session.run(None, {k: v[first : first + 65_536] for k, v in feeds.items()})
        best = max(best, rows / (time.perf_counter() - start))
    return best


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=400_000)
    parser.add_argument("--repeat", type=int, default=3, help="runs of each side; the best is kept")
    parser.add_argument("--model", choices=["forest", "churn", "minilm", "all"], default="all")
    parser.add_argument("--text-rows", type=int, default=8_192, help="sentences for minilm")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--json", type=Path)
    return parser.parse_args()


def _prepare(args, models: list[str], tmp: Path) -> dict:
    """Exports the models and writes the rows; what each model is measured on."""
    repository = tmp / "repository"
    repository.mkdir()
    export_forest(repository)
    export_churn(repository)
    frame = synthetic_customers(args.rows, seed=9).drop(columns=["churned"])
    data = tmp / "rows.parquet"
    frame.to_parquet(data)
    columns = {f: frame[[f]].to_numpy(np.float32) for f in FEATURES}
    feeds = {"forest": {"features": np.hstack([columns[f] for f in FEATURES])}, "churn": columns}
    plan = {"repository": repository}
    for model in ("forest", "churn"):
        maps = [",".join(FEATURES) + "=features"] if model == "forest" else []
        plan[model] = {"source": data, "rows": args.rows, "id_column": "customer_id", "maps": maps}
        plan[model]["reference"] = lambda m=model: reference_rows_per_s(
            repository / m / "1" / "model.onnx", feeds[m], args.rows, args.repeat
        )
    if "minilm" in models:
        from tritonkit.export.hf import DEFAULT_MAX_BATCH_SIZE, export_minilm

        export_minilm(repository)
        texts = sentences(args.text_rows)
        pa.table({"doc_id": np.arange(len(texts)), "text": texts}).to_pandas().to_parquet(tmp / "texts.parquet")
        plan["minilm"] = {"source": tmp / "texts.parquet", "rows": len(texts), "id_column": "doc_id", "maps": []}
        plan["minilm"]["reference"] = lambda: minilm_reference_rows_per_s(
            repository, texts, DEFAULT_MAX_BATCH_SIZE, args.repeat
        )
    return plan


def _measure(args, model: str, spec: dict, url: str, tmp: Path) -> dict:
    """The in-process reference, then the best of --repeat `score` runs of `model`."""
    reference = spec["reference"]()
    best = None
    for i in range(args.repeat):
        report = score(
            ScoreOptions(
                model=model,
                input=spec["source"],
                output=tmp / f"{model}-{i}.parquet",
                endpoint=url,
                maps=spec["maps"],
                id_column=spec["id_column"],
                concurrency=args.concurrency,
            )
        )
        assert report.rows_scored == spec["rows"], report
        best = report if best is None or report.rows_per_s > best.rows_per_s else best
    return {
        "rows": spec["rows"],
        "onnxruntime_rows_per_s": round(reference),
        "score_rows_per_s": best.rows_per_s,
        "ratio": round(best.rows_per_s / reference, 3),
        "latency_ms": best.latency_ms,
    }


def main() -> None:
    args = _arguments()
    models = ["forest", "churn", "minilm"] if args.model == "all" else [args.model]
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        plan = _prepare(args, models, tmp)
        with EmbeddedServer(plan["repository"], http_port=0, grpc_port=0, metrics_port=0) as server:
            for model in models:
                results[model] = _measure(args, model, plan[model], server.grpc_url, tmp)
    print(f"best of {args.repeat}; score = read + validate + send + write, end to end")
    print(f"{'model':<8}{'rows':>9}{'onnxruntime rows/s':>20}{'score rows/s':>15}{'ratio':>8}")
    for model, r in results.items():
        print(
            f"{model:<8}{r['rows']:>9,}{r['onnxruntime_rows_per_s']:>20,}{r['score_rows_per_s']:>15,.0f}"
            f"{r['ratio']:>8.3f}"
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
