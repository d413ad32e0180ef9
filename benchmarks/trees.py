"""`tritonkit score` on a 300-tree XGBoost Pipeline over numeric and text columns, against XGBoost in process.

The model is what people train: a scikit-learn Pipeline fitted on a DataFrame (imputers, a scaler
and a one-hot encoder in a ColumnTransformer) ending in `XGBClassifier(n_estimators=300)`, exported
with `tritonkit export xgboost` (one input per column: FP32, INT64 and BYTES), served by the
embedded Triton as a bulk deployment (one instance, onnxruntime on every core, 65,536-row
requests). Both sides start from the same rows: `score` reads them from Parquet, validates, sends
and writes Parquet, end to end; the library's own in-process predict (`Pipeline.predict_proba`)
gets them as a DataFrame already in memory. Best of --repeat runs each; the ratio is score's rows/s
over the library's. The scored probabilities are compared with the library's on every row.

    python -m tritonkit.benchmarks.trees --rows 200000
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
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


def reference_rows_per_s(model, frame, repeat: int) -> float:
    best = 0.0
    for _ in range(repeat):
        start = time.perf_counter()
        model.predict_proba(frame)
        best = max(best, len(frame) / (time.perf_counter() - start))
    return best


def _score_best(tmp: Path, args) -> tuple:
    """The best of --repeat `score` runs over tmp/rows.parquet, and the last output file."""
    from tritonkit.clients.score import ScoreOptions, score
    from tritonkit.server import EmbeddedServer

    best = None
    with EmbeddedServer(tmp / "repository", http_port=0, grpc_port=0, metrics_port=0) as server:
        for i in range(args.repeat):
            output = tmp / f"scores-{i}.parquet"
            report = score(
                ScoreOptions(
                    model="churn_xgb",
                    input=tmp / "rows.parquet",
                    output=output,
                    endpoint=server.grpc_url,
                    id_column="customer_id",
                    concurrency=args.concurrency,
                )
            )
            assert report.rows_scored == args.rows, report
            best = report if best is None or report.rows_per_s > best.rows_per_s else best
    return best, output


def main() -> None:
    import joblib
    import pandas as pd
    import xgboost

    from tritonkit.export.options import ExportOptions
    from tritonkit.export.trees import export_trees

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--trees", type=int, default=300)
    parser.add_argument("--repeat", type=int, default=3, help="runs of each side; the best is kept")
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    threads = os.cpu_count() or 1
    train = customers(20_000, seed=0)
    model = pipeline(xgboost.XGBClassifier(n_estimators=args.trees, max_depth=6, n_jobs=threads))
    model.fit(train[FEATURES], train["churned"])
    frame = customers(args.rows, seed=1).drop(columns=["churned"])
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        joblib.dump(model, tmp / "model.joblib")
        frame.head(1_000).to_parquet(tmp / "sample.parquet")
        options = ExportOptions(
            tmp / "repository",
            "churn_xgb",
            instances=1,
            intra_op_threads=threads,
            max_batch_size=65_536,
            sample=tmp / "sample.parquet",
        )
        export_trees("xgboost", tmp / "model.joblib", options)
        frame.to_parquet(tmp / "rows.parquet")
        reference = reference_rows_per_s(model, frame[FEATURES], args.repeat)
        expected = model.predict_proba(frame[FEATURES])
        best, output = _score_best(tmp, args)
        scored = np.stack(pd.read_parquet(output)["probabilities"].to_numpy())
        result = {
            "rows": args.rows,
            "trees": args.trees,
            "xgboost_rows_per_s": round(reference),
            "score_rows_per_s": round(best.rows_per_s),
            "ratio": round(best.rows_per_s / reference, 3),
            "max_abs_error": float(np.abs(scored - expected).max()),
            "load_average": os.getloadavg()[0],
        }
    print(f"best of {args.repeat}; score = read Parquet + validate + send + write Parquet, end to end")
    print(f"{'rows':>9}{'trees':>7}{'xgboost rows/s':>16}{'score rows/s':>14}{'ratio':>8}{'max abs error':>15}")
    print(
        f"{result['rows']:>9,}{result['trees']:>7}{result['xgboost_rows_per_s']:>16,}"
        f"{result['score_rows_per_s']:>14,}{result['ratio']:>8.3f}{result['max_abs_error']:>15.2g}"
    )
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
