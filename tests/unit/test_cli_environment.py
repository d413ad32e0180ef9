"""The command line's environment rule: every option reads TRITONKIT_<COMMAND>_<OPTION>, shared ones a short name too."""

from __future__ import annotations

import pytest

from tritonkit.cli import cli


def options(command, path=("TRITONKIT",)):
    if hasattr(command, "commands"):
        for name, sub in command.commands.items():
            yield from options(sub, (*path, name.upper().replace("-", "_")))
        return
    for param in command.params:
        if param.param_type_name == "option" and param.name != "help":
            yield "_".join(path), command, param


def test_every_option_reads_its_command_variable_when_listed():
    missing = []
    for prefix, _, param in options(cli()):
        flag = next(o for o in param.opts if o.startswith("--"))
        own = f"{prefix}_{flag.lstrip('-').upper().replace('-', '_')}"
        envvars = [param.envvar] if isinstance(param.envvar, str) else list(param.envvar or ())
        if own not in envvars or not param.show_envvar:
            missing.append(own)
    assert not missing, f"options without their environment variable: {missing}"


@pytest.mark.parametrize(
    ("path", "argv", "environment", "expected"),
    [
        (
            ("score",),
            ["-m", "churn", "-o", "out.parquet"],
            {"TRITONKIT_SCORE_CHUNK_ROWS": "1024"},
            ("chunk_rows", 1024),
        ),
        (
            ("score",),
            ["-m", "churn", "-o", "o"],
            {"TRITONKIT_SCORE_ID_COLUMN": "customer_id"},
            ("id_column", "customer_id"),
        ),
        (("predict",), ["-m", "churn"], {"TRITONKIT_PREDICT_INPUT": '{"a": 1}'}, ("input", '{"a": 1}')),
        (("predict",), ["-m", "churn", "-i", "{}"], {"TRITONKIT_URL": "10.0.0.1:8001"}, ("url", "10.0.0.1:8001")),
        (("export", "sklearn"), ["m.joblib"], {"TRITONKIT_EXPORT_SKLEARN_NAME": "rf"}, ("name", "rf")),
        (
            ("predict",),
            ["-m", "churn", "-i", "{}"],
            {"TRITONKIT_HEADER": "Authorization: Bearer a b\nX-Team: ml"},
            ("header", ("Authorization: Bearer a b", "X-Team: ml")),
        ),
    ],
)
def test_option_takes_its_value_from_the_environment_when_not_on_the_command_line(
    monkeypatch, path, argv, environment, expected
):
    for key, value in environment.items():
        monkeypatch.setenv(key, value)
    command = cli()
    for name in path:
        command = command.commands[name]
    context = command.make_context(" ".join(path), list(argv))
    name, value = expected
    assert tuple(context.params[name]) == value if isinstance(value, tuple) else context.params[name] == value


def test_command_line_wins_over_the_environment_when_both_given(monkeypatch):
    monkeypatch.setenv("TRITONKIT_SCORE_CHUNK_ROWS", "1024")
    context = cli().commands["score"].make_context("score", ["-m", "m", "-o", "o", "--chunk-rows", "7"])
    assert context.params["chunk_rows"] == 7
