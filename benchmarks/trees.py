"""`tritonkit score` on a 300-tree XGBoost Pipeline over numeric and text columns, against XGBoost in process.

The model is what people train: a scikit-learn Pipeline fitted on a DataFrame (imputers, a scaler
and a one-hot encoder in a ColumnTransformer) ending in `XGBClassifier(n_estimators=300)`, exported
with `tritonkit export xgboost` in each `--formats` form:

- onnx: one ONNX graph, preprocessing and trees (onnxruntime's TreeEnsemble), model `churn_xgb`;
- fil: the ensemble `churn_fil` = `churn_fil_preprocess` (ONNX) -> `churn_fil_trees` (the `fil`
  backend: XGBoost's own inplace_predict here) -> `churn_fil_postprocess` (label);
- trees: the XGBoost step alone with `--format fil` (no preprocessing), scored from a Parquet file of
  the preprocessed FP32 columns, against that step's own predict_proba on the same matrix in memory.

onnx and fil take one input per column (FP32, INT64, BYTES). All are served by the embedded Triton as
a bulk deployment (one instance per model, the runtime on every core, 65,536-row batches). `score`
reads Parquet, validates, sends and writes Parquet, end to end; the library's own in-process
predict (`Pipeline.predict_proba`) gets the same rows as a DataFrame already in memory. --repeat
rounds, each the references then every form back to back; "ratio" is the best run over the best
reference run, "pairs" the median of each run over the reference run just before it (the shared
machine's load moves both alike). The scored probabilities are compared with the library's on every
row. Where the time goes: CPU seconds of the reference (this process), of `score`'s client (this
process during the run) and of Triton and each model's Python backend stubs (the server's process
tree), and Triton's own statistics per model (per execution: queue, input, infer, output). "CPU
ratio" (the reference's CPU seconds over score's) is what the ratio would be if both got the same
share of the cores: the figure the machine's load moves least.

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


MODELS = {"onnx": "churn_xgb", "fil": "churn_fil", "trees": "churn_trees_only"}
OUTPUTS = {"onnx": "probabilities", "fil": "probabilities", "trees": "output__0"}


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


def reference_once(model, frame) -> dict:
    """Rows/s of the Pipeline's own predict_proba on `frame`, and its CPU seconds."""
    start, cpu = time.perf_counter(), cpu_s()
    model.predict_proba(frame)
    return {"rows_per_s": len(frame) / (time.perf_counter() - start), "cpu_s": round(cpu_s() - cpu, 2)}


