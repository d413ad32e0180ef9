"""Versioned model folders in a Triton model repository: `<repo>/<model>/<N>/` plus `config.pbtxt`."""

from __future__ import annotations

import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

from tritonkit.errors import ExportError


def versions(model_dir: Path) -> list[int]:
    """The numbered version folders of a model, ascending."""
    if not model_dir.is_dir():
        return []
    return sorted(int(p.name) for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit())


def next_version(model_dir: Path) -> int:
    existing = versions(model_dir)
    return existing[-1] + 1 if existing else 1


@contextmanager
def new_version(model_dir: Path, version: int | None = None, replace: bool = False):
    """Yields a scratch folder to fill; on success it becomes `<model_dir>/<version>/` in one rename.

    Without `version` the next number is taken and existing versions are left untouched. A pinned
    `version` that already exists is an error unless `replace` is true. A failure inside the block
    leaves the repository as it was.
    """
    model_dir.mkdir(parents=True, exist_ok=True)
    number = next_version(model_dir) if version is None else int(version)
    if number < 1:
        raise ExportError(f"--version must be 1 or more, got {number}")
    target = model_dir / str(number)
    if target.exists() and not replace:
        raise ExportError(
            f"version {number} of `{model_dir.name}` already exists at {target}; "
            "leave --version out to add the next one, or pass --replace"
        )
    scratch = Path(tempfile.mkdtemp(prefix=f".{number}-", dir=model_dir))
    try:
        yield number, scratch
        if target.exists():
            shutil.rmtree(target)
        for path in [scratch, *scratch.rglob("*")]:  # mkdtemp makes it private: Triton may run as another user
            path.chmod(0o755 if path.is_dir() else 0o644)
        scratch.rename(target)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
