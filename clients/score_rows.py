"""A scored chunk as tables and store entries: the output's rows, the rejects' rows, the store's entries.

The store's entries are built from the output table, so a resumed run writes exactly what the first
run wrote, from the chunk's part.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from tritonkit.clients.metadata import ModelMeta
from tritonkit.clients.results import RowResults
from tritonkit.clients.sinks import REJECT_SCHEMA


def tables(
    meta: ModelMeta, id_name: str, chunk, chunk_ids: pa.Array, results: RowResults, predicted_at: float
) -> tuple[pa.Table, pa.Table]:
    """(scored, rejects): the id, outputs, post-processing, model name and version, time; row, id, reason."""
    n = len(results.scored)
    columns = {id_name: chunk_ids.take(pa.array(results.scored, pa.int64()))}
    columns.update(results.output_columns())
    columns["model_name"] = pa.repeat(meta.name, n)
    columns["model_version"] = pa.array(results.model_versions, pa.string())
    columns["predicted_at"] = pa.repeat(pa.scalar(int(predicted_at * 1e6), pa.timestamp("us", tz="UTC")), n)
    rejected = list(results.errors)
    rejects = pa.table(
        {
            "row": pa.array([chunk.first_row + i for i in rejected], pa.int64()),
            "id": pa.array([_text(chunk_ids[i].as_py()) for i in rejected], pa.string()),
            "reason": pa.array(list(results.errors.values()), pa.string()),
        },
        schema=REJECT_SCHEMA,
    )
    return pa.table(columns), rejects


def store_entries(meta: ModelMeta, id_name: str, scored: pa.Table) -> list:
    """The prediction store's entries for a chunk's scored rows (one per row, source "batch")."""
    from tritonkit.clients.store import Entry

    entities = scored.column(id_name).to_pylist()
    versions = scored.column("model_version").to_pylist()
    at = pc.cast(scored.column("predicted_at"), pa.int64()).to_numpy() / 1e6
    outputs = {t.name: scored.column(t.name).to_pylist() for t in meta.outputs}
    return [
        Entry(str(entity), meta.name, str(versions[i]), {k: v[i] for k, v in outputs.items()}, float(at[i]), "batch")
        for i, entity in enumerate(entities)
    ]


def _text(value) -> str | None:
    return None if value is None else str(value)
