"""Files that appear whole or not at all: written under a temporary name beside the target, then renamed.

Every file the kit writes for others to read (parts, outputs, reports, config.pbtxt) goes through here:
the temporary name is `.<name>.tmp-<pid>` in the target's folder (same file system, so the rename is
atomic), the data is flushed to disk before the rename, and a failure removes the temporary file.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

TEMPORARY_MARK = ".tmp-"


def temporary_path(target: Path) -> Path:
    """Where `target` is written before it is renamed into place."""
    target = Path(target)
    return target.with_name(f".{target.name}{TEMPORARY_MARK}{os.getpid()}")


def commit(temporary: Path, target: Path, mode: int | None = None) -> None:
    """Flushes `temporary` to disk and renames it to `target` (readable by others with `mode`)."""
    with open(temporary, "rb") as handle:
        os.fsync(handle.fileno())
    if mode is not None:
        os.chmod(temporary, mode)
    os.replace(temporary, target)


@contextmanager
def atomic_file(target: Path, binary: bool = True, mode: int | None = None) -> Iterator:
    """An open file whose contents become `target` when the block ends without an error."""
    target = Path(target)
    temporary = temporary_path(target)
    try:
        with open(temporary, "wb" if binary else "w", **({} if binary else {"encoding": "utf-8"})) as handle:
            yield handle
        commit(temporary, target, mode)
    except BaseException:  # disk full, kill: no half-written temporary file left behind
        temporary.unlink(missing_ok=True)
        raise


def write_bytes(target: Path, data: bytes, mode: int | None = None) -> None:
    with atomic_file(target, mode=mode) as handle:
        handle.write(data)


def write_text(target: Path, text: str, mode: int | None = None) -> None:
    with atomic_file(target, binary=False, mode=mode) as handle:
        handle.write(text)
