"""The embedded server's own Python environment, apart from the user's.

nvidia-pytriton (the tritonserver binary, the Python backend and its stubs) declares numpy<2, and the
Python backend's stub runs the kit's backends with whatever numpy it finds. So the server gets a virtual
environment of its own: nvidia-pytriton, numpy<2, onnxruntime and tokenizers (the `base` group), plus the
groups that other backends import (`trees` for `fil`, `torch` for `pytorch`). The user's environment keeps
its own numpy (2 is fine there).

Where: `$TRITONKIT_SERVER_ENV`, else `$XDG_CACHE_HOME/tritonkit/server-env/<kit version>-py<X.Y>`
(`~/.cache/...`). Created on first use (`tritonkit serve`, `EmbeddedServer.start()`) or by
`tritonkit server-env`, under a file lock (several processes may start servers at once), built in a
scratch folder and renamed into place; a marker file records the groups installed and their
requirements, so a group whose requirements changed is installed again. `$TRITONKIT_SERVER_ENV` may also
name a Python environment the kit did not build (no marker; e.g. an image's system Python with
nvidia-pytriton installed): it is used as it is, never changed.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil
import subprocess
import sys
from collections.abc import Iterable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tritonkit import __version__
from tritonkit.errors import ServerStartError, UsageError

logger = logging.getLogger(__name__)

ENV_VAR = "TRITONKIT_SERVER_ENV"
MARKER = "tritonkit-server-env.json"
GROUPS: dict[str, tuple[str, ...]] = {
    # the tritonserver binary and stubs; the onnxruntime backend (ONNX Runtime's CPU build: the embedded server
    # is the CPU path, NVIDIA's container serves GPUs); the minilm tokenizer model (server/python_models)
    "base": ("nvidia-pytriton>=0.7,<0.8", "numpy>=1.26,<2", "onnxruntime>=1.20", "tokenizers>=0.21"),
    # the Python-based `fil` backend serves XGBoost and LightGBM models with the libraries' own predict
    "trees": ("xgboost-cpu>=2", "lightgbm>=4"),
    # the Python-based `pytorch` backend (the CPU build; pip takes it from a local file here)
    "torch": ("torch==2.13.0",),
}
BACKEND_GROUPS = {"fil": "trees", "pytorch": "torch"}  # config.pbtxt `backend:` -> the group its backend imports
# Installed without their dependencies: only nvidia-pytriton's binary is used, not its Python API (which
# would bring tritonclient, gevent, pyzmq, ...).
NO_DEPS = ("nvidia-pytriton",)
PIP_TIMEOUT_S = 1800

_QUERY = """
import importlib.util, json, sys
spec = importlib.util.find_spec("pytriton")
print(json.dumps({"version": "%d.%d" % sys.version_info[:2],
                  "pytriton": list(spec.submodule_search_locations)[0] if spec else None}))
"""


def default_path() -> Path:
    """`$TRITONKIT_SERVER_ENV`, else the cache folder keyed by the kit's and this Python's versions."""
    given = os.environ.get(ENV_VAR)
    if given:
        return Path(given).expanduser().absolute()
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "tritonkit" / "server-env" / f"{__version__}-py{sys.version_info.major}.{sys.version_info.minor}"


def groups_for_repository(repository: Path) -> set[str]:
    """The groups that the backends named in a model repository's config.pbtxt files import."""
    import re

    named = re.compile(r'^\s*backend\s*:\s*"([^"]+)"', re.MULTILINE)
    groups = set()
    for config in Path(repository).glob("*/config.pbtxt"):
        try:
            text = config.read_text(errors="replace")
        except OSError:
            continue
        groups.update(BACKEND_GROUPS[b] for b in named.findall(text) if b in BACKEND_GROUPS)
    return groups


def check_groups(groups: Iterable[str]) -> list[str]:
    """`groups` in GROUPS order, `base` first; UsageError naming the valid ones for an unknown group."""
    wanted = {"base", *groups}
    unknown = sorted(wanted - set(GROUPS))
    if unknown:
        raise UsageError(f"server environment group {unknown[0]!r} is not one of: {', '.join(GROUPS)}")
    return [g for g in GROUPS if g in wanted]


