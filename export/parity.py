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
