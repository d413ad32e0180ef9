"""Where the embedded Triton comes from and what it needs around it: the binary and backends that the
nvidia-pytriton wheel ships, the backend directory assembled for it, free ports, a repository check.
"""

from __future__ import annotations

import importlib.util
import shutil
import signal
import socket
import sys
from dataclasses import dataclass
from pathlib import Path

from tritonkit.errors import RepositoryError, ServerStartError

ORT_BACKEND = Path(__file__).parent / "backends" / "onnxruntime" / "model.py"
FIL_BACKEND = Path(__file__).parent / "backends" / "fil" / "model.py"
TORCH_BACKEND = Path(__file__).parent / "backends" / "pytorch" / "model.py"


@dataclass(frozen=True)
class TritonInstall:
    """Where the pieces of the tritonserver that nvidia-pytriton ships live."""

    binary: Path
    python_backend: Path
    stubs: Path
    libs: Path

    @classmethod
    def locate(cls) -> TritonInstall:
        spec = importlib.util.find_spec("pytriton")
        if spec is None or not spec.submodule_search_locations:
            raise ServerStartError("nvidia-pytriton is not installed: it provides the tritonserver binary")
        root = Path(list(spec.submodule_search_locations)[0]) / "tritonserver"
        install = cls(
            binary=root / "bin" / "tritonserver",
            python_backend=root / "backends" / "python",
            stubs=root / "python_backend_stubs",
            libs=root.parent.parent / "nvidia_pytriton.libs",
        )
        if not install.binary.exists():
            raise ServerStartError(f"tritonserver binary not found at {install.binary}")
        return install

    def stub(self) -> Path:
        version = f"{sys.version_info.major}.{sys.version_info.minor}"
        path = self.stubs / version / "triton_python_backend_stub"
        if not path.exists():
            raise ServerStartError(f"nvidia-pytriton has no Python backend stub for Python {version} ({path})")
        return path


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