@dataclass(frozen=True)
class ServerEnvironment:
    """The Python environment the embedded server runs from: its `bin/python3` and the tritonserver in it."""

    path: Path

    @classmethod
    def default(cls) -> ServerEnvironment:
        return cls(default_path())

    @property
    def python(self) -> Path:
        return self.path / "bin" / "python3"

    @property
    def marker(self) -> Path:
        return self.path / MARKER

    @property
    def managed(self) -> bool:
        """True unless the path holds a Python environment the kit did not build (used as given)."""
        return self.marker.exists() or not self.python.exists()

    def installed(self) -> dict[str, list[str]]:
        """Group name -> the requirements it was installed with (empty when not built by the kit)."""
        try:
            return json.loads(self.marker.read_text())["groups"]
        except (OSError, ValueError, KeyError):
            return {}

    def missing(self, groups: Iterable[str] = ()) -> list[str]:
        """The groups to install before the server can run: absent, or installed with other requirements."""
        if not self.managed:
            return []
        installed = self.installed()
        return [g for g in check_groups(groups) if installed.get(g) != list(GROUPS[g])]

    def outdated(self) -> list[str]:
        """Installed groups whose requirements are no longer the kit's (a newer kit, say)."""
        return [g for g, requirements in self.installed().items() if list(GROUPS.get(g, ())) != requirements]

    def ensure(self, groups: Iterable[str] = (), rebuild: bool = False) -> ServerEnvironment:
        """Builds the environment or adds groups as needed (once; other processes wait on the lock).

        A group that is missing is installed in place; one whose requirements changed makes a rebuild from
        scratch (with every group it held), so no package of the old set stays behind.
        """
        groups = check_groups(groups)
        if not self.managed:
            if rebuild:
                raise UsageError(f"{self.path} is a Python environment tritonkit did not build: it is never changed")
            return self
        if not rebuild and not self.missing(groups):
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with _locked(self.path.with_name(self.path.name + ".lock")):
            if rebuild or not self.marker.exists() or self.outdated():
                self._build(check_groups([*groups, *(g for g in self.installed() if g in GROUPS)]))
            else:
                for group in self.missing(groups):  # checked again: another process may have done it
                    self._pip(self.python, GROUPS[group], f"group {group}")
                    self._record(self.path, {**self.installed(), group: list(GROUPS[group])})
        return self

    def _build(self, groups: list[str]) -> None:
        scratch = self.path.with_name(f"{self.path.name}.build-{os.getpid()}")
        shutil.rmtree(scratch, ignore_errors=True)
        logger.warning("building the embedded server's environment in %s (once): %s", self.path, ", ".join(groups))
        try:
            _run([sys.executable, "-m", "venv", str(scratch)], f"python -m venv {scratch}", timeout_s=300)
            python = scratch / "bin" / "python3"
            self._pip(python, [r for g in groups for r in GROUPS[g]], ", ".join(groups))
            self._record(scratch, {g: list(GROUPS[g]) for g in groups})
            if self.path.exists():
                old = self.path.with_name(f"{self.path.name}.old-{os.getpid()}")
                os.rename(self.path, old)
                shutil.rmtree(old, ignore_errors=True)
            os.rename(scratch, self.path)  # the venv only ever runs as `bin/python3 -m ...`: it may move
        finally:
            shutil.rmtree(scratch, ignore_errors=True)

    def _pip(self, python: Path, requirements: Iterable[str], what: str) -> None:
        requirements = list(requirements)
        alone = [r for r in requirements if r.startswith(NO_DEPS)]
        for flags, part in ((["--no-deps"], alone), ([], [r for r in requirements if r not in alone])):
            if part:
                command = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *flags, *part]
                _run(command, f"pip install {' '.join(part)} ({what})", timeout_s=PIP_TIMEOUT_S)

    @staticmethod
    def _record(path: Path, groups: dict[str, list[str]]) -> None:
        from tritonkit.atomic import write_text

        write_text(path / MARKER, json.dumps({"kit": __version__, "groups": groups}, indent=1) + "\n")

    def query(self) -> dict:
        """This environment's Python version ("3.11") and the pytriton package folder (None when absent)."""
        if not self.python.exists():
            raise ServerStartError(f"the embedded server's environment {self.path} has no bin/python3")
        done = subprocess.run([str(self.python), "-c", _QUERY], capture_output=True, text=True, timeout=60)
        if done.returncode != 0:
            raise ServerStartError(f"{self.python} failed: {done.stderr.strip()[-500:]}")
        return json.loads(done.stdout)


def _run(command: list[str], what: str, timeout_s: float) -> None:
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        raise ServerStartError(
            f"building the embedded server's environment: {what} took over {timeout_s:.0f} s"
        ) from None
    if done.returncode != 0:
        tail = " | ".join((done.stderr or done.stdout).strip().splitlines()[-3:])
        raise ServerStartError(f"building the embedded server's environment: {what} failed: {tail}")


@contextmanager
def _locked(path: Path):
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
