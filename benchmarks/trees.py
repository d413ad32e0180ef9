"""`tritonkit score` on a 300-tree XGBoost Pipeline over numeric and text columns, against XGBoost in process.

The model is what people train: a scikit-learn Pipeline fitted on a DataFrame (imputers, a scaler
and a one-hot encoder in a ColumnTransformer) ending in `XGBClassifier(n_estimators=300)`, exported
with `tritonkit export xgboost` in each `--formats` form (one input per column: FP32, INT64, BYTES):

- onnx: one ONNX graph, preprocessing and trees (onnxruntime's TreeEnsemble), model `churn_xgb`;
- fil: the ensemble `churn_fil` = `churn_fil_preprocess` (ONNX) -> `churn_fil_trees` (the `fil`
  backend: XGBoost's own inplace_predict here) -> `churn_fil_postprocess` (label).

Both are served by the embedded Triton as a bulk deployment (one instance per model, the runtime on
every core, 65,536-row requests). Both sides start from the same rows: `score` reads them from
Parquet, validates, sends and writes Parquet, end to end; the library's own in-process predict
(`Pipeline.predict_proba`) gets them as a DataFrame already in memory. Best of --repeat runs each;
the ratio is score's rows/s over the library's. The scored probabilities are compared with the
library's on every row. Where the time goes: CPU seconds of the reference (this process), of
`score`'s client (this process during the run) and of Triton with its Python backend stubs (the
server's process tree), and Triton's own statistics per composing model (per execution: queue,
input, infer, output).

    python -m tritonkit.benchmarks.trees --rows 200000 --repeat 3
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np

CONTRACTS = ("monthly", "yearly", "two_year")
PLANS = ("basic", "plus", "pro", "family")
REGIONS = ("north", "south", "east", "west", "central")


def customers(rows: int, seed: int = 0):
    """Customers with numeric and text columns, some values missing, and a churn label."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "customer_id": np.arange(rows),
            "tenure_months": rng.uniform(0, 72, rows),
            "monthly_charges": rng.normal(70, 25, rows),
            "support_calls": rng.poisson(1.5, rows).astype(np.int64),
            "contract": pd.Series(rng.choice(CONTRACTS, rows), dtype=object),
            "plan": pd.Series(rng.choice(PLANS, rows), dtype=object),
            "region": pd.Series(rng.choice(REGIONS, rows), dtype=object),
        }
    )
    frame.loc[rng.random(rows) < 0.05, "monthly_charges"] = np.nan
    frame.loc[rng.random(rows) < 0.05, "plan"] = np.nan
    risk = (frame["contract"] == "monthly") * 1.5 - frame["tenure_months"] / 24 + frame["support_calls"] * 0.4
    frame["churned"] = (risk + rng.normal(0, 0.7, rows) > 0).astype(np.int64)
    return frame


FEATURES = ["tenure_months", "monthly_charges", "support_calls", "contract", "plan", "region"]


def pipeline(estimator):
    """Imputers, a scaler and a one-hot encoder in a ColumnTransformer, then `estimator`."""
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline, make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    numbers = make_pipeline(SimpleImputer(), StandardScaler())
    text = make_pipeline(
        SimpleImputer(strategy="constant", fill_value="none"),
        OneHotEncoder(handle_unknown="ignore", sparse_output=False),
    )
    prepare = ColumnTransformer(
        [("numbers", numbers, ["tenure_months", "monthly_charges"]), ("text", text, ["contract", "plan", "region"])],
        remainder="passthrough",
        sparse_threshold=0,
    )
    return Pipeline([("prepare", prepare), ("model", estimator)])


MODELS = {"onnx": "churn_xgb", "fil": "churn_fil"}


def cpu_s() -> float:
    """CPU seconds (user + system) of this process, all its threads."""
    times = os.times()
    return times.user + times.system


