"""Numerical parity between an exported model and its source framework."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tritonkit.errors import ExportError


@dataclass(frozen=True)
class Parity:
    """Largest absolute and relative differences of one output, and the tolerance they were held to."""

    output: str
    max_abs_error: float
    max_rel_error: float
    atol: float
    rtol: float

    @property
    def ok(self) -> bool:
        return self.max_abs_error <= self.atol or self.max_rel_error <= self.rtol

    def __str__(self) -> str:
        return (
            f"{self.output}: max abs error {self.max_abs_error:.3g} (atol {self.atol:g}), "
            f"max rel error {self.max_rel_error:.3g} (rtol {self.rtol:g})"
        )


def compare(output: str, expected: np.ndarray, actual: np.ndarray, atol: float, rtol: float) -> Parity:
    """Measures how far `actual` is from `expected` element-wise."""
    expected, actual = np.asarray(expected), np.asarray(actual)
    if expected.shape != actual.shape:
        raise ExportError(f"output `{output}` has shape {list(actual.shape)}, source gives {list(expected.shape)}")
    diff = np.abs(expected.astype(np.float64) - actual.astype(np.float64))
    rel = diff / np.maximum(np.abs(expected.astype(np.float64)), 1e-12)
    return Parity(output, float(diff.max(initial=0.0)), float(rel.max(initial=0.0)), atol, rtol)


def check(results: list[Parity]) -> list[Parity]:
    """Raises ExportError naming every output whose errors exceed their tolerance."""
    bad = [r for r in results if not r.ok]
    if bad:
        raise ExportError("exported model does not match its source: " + "; ".join(map(str, bad)))
    return results


@dataclass(frozen=True)
class LabelAgreement:
    """How many predicted labels differ between the source model and the exported one."""

    output: str
    rows: int
    mismatches: int  # differing labels where the source's vote was not a tie: each one fails the export
    ties: int  # differing labels at a tie of the two highest probabilities (within atol)

    @property
    def ok(self) -> bool:
        return self.mismatches == 0

    def __str__(self) -> str:
        return (
            f"{self.output}: {self.mismatches} of {self.rows} labels differ"
            f" ({self.ties} more at probability ties, allowed)"
        )


def label_agreement(output: str, expected, served, proba, atol: float) -> LabelAgreement:
    """Labels compared as text; a difference where the two highest probabilities tie (within atol) is allowed."""
    expected, served = np.asarray(expected).reshape(-1), np.asarray(served).reshape(-1)
    differ = _text(expected) != _text(served)
    ties = np.zeros(len(expected), dtype=bool)
    if proba is not None and np.asarray(proba).shape[1] > 1:
        top = np.sort(np.asarray(proba), axis=1)
        ties = top[:, -1] - top[:, -2] <= atol
    return LabelAgreement(output, len(expected), int((differ & ~ties).sum()), int((differ & ties).sum()))


def _text(values: np.ndarray) -> np.ndarray:
    if values.dtype == object:
        values = np.array([v.decode() if isinstance(v, bytes) else v for v in values], dtype=object)
    return values.astype(str)
