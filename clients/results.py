"""What a batch of input rows became: one result path for both bulk engines (`score` and Spark).

`assemble` joins the rows that failed validation, the server's answers and the rows it refused into a
`RowResults`; `Postprocess` adds a label and a segment from a score output. `score` writes the
scored rows and the rejects as tables, the Spark engine as one struct per row: both from here, so
the two engines give the same outputs, versions and reasons.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from tritonkit.clients.bulk import Inferred
from tritonkit.clients.metadata import ModelMeta
from tritonkit.errors import UsageError


@dataclass(frozen=True)
class Postprocess:
    """Optional classifier post-processing: a threshold to a 0/1 label, bounds to named segments.

    Build it with `Postprocess.build`, which checks the parameters against the model's outputs.
    """

    source: str | None = None
    threshold: float | None = None
    segments: tuple[str, ...] = ()
    bounds: tuple[float, ...] = ()

    @classmethod
    def build(
        cls,
        meta: ModelMeta,
        threshold: float | None = None,
        segments: list[str] | tuple[str, ...] = (),
        segment_bounds: list[float] | tuple[float, ...] = (),
        score_output: str | None = None,
    ) -> Postprocess:
        segments, bounds = tuple(segments), tuple(segment_bounds)
        if threshold is None and not segments:
            if bounds:
                raise UsageError("--segment-bounds needs --segments (the names of the segments)")
            return cls()
        if segments and len(segments) != len(bounds) + 1:
            raise UsageError(
                f"--segments has {len(segments)} names for {len(bounds)} bounds; "
                "expected one name more than bounds (e.g. Low,Medium,High with 0.3,0.6)"
            )
        if list(bounds) != sorted(bounds):
            raise UsageError(f"--segment-bounds {list(bounds)} must be ascending")
        if score_output is None:
            candidates = [t.name for t in meta.outputs if t.datatype.startswith("FP") and t.shape[1:] in ((1,), ())]
            if not candidates:
                raise UsageError(f"model `{meta.name}` has no scalar float output to threshold; pass --score-output")
            score_output = candidates[0]
        elif score_output not in {t.name for t in meta.outputs}:
            raise UsageError(f"--score-output {score_output!r} is not an output of `{meta.name}`")
        return cls(score_output, threshold, segments, bounds)

    @property
    def active(self) -> bool:
        return self.threshold is not None or bool(self.segments)

    def columns(self, outputs: dict[str, np.ndarray]) -> dict[str, pa.Array]:
        """`predicted_label` (int8) and `segment` (dictionary-encoded text) for the rows of `outputs`."""
        if not self.active:
            return {}
        score = outputs[self.source].reshape(-1)
        extra = {}
        if self.threshold is not None:
            extra["predicted_label"] = pa.array((score >= self.threshold).astype(np.int8))
        if self.segments:
            codes = np.searchsorted(np.asarray(self.bounds), score, side="right").astype(np.int32)
            extra["segment"] = pa.DictionaryArray.from_arrays(pa.array(codes), pa.array(list(self.segments)))
        return extra


@dataclass(frozen=True)
class RowResults:
    """Everything the kit and the server made of a batch of `n_rows` input rows.

    Attributes:
        scored: positions (in the batch) of the scored rows, ascending.
        outputs: the scored rows' outputs by name, in that order.
        model_versions: the model version that scored each of them.
        extra: post-processing columns of the scored rows (`predicted_label`, `segment`).
        errors: position -> reason, for every rejected row (failed validation or refused by the model).
        requests: requests sent to Triton.
    """

    n_rows: int
    scored: np.ndarray
    outputs: dict[str, np.ndarray]
    model_versions: np.ndarray
    extra: dict[str, pa.Array]
    errors: dict[int, str]
    requests: int

    def output_columns(self) -> dict[str, pa.Array]:
        """The scored rows' outputs and post-processing as Arrow columns (vectors as fixed-size lists)."""
        return {**{name: output_column(v) for name, v in self.outputs.items()}, **self.extra}


def assemble(
    meta: ModelMeta, post: Postprocess, valid: np.ndarray, reasons: dict[int, str], inferred: Inferred
) -> RowResults:
    """Joins a batch's validation (`valid` mask, `reasons` by position) with what the server made of its
    valid rows (`inferred`, positions counted among the valid rows)."""
    valid_rows = np.flatnonzero(valid)
    keep = np.ones(len(valid_rows), dtype=bool)
    errors = dict(reasons)
    for failure in inferred.failures:
        keep[failure.row] = False
        errors[int(valid_rows[failure.row])] = f"inference failed: {failure.reason}"
    answers = inferred.answers
    outputs = {
        t.name: np.concatenate([a.outputs[t.name] for a in answers])
        if answers
        else np.zeros((0, *[max(d, 0) for d in t.shape[1:]]), dtype=t.numpy_dtype)
        for t in meta.outputs
    }
    versions = np.repeat(np.array([a.model_version for a in answers], dtype=object), [a.rows for a in answers])
    return RowResults(
        n_rows=len(valid),
        scored=valid_rows[keep],
        outputs=outputs,
        model_versions=versions,
        extra=post.columns(outputs),
        errors=dict(sorted(errors.items())),
        requests=inferred.requests,
    )


def output_column(values: np.ndarray) -> pa.Array:
    """One output as an Arrow column: scalars as values, vectors as fixed-size lists, BYTES as text."""
    width = int(np.prod(values.shape[1:])) if values.ndim > 1 else 1  # -1 fails on an empty chunk
    if values.dtype == object:
        return pa.array(
            [v.decode() if isinstance(v, bytes) else v for v in values.reshape(len(values), width)[:, 0]], pa.string()
        )
    flat = values.reshape(len(values), width)
    if flat.shape[1] == 1:
        return pa.array(flat[:, 0])
    return pa.FixedSizeListArray.from_arrays(pa.array(flat.reshape(-1)), flat.shape[1])
