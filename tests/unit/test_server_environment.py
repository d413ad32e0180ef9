"""The embedded server's own environment: where it lives, which groups a repository needs, when it is
(re)built, and the process environment Triton gets from it. Nothing here runs pip or starts a server."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tritonkit import __version__
from tritonkit.cli import app
from tritonkit.errors import ServerStartError, UsageError
from tritonkit.server import TritonInstall
from tritonkit.server.environment import (
    ENV_VAR,
    GROUPS,
    MARKER,
    ServerEnvironment,
    check_groups,
    default_path,
    groups_for_repository,
)


def built(path: Path, groups: dict[str, list[str]]) -> ServerEnvironment:
    """A folder that looks like an environment the kit built with `groups`."""
    (path / "bin").mkdir(parents=True)
    (path / "bin" / "python3").symlink_to(sys.executable)
    (path / MARKER).write_text(json.dumps({"kit": __version__, "groups": groups}))
    return ServerEnvironment(path)


def test_default_path_is_keyed_by_kit_and_python_versions_when_no_variable(monkeypatch, tmp_path):
    monkeypatch.delenv(ENV_VAR, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    assert default_path() == tmp_path / "tritonkit" / "server-env" / f"{__version__}-py{version}"


def test_default_path_is_the_variable_when_set(monkeypatch, tmp_path):
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "server"))
    assert default_path() == tmp_path / "server"


def test_groups_for_repository_names_the_groups_its_backends_import(tmp_path):
    for name, backend in (("churn", "onnxruntime"), ("trees", "fil"), ("net", "pytorch"), ("tok", "python")):
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.pbtxt").write_text(f'name: "{name}"\n  backend : "{backend}"\nmax_batch_size: 8\n')
    assert groups_for_repository(tmp_path) == {"trees", "torch"}


def test_check_groups_lists_the_valid_ones_when_a_group_is_unknown():
    with pytest.raises(UsageError, match="group 'gpu' is not one of: base, trees, torch"):
        check_groups(["trees", "gpu"])
    assert check_groups(["torch", "trees"]) == ["base", "trees", "torch"]


def test_missing_is_empty_when_the_marker_holds_the_groups_as_required(tmp_path):
    environment = built(tmp_path / "env", {"base": list(GROUPS["base"])})
    assert environment.managed
    assert environment.missing() == []
    assert environment.missing(["trees"]) == ["trees"]
    assert environment.ensure() is environment  # nothing to do: no pip, no lock


def test_outdated_names_a_group_when_its_requirements_changed(tmp_path):
    environment = built(tmp_path / "env", {"base": ["nvidia-pytriton", "numpy<2", "onnxruntime-gpu"]})
    assert environment.outdated() == ["base"]
    assert environment.missing() == ["base"]


def test_environment_the_kit_did_not_build_is_used_as_given(tmp_path):
    path = tmp_path / "image-python"
    (path / "bin").mkdir(parents=True)
    (path / "bin" / "python3").symlink_to(sys.executable)
    environment = ServerEnvironment(path)
    assert not environment.managed
    assert environment.missing(["torch"]) == []
    assert environment.ensure(["torch"]) is environment
    with pytest.raises(UsageError, match="did not build: it is never changed"):
        environment.ensure(rebuild=True)


def test_triton_gets_the_server_python_libraries_and_stub_and_no_pythonpath_when_launched(tmp_path):
    python = tmp_path / "env" / "bin" / "python3"
    install = TritonInstall(
        binary=tmp_path / "tritonserver",
        python_backend=tmp_path / "python",
        stubs=tmp_path / "stubs",
        libs=tmp_path / "libs",
        python=python,
        python_version="3.11",
    )
    env = install.environment({"PATH": "/usr/bin", "PYTHONPATH": "/user/site", "LD_LIBRARY_PATH": "/opt/lib"})
    assert env["PATH"].split(":")[0] == str(python.parent)
    assert env["LD_LIBRARY_PATH"] == f"{tmp_path / 'libs'}:/opt/lib"
    assert "PYTHONPATH" not in env
    with pytest.raises(ServerStartError, match="no Python backend stub for Python 3.11"):
        install.stub()
    (install.stubs / "3.11").mkdir(parents=True)
    (install.stubs / "3.11" / "triton_python_backend_stub").touch()
    assert install.stub() == install.stubs / "3.11" / "triton_python_backend_stub"


def test_triton_keeps_the_callers_pythonpath_when_its_environment_is_given_as_it_is(tmp_path):
    install = TritonInstall(
        binary=tmp_path / "tritonserver",
        python_backend=tmp_path / "python",
        stubs=tmp_path / "stubs",
        libs=tmp_path / "libs",
        python=Path("/usr/bin/python3"),
        python_version="3.11",
        isolated=False,
    )
    env = install.environment({"PATH": "/bin", "PYTHONPATH": "/carried/site"})
    assert env["PYTHONPATH"] == "/carried/site"
    assert env["PATH"] == "/usr/bin:/bin"


def test_server_env_prints_its_path_when_asked(monkeypatch, tmp_path):
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "server"))
    result = CliRunner().invoke(app, ["server-env", "--print-path"])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == str(tmp_path / "server")
    assert not (tmp_path / "server").exists()


def test_server_env_refuses_an_unknown_group_when_asked_for_one(monkeypatch, tmp_path):
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "server"))
    result = CliRunner().invoke(app, ["server-env", "--with", "trees,gpu"])
    assert result.exit_code == 2
    assert "group 'gpu' is not one of: base, trees, torch" in result.output
    assert not (tmp_path / "server").exists()
