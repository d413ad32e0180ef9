"""Export a model fitted on a DataFrame with one input per column, checked on known, unseen and missing values.

Parity runs on random rows around what the estimator learned, the --sample rows, and probes: for
each column, rows with that column missing, and for text columns rows with a category the
estimator never saw. A probe the estimator refuses (it raises) is left out: the served model may
refuse it too. An unseen category the estimator accepts must give the same answer in the graph, or
the export fails. A missing value the estimator accepts and the graph computes the same way makes
its column one of the `missing_inputs`; where the graph differs (e.g. trees that route NaN their
own way), the column is left out of that list and clients reject missing values there.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from tritonkit.errors import ExportError, UsageError
from tritonkit.export.columns import (
    TEXT,
    UNSEEN,
    WHOLE,
    Column,
    columns_of,
    conversion_copy,
    feeds,
    random_frame,
    source_frame,
)
from tritonkit.export.onnx_graph import cast_input
from tritonkit.export.options import ExportOptions, ExportResult, read_sample
from tritonkit.export.parity import check
from tritonkit.export.tabular import (
    MISSING_PARAMETER,
    compare_predictions,
    finish_graph,
    fitted_parts,
    output_names,
    run_onnx,
    write_onnx,
)

logger = logging.getLogger(__name__)

RANDOM_ROWS = 500
PROBE_ROWS = 40


@dataclass
class Probe:
    """Rows that test one behaviour: `column` missing or unseen (None: the base rows)."""

    label: str
    frame: object  # pandas DataFrame
    column: str | None = None
    missing: bool = False


def _sample_frame(options: ExportOptions):
    if options.sample is None:
        return None
    table = read_sample(options.sample)
    if isinstance(table, dict):
        raise UsageError(f"--sample {options.sample}: a model with one input per column takes a CSV or Parquet file")
    return table


def _probes(base, columns: list[Column]) -> list[Probe]:
    head = base.head(PROBE_ROWS)
    probes = []
    for column in columns:
        if column.dtype != WHOLE:
            frame = head.copy()
            frame[column.name] = np.nan
            probes.append(Probe(f"`{column.name}` missing", frame, column.name, missing=True))
        if column.dtype == TEXT:
            frame = head.copy()
            frame[column.name] = UNSEEN
            probes.append(Probe(f"`{column.name}` unseen", frame, column.name))
    return probes


def _predict(estimator, frame, columns, classifier):
    from tritonkit.export.sklearn import predictions

    return predictions(estimator, source_frame(frame, columns), classifier)


def _mark_sparse_xgboost(copied, sample) -> None:
    """Flag a Pipeline's last XGBoost step whose input is a sparse matrix: XGBoost reads its zeros as missing."""
    import scipy.sparse
    from sklearn.pipeline import Pipeline

    from tritonkit.export.trees_onnx import ZERO_IS_MISSING

    if not isinstance(copied, Pipeline) or type(copied.steps[-1][1]).__module__.split(".")[0] != "xgboost":
        return
    if scipy.sparse.issparse(copied[:-1].transform(sample)):
        setattr(copied.steps[-1][1], ZERO_IS_MISSING, True)


def convert_columns(estimator, columns: list[Column], sample, options: ExportOptions):
    """The estimator (or a Pipeline's preprocessing) as ONNX with one input per column; INT64 inputs cast."""
    from onnx import TensorProto
    from skl2onnx.common.data_types import FloatTensorType, StringTensorType

    from tritonkit.export.sklearn import DEFAULT_OPSET, convert_types, exact_standard_scalers

    copied = conversion_copy(estimator)
    _mark_sparse_xgboost(copied, sample)
    types = [(c.name, StringTensorType([None, 1]) if c.dtype == TEXT else FloatTensorType([None, 1])) for c in columns]
    model = convert_types(copied, types, options.opset or DEFAULT_OPSET)
    for column in columns:
        if column.dtype == WHOLE:
            cast_input(model, column.name, TensorProto.INT64)
    exact_standard_scalers(model, estimator)
    return model


def _accepted(estimator, probe: Probe, columns, classifier):
    """The estimator's predictions on a probe, or None when it refuses the rows (raises)."""
    try:
        return _predict(estimator, probe.frame, columns, classifier)
    except Exception as e:  # noqa: BLE001 - estimators raise ValueError, KeyError, TypeError, ... on bad rows
        logger.info("%s: the estimator refuses it (%s: %s); not checked", probe.label, type(e).__name__, e)
        return None


