"""DataFrame models: one Triton input per original column, named after it and typed from it.

A model fitted on a pandas DataFrame that picks columns by name (ColumnTransformer) or takes text
gets one input per column of `feature_names_in_`, each [N, 1]: FP32 for numbers, INT64 for whole
numbers (by --sample's dtypes), BYTES for text. So `score` maps a file's columns by name, and
`predict` takes a record.

Missing values travel as NaN (numbers) and empty text (text: BYTES cannot carry a null); the graph
gives the empty text what the estimator does with a missing one. Which inputs take a missing value
is measured at export (see `column_export`) and written to config.pbtxt as `missing_inputs`, so
clients pass nulls there and reject them elsewhere.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tritonkit.errors import UsageError
from tritonkit.export.tabular import fitted_parts

TEXT, NUMBER, WHOLE = "BYTES", "FP32", "INT64"
INPUT_MODES = ("auto", "columns", "features")
UNSEEN = "tritonkit-unseen-category"


@dataclass(frozen=True)
class Column:
    """One model input: a DataFrame column's name and its Triton datatype (FP32, INT64 or BYTES)."""

    name: str
    dtype: str


def wants_columns(estimator, inputs: str, sample: Path | None) -> bool:
    """Whether to export one input per column: asked for, or (auto) the model picks columns or takes text."""
    from sklearn.compose import ColumnTransformer

    if inputs not in INPUT_MODES:
        raise UsageError(f"--inputs is {inputs!r}; expected one of {', '.join(INPUT_MODES)}")
    names = getattr(estimator, "feature_names_in_", None)
    if inputs == "features" or (names is None and inputs == "auto"):
        return False
    if names is None:
        raise UsageError("--inputs columns needs a model fitted on a pandas DataFrame (it records feature_names_in_)")
    if inputs == "columns":
        return True
    return any(isinstance(p, ColumnTransformer) for p in fitted_parts(estimator)) or bool(text_columns(estimator))


def _positions(estimator) -> list[tuple[object, list[int]]]:
    """(fitted transformer or estimator, positions of the columns it reads) for each part that reads columns."""
    from sklearn.compose import ColumnTransformer

    names = list(estimator.feature_names_in_)
    found = []
    for part in fitted_parts(estimator):
        if isinstance(part, ColumnTransformer):
            indices = getattr(part, "_transformer_to_input_indices", {})
            for name, transformer, _ in part.transformers_:
                if name in indices and not isinstance(transformer, str):
                    found.append((transformer, [int(i) for i in indices[name]]))
    return found or [(estimator, list(range(len(names))))]


def _text_positions(part, count: int) -> set[int]:
    """Positions (of `count` columns) that a part's encoders or imputers learned as text."""
    text = set()
    for inner in fitted_parts(part):
        categories = getattr(inner, "categories_", None)
        if isinstance(categories, list) and len(categories) == count:
            text |= {j for j, values in enumerate(categories) if any(isinstance(v, str) for v in values)}
        statistics = getattr(inner, "statistics_", None)
        if (
            statistics is not None
            and getattr(statistics, "dtype", None) is np.dtype(object)
            and len(statistics) == count
        ):
            text |= {j for j, value in enumerate(statistics) if isinstance(value, str)}
    return text


def text_columns(estimator) -> set[str]:
    """The columns the estimator learned as text (string categories or fill values)."""
    names = list(getattr(estimator, "feature_names_in_", []))
    found = set()
    for part, positions in _positions(estimator):
        found |= {names[positions[j]] for j in _text_positions(part, len(positions))}
    return found


def _sample_dtype(series) -> str:
    import pandas as pd

    if pd.api.types.is_bool_dtype(series) or pd.api.types.is_float_dtype(series):
        return NUMBER
    if pd.api.types.is_integer_dtype(series):
        return WHOLE
    return TEXT


def columns_of(estimator, sample) -> list[Column]:
    """The inputs: names from `feature_names_in_`, types from the sample's dtypes (else text or FP32 as learned).

    Raises UsageError naming the column when the sample lacks one or holds text where the model
    computes with numbers (or numbers where it learned text).
    """
    names = [str(n) for n in estimator.feature_names_in_]
    text = text_columns(estimator)
    if sample is None:
        return [Column(n, TEXT if n in text else NUMBER) for n in names]
    missing = [n for n in names if n not in sample.columns]
    if missing:
        raise UsageError(
            f"--sample lacks column(s) {', '.join(missing)} that the model was fitted on; "
            f"it has: {', '.join(map(str, sample.columns))}"
        )
    result = []
    for name in names:
        dtype = _sample_dtype(sample[name])
        if dtype == TEXT and name not in text and sample[name].notna().any():
            value = next(v for v in sample[name] if v is not None and v == v)
            raise UsageError(
                f"--sample column `{name}` holds text ({value!r}); the model computes with numbers there "
                "(it learned no text categories for it)"
            )
        if dtype != TEXT and name in text:
            raise UsageError(
                f"--sample column `{name}` holds numbers ({sample[name].dtype}); the model learned text "
                "categories for it: store it as text"
            )
        result.append(Column(name, dtype))
    return result