def _score_once(server, form: str, tmp: Path, args, i: int) -> dict:
    from tritonkit.clients.score import ScoreOptions, score

    output = tmp / f"{form}-{i}.parquet"
    stats, client, triton = server_stats(server.http_url), cpu_s(), server_cpu_s(server.pid)
    report = score(
        ScoreOptions(
            model=MODELS[form],
            input=tmp / ("matrix.parquet" if form == "trees" else "rows.parquet"),
            output=output,
            endpoint=server.grpc_url,
            id_column="customer_id",
            concurrency=args.concurrency,
            maps=[",".join(_matrix_columns(args.features)) + "=input__0"] if form == "trees" else [],
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


def _matrix_columns(count: int) -> list[str]:
    return [f"f{i}" for i in range(count)]


def _warm_up(server, form: str, tmp: Path, args) -> None:
    """The first rows through every step, so that no measured run pays for first calls."""
    from tritonkit.clients.score import ScoreOptions, score

    source = tmp / ("matrix-sample.parquet" if form == "trees" else "sample.parquet")
    maps = [",".join(_matrix_columns(args.features)) + "=input__0"] if form == "trees" else []
    output = tmp / f"warm-{form}.parquet"
    score(ScoreOptions(model=MODELS[form], input=source, output=output, endpoint=server.grpc_url, maps=maps))


def _export(model, tmp: Path, formats: list[str], threads: int) -> None:
    """Each form into one repository: `trees` is the Pipeline's XGBoost step alone (FIL, no preprocessing)."""
    import joblib

    from tritonkit.export.options import ExportOptions
    from tritonkit.export.trees import export_trees

    joblib.dump(model, tmp / "model.joblib")
    joblib.dump(model[-1], tmp / "trees.joblib")
    for form in formats:
        options = ExportOptions(
            tmp / "repository",
            MODELS[form],
            format="fil" if form == "trees" else form,
            instances=1,
            intra_op_threads=threads,
            max_batch_size=65_536,
            sample=None if form == "trees" else tmp / "sample.parquet",
        )
        export_trees("xgboost", tmp / ("trees.joblib" if form == "trees" else "model.joblib"), options)


def _summary(runs: list[dict], references: list[dict], expected: np.ndarray, output: str) -> dict:
    """The best run of one form, its ratio to the best reference, and the median ratio of the pairs
    (run i against reference run i, measured back to back: the machine's load moves both alike), and the
    largest difference of the scored probabilities from the in-process ones on every row."""
    import pandas as pd

    best = dict(max(runs, key=lambda run: run["rows_per_s"]))
    scored = np.stack(pd.read_parquet(best.pop("output"))[output].to_numpy())
    best["ratio"] = round(best["rows_per_s"] / max(r["rows_per_s"] for r in references), 3)
    pairs = [run["rows_per_s"] / ref["rows_per_s"] for run, ref in zip(runs, references)]
    best["pair_ratios"] = [round(p, 3) for p in pairs]
    best["median_pair_ratio"] = round(float(np.median(pairs)), 3)
    served = [run["client_cpu_s"] + sum(run["triton_cpu_s"].values()) for run in runs]
    best["cpu_ratio"] = round(float(np.median([r["cpu_s"] for r in references]) / np.median(served)), 3)
    best["max_abs_error"] = float(np.abs(scored - expected).max())
    return best


def measure(model, frame, args) -> dict:
    """Export every form, then --repeat rounds of (the references, each form's `score` run), back to back.

    The references: the Pipeline's predict_proba on the DataFrame (for onnx and fil), and for `trees`
    the XGBoost step's predict_proba on the preprocessed FP32 matrix (what `trees` scores from Parquet).
    """
    import pandas as pd

    from tritonkit.server import EmbeddedServer

    formats = [f.strip() for f in args.formats.split(",")]
    result = {"rows": args.rows, "trees": args.trees, "load_average_before": os.getloadavg()}
    matrix = model[:-1].transform(frame[FEATURES]).astype(np.float32)
    args.features = matrix.shape[1]
    references = {"xgboost": lambda: reference_once(model, frame[FEATURES])}
    if "trees" in formats:
        references["xgboost_trees"] = lambda: reference_once(model[-1], matrix)
    runs: dict[str, list] = {name: [] for name in [*references, *formats]}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        frame.head(1_000).to_parquet(tmp / "sample.parquet")
        _export(model, tmp, formats, os.cpu_count() or 1)
        frame.to_parquet(tmp / "rows.parquet")
        columns = pd.DataFrame(matrix, columns=_matrix_columns(matrix.shape[1]))
        columns.insert(0, "customer_id", frame["customer_id"].to_numpy())
        columns.to_parquet(tmp / "matrix.parquet")
        columns.head(1_000).to_parquet(tmp / "matrix-sample.parquet")
        expected = {"onnx": model.predict_proba(frame[FEATURES]), "trees": model[-1].predict_proba(matrix)}
        with EmbeddedServer(tmp / "repository", http_port=0, grpc_port=0, metrics_port=0) as server:
            for form in formats:
                _warm_up(server, form, tmp, args)
            for i in range(args.repeat):
                for name, run in references.items():
                    runs[name].append(run())
                for form in formats:
                    runs[form].append(_score_once(server, form, tmp, args, i))
        for name in references:
            result[name] = max(runs[name], key=lambda run: run["rows_per_s"])
        for form in formats:
            reference = runs["xgboost_trees" if form == "trees" else "xgboost"]
            result[form] = _summary(runs[form], reference, expected.get(form, expected["onnx"]), OUTPUTS[form])
    result["load_average_after"] = os.getloadavg()
    return result


def report(result: dict) -> None:
    print(f"load average {result['load_average_before']} before, {result['load_average_after']} after")
    print("score = read Parquet + validate + send + write Parquet, end to end; CPU s = user + system")
    print("rows/s, ratio, CPU s: the best run of each; pairs: median of each run over the reference run just")
    print("before it; CPU ratio: the reference's CPU seconds over score's (client + Triton), medians over runs")
    header = ["rows/s", "ratio", "pairs", "CPU s client", "CPU s Triton", "CPU ratio", "max abs error"]
    print(f"{'form':<14}" + "".join(f"{h:>{w}}" for h, w in zip(header, (10, 8, 8, 14, 14, 11, 15))))
    for form in ["xgboost", "onnx", "fil", "xgboost_trees", "trees"]:
        r = result.get(form)
        if r is None:
            continue
        if "ratio" not in r:  # a reference
            print(f"{form:<14}{r['rows_per_s']:>10,.0f}{1:>8.3f}{'-':>8}{r['cpu_s']:>14.2f}{'-':>14}{'-':>11}{'-':>15}")
            continue
        print(
            f"{form:<14}{r['rows_per_s']:>10,.0f}{r['ratio']:>8.3f}{r['median_pair_ratio']:>8.3f}"
            f"{r['client_cpu_s']:>14.2f}{sum(r['triton_cpu_s'].values()):>14.2f}{r['cpu_ratio']:>11.3f}"
            f"{r['max_abs_error']:>15.2g}"
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
        if form in result:
            print(f"  {'tritonserver (' + form + ' run)':<64}{cpu.get('tritonserver', 0.0):>7.2f}")


def main() -> None:
    import xgboost

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--trees", type=int, default=300)
    parser.add_argument("--repeat", type=int, default=3, help="rounds of runs (reference, then each form)")
    parser.add_argument("--concurrency", type=int, default=4, help="requests in flight (score's default)")
    parser.add_argument(
        "--formats", default="onnx,fil,trees", help="forms to serve: onnx, fil (the ensemble), trees (FIL alone)"
    )
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