def server_cpu_s(pid: int) -> dict[str, float]:
    """CPU seconds of tritonserver and of each model's Python backend stubs (by model name)."""
    import psutil

    root = psutil.Process(pid)
    total: dict[str, float] = {}
    for process in [root, *root.children(recursive=True)]:
        try:
            args, times = process.cmdline(), process.cpu_times()
        except psutil.NoSuchProcess:
            continue
        # a stub's arguments: model.py, shm region, sizes, parent pid, backend dir, ..., "<model>_<group>_<i>", ...
        name = args[8].rsplit("_", 2)[0] if process.pid != pid and len(args) > 8 else "tritonserver"
        total[name] = total.get(name, 0.0) + times.user + times.system
    return total


def server_stats(http_url: str) -> dict[str, dict]:
    """Triton's cumulative statistics per model: executions, inferences and ns per phase."""
    with urllib.request.urlopen(f"http://{http_url}/v2/models/stats", timeout=10) as response:
        stats = json.load(response)["model_stats"]
    result = {}
    for model in stats:
        phases = model.get("inference_stats", {})
        entry = {k: int(phases.get(k, {}).get("ns", 0)) for k in ("queue", "compute_input", "compute_infer")}
        entry["compute_output"] = int(phases.get("compute_output", {}).get("ns", 0))
        entry["executions"] = int(model.get("execution_count", 0))
        entry["inferences"] = int(model.get("inference_count", 0))
        result[model["name"]] = {k: entry.get(k, 0) + result.get(model["name"], {}).get(k, 0) for k in entry}
    return result


def stats_delta(before: dict, after: dict) -> dict[str, dict]:
    """Per model: executions, rows per execution and ms per execution in each phase, over one run."""
    result = {}
    for name, now in after.items():
        then = before.get(name, {})
        delta = {k: v - then.get(k, 0) for k, v in now.items()}
        runs = delta["executions"]
        if not runs:
            continue
        phases = ("queue", "compute_input", "compute_infer", "compute_output")
        result[name] = {
            "executions": runs,
            "rows_per_execution": round(delta["inferences"] / runs),
            **{f"{k}_ms": round(delta[k] / runs / 1e6, 2) for k in phases},
        }
    return result


def reference(model, frame, repeat: int) -> dict:
    """Best rows/s of the Pipeline's own predict_proba, and its CPU seconds in that run."""
    best = {"rows_per_s": 0.0}
    for _ in range(repeat):
        start, cpu = time.perf_counter(), cpu_s()
        model.predict_proba(frame)
        rows_per_s = len(frame) / (time.perf_counter() - start)
        if rows_per_s > best["rows_per_s"]:
            best = {"rows_per_s": rows_per_s, "cpu_s": round(cpu_s() - cpu, 2)}
    return best


def _score_once(server, model: str, tmp: Path, args, i: int) -> dict:
    from tritonkit.clients.score import ScoreOptions, score

    output = tmp / f"{model}-{i}.parquet"
    stats, client, triton = server_stats(server.http_url), cpu_s(), server_cpu_s(server.pid)
    report = score(
        ScoreOptions(
            model=model,
            input=tmp / "rows.parquet",
            output=output,
            endpoint=server.grpc_url,
            id_column="customer_id",
            concurrency=args.concurrency,
        )
    )
    assert report.rows_scored == args.rows, report
    return {
        "rows_per_s": report.rows_per_s,
        "client_cpu_s": round(cpu_s() - client, 2),
        "triton_cpu_s": {k: round(v - triton.get(k, 0.0), 2) for k, v in server_cpu_s(server.pid).items()},
        "steps": stats_delta(stats, server_stats(server.http_url)),
        "output": output,
    }


def _warm_up(server, model: str, tmp: Path) -> None:
    """One request of the sample rows through every step, so that no measured run pays for first calls."""
    from tritonkit.clients.score import ScoreOptions, score

    output = tmp / f"warm-{model}.parquet"
    score(ScoreOptions(model=model, input=tmp / "sample.parquet", output=output, endpoint=server.grpc_url))