def parity_over_probes(estimator, run, base: list[Probe], probes: list[Probe], columns, outputs, classifier, options):
    """Parity results over the base rows and the accepted probes; the columns that take missing values.

    `run(feeds)` gives the served form's outputs by name for one input array per column.
    """
    import pandas as pd

    kept, missing_ok = list(base), []
    for probe in probes:
        expected = _accepted(estimator, probe, columns, classifier)
        if expected is None:
            continue
        try:
            got = run(feeds(probe.frame, columns))
            ok = all(r.ok for r in compare_predictions(got, outputs, classifier, *expected, options))
        except Exception as e:
            raise ExportError(f"the exported graph fails on rows with {probe.label}: {e}") from e
        if probe.missing and not ok:
            logger.warning(
                "%s: the estimator accepts a missing `%s` but the graph computes differently; "
                "clients will reject missing values there",
                options.name,
                probe.column,
            )
            continue
        kept.append(probe)
        if probe.missing:
            missing_ok.append(probe.column)
    frame = pd.concat([p.frame for p in kept], ignore_index=True)
    try:
        expected = _predict(estimator, frame, columns, classifier)
    except Exception as e:
        raise UsageError(f"the model refuses the --sample rows: {type(e).__name__}: {e}") from e
    got = run(feeds(frame, columns))
    return check(compare_predictions(got, outputs, classifier, *expected, options)), missing_ok


@dataclass(frozen=True)
class ColumnPlan:
    """What an export with one input per column checks: the inputs, outputs, base rows and probes."""

    columns: list[Column]
    outputs: list[str]
    classifier: bool
    has_proba: bool
    base: list[Probe]
    probes: list[Probe]
    checked: str  # for people: which rows parity runs on

    def parity(self, estimator, run, options: ExportOptions, missing: list[str]) -> list:
        """Check `run` (feeds -> outputs) against the estimator; add the columns that take missing values."""
        results, found = parity_over_probes(
            estimator, run, self.base, self.probes, self.columns, self.outputs, self.classifier, options
        )
        missing.extend(found)
        return results


def plan_columns(estimator, options: ExportOptions) -> ColumnPlan:
    """The inputs (from the estimator and --sample), outputs, random rows, --sample rows and probes."""
    from tritonkit.export.sklearn import kind_of

    if options.input_names:
        raise UsageError("--input-name: a model with one input per column names its inputs after the columns")
    classifier = kind_of(estimator)
    has_proba = classifier and hasattr(estimator, "predict_proba")
    sample = _sample_frame(options)
    columns = columns_of(estimator, sample)
    base = [Probe("random rows", random_frame(estimator, columns, RANDOM_ROWS))]
    checked = f"{RANDOM_ROWS} random rows"
    if sample is not None:
        base.append(Probe("--sample rows", sample[[c.name for c in columns]].reset_index(drop=True)))
        checked += f" + {len(sample)} rows of {options.sample.name}"
    probes = _probes(base[0].frame, columns)
    checked += f" + {len(probes) * PROBE_ROWS} rows with one column missing or unseen"
    outputs = output_names(classifier, has_proba, options)
    return ColumnPlan(columns, outputs, classifier, has_proba, base, probes, checked)


def export_columns(estimator, options: ExportOptions) -> ExportResult:
    """Convert, parity-check and write a DataFrame model with one input per column."""
    from tritonkit.export.sklearn import describe

    plan = plan_columns(estimator, options)
    model = convert_columns(estimator, plan.columns, source_frame(plan.base[0].frame, plan.columns), options)
    finish_graph(model, plan.outputs, plan.classifier, plan.has_proba, describe(estimator), {})
    missing: list[str] = []

    def parity(path) -> list:
        return plan.parity(estimator, lambda arrays: run_onnx(path, arrays, plan.outputs), options, missing)

    # Which inputs take missing values is known once parity has run: write_onnx asks after it.
    return write_onnx(
        model, options, parity, lambda: {MISSING_PARAMETER: ",".join(missing)} if missing else {}, plan.checked
    )


__all__ = ["export_columns", "fitted_parts"]
