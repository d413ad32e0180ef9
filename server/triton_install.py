"""Where the embedded Triton comes from and what it needs around it: the binary and backends that the
nvidia-pytriton wheel ships in the server's own environment (server/environment.py), the process
environment and backend directory assembled for it, free ports, a repository check.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from tritonkit.errors import RepositoryError, ServerStartError
from tritonkit.server.environment import ServerEnvironment

ORT_BACKEND = Path(__file__).parent / "backends" / "onnxruntime" / "model.py"
FIL_BACKEND = Path(__file__).parent / "backends" / "fil" / "model.py"
TORCH_BACKEND = Path(__file__).parent / "backends" / "pytorch" / "model.py"


@dataclass(frozen=True)
class TritonInstall:
    """Where the pieces of the tritonserver that nvidia-pytriton ships live, in the server's environment."""

    binary: Path
    python_backend: Path
    stubs: Path
    libs: Path
    python: Path  # the server environment's python3: the stub runs the Python backends with it
    python_version: str  # "3.11": which stub
    isolated: bool = True  # the kit built the environment: the caller's PYTHONPATH stays out of it

    @classmethod
    def locate(cls, groups: Iterable[str] = (), environment: ServerEnvironment | None = None) -> TritonInstall:
        """The tritonserver of the server's environment, built first (with `groups`) when missing."""
        environment = (environment or ServerEnvironment.default()).ensure(groups)
        found = environment.query()
        if found["pytriton"] is None:
            raise ServerStartError(
                f"nvidia-pytriton is not installed in the server's environment {environment.path}: it provides the "
                "tritonserver binary (tritonkit server-env --rebuild)"
            )
        root = Path(found["pytriton"]) / "tritonserver"
        install = cls(
            binary=root / "bin" / "tritonserver",
            python_backend=root / "backends" / "python",
            stubs=root / "python_backend_stubs",
            libs=root.parent.parent / "nvidia_pytriton.libs",
            python=environment.python,
            python_version=found["version"],
            isolated=environment.managed,
        )
        if not install.binary.exists():
            raise ServerStartError(f"tritonserver binary not found at {install.binary}")
        return install

    def stub(self) -> Path:
        path = self.stubs / self.python_version / "triton_python_backend_stub"
        if not path.exists():
            raise ServerStartError(
                f"nvidia-pytriton has no Python backend stub for Python {self.python_version} ({path})"
            )
        return path

    def environment(self, base: Mapping[str, str]) -> dict[str, str]:
        """`base` (the caller's environment) as Triton needs it: its libraries on LD_LIBRARY_PATH, the server
        environment's python3 first on PATH (the stub runs model.py with it) and, in an environment the kit
        built, no PYTHONPATH or PYTHONHOME that would hand the stub the caller's packages (a numpy 2, say). An
        environment given as it is ($TRITONKIT_SERVER_ENV naming a Python the kit did not build) keeps them:
        its packages may live there (scripts/device-check.sh)."""
        hidden = ("PYTHONPATH", "PYTHONHOME") if self.isolated else ()
        env = {k: v for k, v in base.items() if k not in hidden}
        env["LD_LIBRARY_PATH"] = os.pathsep.join(filter(None, [str(self.libs), env.get("LD_LIBRARY_PATH")]))
        env["PATH"] = os.pathsep.join(filter(None, [str(self.python.parent), env.get("PATH")]))
        return env


def assemble_backends(install: TritonInstall, dest: Path) -> Path:
    """Builds the backend directory: `python/` (backend + stub) and the Python-based `onnxruntime/`, `fil/`
    and `pytorch/`."""
    python_dir = dest / "python"
    python_dir.mkdir(parents=True, exist_ok=True)
    for item in install.python_backend.iterdir():
        if item.is_file():
            shutil.copy2(item, python_dir / item.name)
    shutil.copy2(install.stub(), python_dir / "triton_python_backend_stub")
    for name, source in (("onnxruntime", ORT_BACKEND), ("fil", FIL_BACKEND), ("pytorch", TORCH_BACKEND)):
        (dest / name).mkdir(exist_ok=True)
        shutil.copy2(source, dest / name / "model.py")
    return dest


def die_with_parent():
    """A preexec_fn asking Linux to SIGTERM the server when the process that started it dies (kill -9
    included), so no orphaned Triton keeps the ports. Linux ties this to the forking thread, hence only
    used from the main thread; None elsewhere."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    pr_set_pdeathsig = 1

    def arm() -> None:
        libc.prctl(pr_set_pdeathsig, signal.SIGTERM)

    return arm


def port_in_use(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return True
    return False


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def check_repository(path: Path) -> None:
    """Raises RepositoryError unless `path` is a folder holding at least one model folder."""
    if not path.exists():
        raise RepositoryError(f"model repository {path} does not exist (run `tritonkit export ...` first)")
    if not path.is_dir():
        raise RepositoryError(f"model repository {path} is not a folder")
    models = [p for p in path.iterdir() if p.is_dir() and not p.name.startswith(".")]
    if not models:
        raise RepositoryError(f"model repository {path} is empty: it needs one folder per model")