def is_missing(value) -> bool:
    """None, NaN or empty text: what the kit sends as a missing value."""
    return value is None or value == "" or (isinstance(value, float) and value != value)


def feeds(frame, columns: list[Column]) -> dict[str, np.ndarray]:
    """A DataFrame as the graph's inputs: [N, 1] each; missing text as empty text, missing numbers as NaN."""
    import pandas as pd

    result = {}
    for column in columns:
        values = frame[column.name]
        if column.dtype == TEXT:
            array = np.array(["" if is_missing(v) else str(v) for v in values], dtype=object)
        elif column.dtype == WHOLE:
            array = values.to_numpy(np.int64)
        else:
            array = pd.to_numeric(values).to_numpy(np.float32)
        result[column.name] = array.reshape(-1, 1)
    return result


def source_frame(frame, columns: list[Column]):
    """The DataFrame the estimator predicts on: numbers as the graph sees them (FP32), missing text as NaN."""
    import pandas as pd

    data = {}
    for column in columns:
        values = frame[column.name]
        if column.dtype == TEXT:
            # NaN, as pandas reads a missing text and SimpleImputer(missing_values=np.nan) finds it (not None)
            data[column.name] = pd.Series([np.nan if is_missing(v) else str(v) for v in values], dtype=object)
        elif column.dtype == WHOLE:
            data[column.name] = values.to_numpy(np.int64)
        else:
            data[column.name] = pd.to_numeric(values).to_numpy(np.float32)
    return pd.DataFrame(data, index=range(len(frame)))


def conversion_copy(estimator):
    """A copy of the estimator for skl2onnx: text imputers and categories read the empty text as missing."""
    from sklearn.impute import SimpleImputer

    copied = copy.deepcopy(estimator)
    for part in fitted_parts(copied):
        statistics = getattr(part, "statistics_", None)
        text_imputer = isinstance(part, SimpleImputer) and statistics is not None and statistics.dtype == object
        if text_imputer and not isinstance(part.missing_values, str):
            part.missing_values = ""
        categories = getattr(part, "categories_", None)
        if isinstance(categories, list):
            part.categories_ = [_missing_as_empty(values) for values in categories]
    return copied


def _missing_as_empty(values: np.ndarray) -> np.ndarray:
    if values.dtype != object or not any(is_missing(v) for v in values):
        return values
    return np.array(["" if is_missing(v) else v for v in values], dtype=object)


def scale(estimator, name: str) -> tuple[float, float]:
    """Centre and spread of a numeric column, from what a scaler or imputer recorded for it (else 0 and 1)."""
    names = [str(n) for n in estimator.feature_names_in_]
    for part, positions in _positions(estimator):
        if names.index(name) not in positions:
            continue
        j = positions.index(names.index(name))
        for inner in fitted_parts(part):
            if getattr(inner, "data_min_", None) is not None and len(inner.data_min_) == len(positions):
                low, high = float(inner.data_min_[j]), float(inner.data_max_[j])
                return (low + high) / 2, max((high - low) / 2, 1e-3)
            if getattr(inner, "mean_", None) is not None and len(inner.mean_) == len(positions):
                return float(inner.mean_[j]), float(inner.scale_[j]) if inner.scale_ is not None else 1.0
            statistics = getattr(inner, "statistics_", None)
            if statistics is not None and len(statistics) == len(positions) and statistics.dtype != object:
                return float(statistics[j]), max(abs(float(statistics[j])) / 2, 1.0)
    return 0.0, 1.0


def categories(estimator, name: str) -> list[str]:
    """The text categories an encoder learned for a column (fill values of imputers too)."""
    names = [str(n) for n in estimator.feature_names_in_]
    found: list[str] = []
    for part, positions in _positions(estimator):
        if names.index(name) not in positions:
            continue
        j = positions.index(names.index(name))
        for inner in fitted_parts(part):
            learned = getattr(inner, "categories_", None)
            if isinstance(learned, list) and len(learned) == len(positions):
                found += [v for v in learned[j] if isinstance(v, str) and v]
    return list(dict.fromkeys(found)) or ["a", "b"]


def random_frame(estimator, columns: list[Column], rows: int, seed: int = 0):
    """`rows` rows around what the estimator learned: numbers near its scalers' statistics, known categories."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    data = {}
    for column in columns:
        if column.dtype == TEXT:
            data[column.name] = pd.Series(rng.choice(categories(estimator, column.name), rows), dtype=object)
            continue
        centre, spread = scale(estimator, column.name)
        values = centre + spread * rng.standard_normal(rows)
        data[column.name] = np.round(values).astype(np.int64) if column.dtype == WHOLE else values.astype(np.float32)
    return pd.DataFrame(data)
