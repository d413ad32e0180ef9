"""One run per output at a time, and no temporary file outlives the run that wrote it.

`OutputLock` is an advisory lock (flock) on `.<output>.lock` beside the output: the kernel drops it
when its process ends, kill -9 included, so a lock is never left held by a dead run. A second run on
the same output is refused at once, naming the holder (pid, host, start time) that the lock file
records. `remove_stale_temporaries` runs under the lock: only the holder writes an output's
temporary files (`.<name>.tmp-<pid>`, see `tritonkit.atomic`), so any other pid's are left over from
a run that was killed, and are removed.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import socket
import time
from pathlib import Path

from tritonkit.atomic import TEMPORARY_MARK
from tritonkit.errors import UsageError

logger = logging.getLogger(__name__)


def lock_path(output: Path) -> Path:
    return output.with_name(f".{output.name}.lock")


class OutputLock:
    """`with OutputLock(output):` holds the output for this process, or raises UsageError naming the holder."""

    def __init__(self, output: Path):
        self.output = Path(output)
        self.path = lock_path(self.output)
        self._fd: int | None = None

    def acquire(self) -> OutputLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read(fd)
                os.close(fd)
                raise UsageError(
                    f"output {self.output} is in use by another run ({describe(holder)}); "
                    "one run per output at a time: wait for it, or choose another --output"
                ) from None
            # The file may have been removed by the holder that just released it: lock the one on disk.
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        holder = {"pid": os.getpid(), "host": socket.gethostname(), "started_at": time.time()}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(holder).encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            self.path.unlink(missing_ok=True)  # while still held: the next run locks a new file
        finally:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> OutputLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _read(fd: int) -> dict:
    try:
        return json.loads(os.pread(fd, 4096, 0) or b"{}")
    except ValueError:
        return {}  # the holder is writing it this very moment


def describe(holder: dict) -> str:
    """E.g. "pid 4242 on host batch-7, started 2026-11-26 13:45:00 UTC"."""
    if not holder:
        return "holder not recorded yet"
    started = holder.get("started_at")
    when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(started)) if started else "at an unknown time"
    return f"pid {holder.get('pid', '?')} on host {holder.get('host', '?')}, started {when}"


def remove_stale_temporaries(folder: Path, names: list[str] | None = None) -> list[Path]:
    """Removes `.<name>.tmp-<pid>` files in `folder` (only of `names` when given) not written by this process.

    Call it holding the output's lock. Returns what was removed.
    """
    removed = []
    if not folder.is_dir():
        return removed
    prefixes = None if names is None else tuple(f".{n}{TEMPORARY_MARK}" for n in names)
    for path in folder.iterdir():
        name = path.name
        if not name.startswith(".") or TEMPORARY_MARK not in name:
            continue
        if prefixes is not None and not name.startswith(prefixes):
            continue
        pid = name.rpartition(TEMPORARY_MARK)[2]
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        path.unlink(missing_ok=True)
        removed.append(path)
        logger.info("removed %s, left by a run that was killed (pid %s)", path, pid)
    return removed