def _export(model, tmp: Path, formats: list[str], threads: int) -> None:
    import joblib

    from tritonkit.export.options import ExportOptions
    from tritonkit.export.trees import export_trees

    joblib.dump(model, tmp / "model.joblib")
    for form in formats:
        options = ExportOptions(
            tmp / "repository",
            MODELS[form],
            format=form,
            instances=1,
            intra_op_threads=threads,
            max_batch_size=65_536,
            sample=tmp / "sample.parquet",
        )
        export_trees("xgboost", tmp / "model.joblib", options)


def measure(model, frame, args) -> dict:
    """Export every form, then the reference and each form's best `score` run, side by side."""
    import pandas as pd

    from tritonkit.server import EmbeddedServer

    formats = [f.strip() for f in args.formats.split(",")]
    result = {"rows": args.rows, "trees": args.trees, "load_average_before": os.getloadavg()}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        frame.head(1_000).to_parquet(tmp / "sample.parquet")
        _export(model, tmp, formats, os.cpu_count() or 1)
        frame.to_parquet(tmp / "rows.parquet")
        expected = model.predict_proba(frame[FEATURES])
        result["xgboost"] = reference(model, frame[FEATURES], args.repeat)
        with EmbeddedServer(tmp / "repository", http_port=0, grpc_port=0, metrics_port=0) as server:
            for form in formats:
                _warm_up(server, MODELS[form], tmp)
                runs = [_score_once(server, MODELS[form], tmp, args, i) for i in range(args.repeat)]
                best = max(runs, key=lambda run: run["rows_per_s"])
                scored = np.stack(pd.read_parquet(best.pop("output"))["probabilities"].to_numpy())
                best["ratio"] = round(best["rows_per_s"] / result["xgboost"]["rows_per_s"], 3)
                best["max_abs_error"] = float(np.abs(scored - expected).max())
                result[form] = best
    result["load_average_after"] = os.getloadavg()
    return result


def report(result: dict) -> None:
    print(f"best of runs; load average {result['load_average_before']} before, {result['load_average_after']} after")
    print("score = read Parquet + validate + send + write Parquet, end to end; CPU s = user + system")
    ref = result["xgboost"]
    print(f"{'form':<10}{'rows/s':>10}{'ratio':>8}{'CPU s client':>14}{'CPU s Triton':>14}{'max abs error':>15}")
    print(f"{'xgboost':<10}{ref['rows_per_s']:>10,.0f}{1:>8.3f}{ref['cpu_s']:>14.2f}{'-':>14}{'-':>15}")
    for form in MODELS:
        if form in result:
            r = result[form]
            print(
                f"{form:<10}{r['rows_per_s']:>10,.0f}{r['ratio']:>8.3f}{r['client_cpu_s']:>14.2f}"
                f"{sum(r['triton_cpu_s'].values()):>14.2f}{r['max_abs_error']:>15.2g}"
            )
    print(f"per execution (Triton statistics), ms: {'queue':>7}{'input':>7}{'infer':>8}{'output':>7}  CPU s  rows")
    for form in MODELS:
        cpu = dict(result.get(form, {}).get("triton_cpu_s", {}))
        for name, step in result.get(form, {}).get("steps", {}).items():
            print(
                f"  {name:<34}{step['queue_ms']:>8.1f}{step['compute_input_ms']:>7.1f}"
                f"{step['compute_infer_ms']:>8.1f}{step['compute_output_ms']:>7.1f}{cpu.pop(name, 0.0):>7.2f}  "
                f"{step['executions']} x {step['rows_per_execution']:,}"
            )
        for name, seconds in cpu.items():
            print(f"  {name:<64}{seconds:>7.2f}")


def main() -> None:
    import xgboost

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--trees", type=int, default=300)
    parser.add_argument("--repeat", type=int, default=3, help="runs of each side; the best is kept")
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--formats", default="onnx,fil", help="forms to serve, of onnx and fil")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    train = customers(20_000, seed=0)
    model = pipeline(xgboost.XGBClassifier(n_estimators=args.trees, max_depth=6, n_jobs=os.cpu_count() or 1))
    model.fit(train[FEATURES], train["churned"])
    result = measure(model, customers(args.rows, seed=1).drop(columns=["churned"]), args)
    report(result)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
