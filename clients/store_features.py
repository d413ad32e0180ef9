"""The online feature store's writers: a batch run's model inputs, and feature files computed elsewhere.

`rows_from_arrays` turns the arrays a batch run sent to Triton into feature rows, value for value (a
FP32 input is stored as the exact float the model received), so a live fallback that reads them back
sends the model the same request the batch did: no training/serving skew. `push_features` loads a
Parquet, CSV or JSON Lines file of features (one row per entity, an id column) into the store in
chunks, one transaction per chunk (`tritonkit features push`).
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from tritonkit.clients import sources
from tritonkit.clients.store import FeatureRow, PredictionStore, check_model_name
from tritonkit.errors import UsageError

logger = logging.getLogger(__name__)

PUSH_CHUNK_ROWS = 10_000


def json_rows(array: np.ndarray) -> list:
    """Each row of a batch array as a JSON value: a one-value row as a scalar, text as str, else nested lists."""
    rows = len(array)
    if array.dtype == object:
        array = np.vectorize(lambda v: v.decode() if isinstance(v, bytes) else v, otypes=[object])(array)
    if array.ndim == 1 or int(np.prod(array.shape[1:])) == 1:
        return array.reshape(rows).tolist()
    return array.tolist()


def rows_from_arrays(
    model: str, entity_ids: list, arrays: dict[str, np.ndarray], updated_at: float
) -> list[FeatureRow]:
    """One feature row per entity from a batch's input arrays (input name -> array with the batch first)."""
    columns = {name: json_rows(array) for name, array in arrays.items()}
    return [
        FeatureRow(str(entity), model, {name: values[i] for name, values in columns.items()}, updated_at)
        for i, entity in enumerate(entity_ids)
    ]


def scored_features(model: str, entity_ids: list, conversion: tuple, scored: np.ndarray, at: float) -> list[FeatureRow]:
    """The feature rows of a `score` chunk's scored rows: `conversion` is mapping.convert's (arrays of the
    valid rows, valid mask, reasons), `scored` the scored rows' positions in the chunk, `entity_ids` theirs."""
    arrays, valid = conversion[0], conversion[1]
    among_valid = np.searchsorted(np.flatnonzero(valid), scored)
    return rows_from_arrays(model, entity_ids, {name: a[among_valid] for name, a in arrays.items()}, at)


@dataclass
class PushReport:
    """What `push_features` wrote: rows read, entities written, rows skipped (no id), the feature names."""

    model: str
    store: str
    rows_read: int = 0
    rows_written: int = 0
    rows_skipped: int = 0
    features: list[str] = field(default_factory=list)
    wall_s: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)


def push_features(
    store: PredictionStore,
    model: str,
    path: str | Path,
    id_column: str,
    columns: list[str] | None = None,
    chunk_rows: int = PUSH_CHUNK_ROWS,
) -> PushReport:
    """Writes the features in `path` (one row per entity) to the store under `model`.

    Values merge over what the store holds for each entity (a file with some features leaves the others);
    a null value is not written. Each chunk of `chunk_rows` rows is one transaction. Raises UsageError
    naming a missing id column or feature column, or a value that cannot be stored.
    """
    check_model_name(model)
    if chunk_rows < 1:
        raise UsageError(f"--chunk-rows is {chunk_rows}; expected 1 or more")
    files = sources.input_files(Path(path))
    available = sources.column_names(files)
    if id_column not in available:
        raise UsageError(f"--id-column {id_column!r} is not a column of {path}; its columns: {', '.join(available)}")
    names = [c for c in available if c != id_column] if not columns else list(columns)
    unknown = [c for c in names if c not in available]
    if unknown:
        raise UsageError(f"feature column(s) {', '.join(unknown)} not in {path}; its columns: {', '.join(available)}")
    if not names:
        raise UsageError(f"{path} has no feature columns besides the id column {id_column!r}")
    report = PushReport(model, store.url, features=names)
    start = time.perf_counter()
    read = None if sources.input_format(files[0]) == "jsonl" else [id_column, *names]
    for chunk in sources.chunks(files, chunk_rows, read, [id_column]):
        rows = _feature_rows(model, chunk.table.to_pylist(), id_column, names, time.time())
        report.rows_read += chunk.table.num_rows
        report.rows_skipped += chunk.table.num_rows - len(rows)
        store.put_features(rows)
        report.rows_written += len(rows)
    report.wall_s = round(time.perf_counter() - start, 3)
    logger.info("pushed %d feature rows of model %s to %s", report.rows_written, model, store.url)
    return report


def _feature_rows(model: str, records: list[dict], id_column: str, names: list[str], at: float) -> list[FeatureRow]:
    rows = []
    for record in records:
        entity = record.get(id_column)
        if entity is None or entity == "":
            continue
        values = {name: record[name] for name in names if record.get(name) is not None}
        if values:
            rows.append(FeatureRow(str(entity), model, values, at))
    return rows
