"""End to end: `score` on small hypothesis-generated dirty files against the real server.

Whatever the rows hold, read = scored + rejected; the rejected rows are exactly the ones with a value
that is not a finite FP32 number; the scored rows equal in-process onnxruntime on the same values.
"""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tritonkit.clients.score import ScoreOptions, score
from tritonkit.export.churn import FEATURES, OUTPUTS

GOOD = st.one_of(st.floats(-1e3, 1e3, allow_nan=False), st.integers(-1000, 1000))
BAD = st.sampled_from([None, "many", float("nan"), float("inf"), -float("inf"), 1e39, [1, 2]])
ROWS = st.lists(st.fixed_dictionaries({f: st.one_of(GOOD, GOOD, GOOD, BAD) for f in FEATURES}), min_size=1, max_size=40)


def valid(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and abs(value) <= 1e38


def write(rows: list[dict], path: Path) -> None:
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps({"customer_id": i, **row}) + "\n" for i, row in enumerate(rows)))
        return

    def text(value):
        return None if value is None else json.dumps(value) if isinstance(value, list) else str(value)

    columns = {"customer_id": pa.array(range(len(rows)))}
    columns.update({f: pa.array([text(r[f]) for r in rows], pa.string()) for f in FEATURES})
    pacsv.write_csv(pa.table(columns), path)


@settings(
    max_examples=6,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(rows=ROWS, fmt=st.sampled_from([".jsonl", ".csv"]))
def test_score_accounts_for_every_row_and_matches_onnxruntime_when_input_is_dirty(server, churn_repository, rows, fmt):
    with tempfile.TemporaryDirectory() as folder:
        source, output = Path(folder) / f"rows{fmt}", Path(folder) / "out.parquet"
        write(rows, source)
        report = score(
            ScoreOptions(
                model="churn",
                input=source,
                output=output,
                endpoint=server.grpc_url,
                id_column="customer_id",
                chunk_rows=16,
                batch_size=8,
            )
        )
        scored = pd.read_parquet(output)
        scored["customer_id"] = scored.customer_id.astype(int)  # text ids: CSV and JSON Lines ids are read as text
        rejects = [
            json.loads(line) for line in output.with_name(output.name + ".rejects.jsonl").read_text().splitlines()
        ]
    good = [i for i, row in enumerate(rows) if all(valid(row[f]) for f in FEATURES)]
    assert report.rows_read == len(rows) == report.rows_scored + report.rows_rejected
    assert sorted(r["row"] for r in rejects) == sorted(set(range(len(rows))) - set(good))
    assert sorted(scored.customer_id) == good
    for reject in rejects:
        assert any(f"`{f}`" in reject["reason"] for f in FEATURES), reject
    if good:
        session = ort.InferenceSession(str(churn_repository / "churn" / "1" / "model.onnx"))
        features = {f: np.array([[rows[i][f]] for i in good], dtype=np.float32) for f in FEATURES}
        expected = dict(zip(OUTPUTS, session.run(OUTPUTS, features)))
        served = scored.set_index("customer_id").loc[good]
        np.testing.assert_allclose(served.probability.to_numpy(), expected["probability"][:, 0], rtol=0, atol=1e-6)
        np.testing.assert_array_equal(served.label.to_numpy(), expected["label"][:, 0])
