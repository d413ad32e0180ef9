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
import threading
import time
from pathlib import Path

from tritonkit.atomic import TEMPORARY_MARK
from tritonkit.errors import OutputInUseError

logger = logging.getLogger(__name__)


def lock_path(output: Path) -> Path:
    return output.with_name(f".{output.name}.lock")


class OutputLock:
    """`with OutputLock(output):` holds the output for this process, or raises OutputInUseError naming the holder."""

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
                raise OutputInUseError(
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
    run = f", run id {holder['run_id']}" if holder.get("run_id") else ""
    return f"pid {holder.get('pid', '?')} on host {holder.get('host', '?')}, started {when}{run}"


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


class ObjectLock:
    """The lock's object storage form: a lease object `.<output>.lock` beside the output.

    Object stores have no advisory locks, and the kit does not rely on conditional writes (not every
    S3-compatible store, nor pyarrow's clients, offer them), so the holder records itself (pid, host,
    start time, a token) and renews the lease every `HEARTBEAT_S` seconds. A lock is free when there is
    none, when its heartbeat is older than `LEASE_S` (the holder died: kill -9, a lost node), when its
    holder was on this host and that pid is gone, or when it belongs to the same run id
    (`TRITONKIT_RUN_ID`: a retried pod of the same run). A live holder's lock is refused, naming it. Two
    runs starting within the same instant could both write the lease: each reads it back after writing,
    and the holder checks it again before committing the output, so one of them stops with a clear
    error. Even then nothing is corrupted: objects are written whole, and both runs would write the same
    output.
    """

    HEARTBEAT_S = 5.0
    LEASE_S = 30.0

    def __init__(self, output, run_id: str = ""):
        self.output = output
        self.where = output.sibling(f".{output.name}.lock")
        self.run_id = run_id
        self.token = os.urandom(8).hex()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.started_at = time.time()

    def _holder(self) -> dict:
        try:
            return json.loads(self.where.read_bytes())
        except (FileNotFoundError, ValueError):
            return {}

    def _free(self, holder: dict) -> bool:
        if not holder or holder.get("token") == self.token:
            return True
        if time.time() - holder.get("heartbeat_at", 0) > self.LEASE_S:
            return True
        if self.run_id and holder.get("run_id") == self.run_id:
            return True
        return holder.get("host") == socket.gethostname() and not _alive(int(holder.get("pid", 0)))

    def _write(self) -> None:
        now = time.time()
        holder = {"pid": os.getpid(), "host": socket.gethostname(), "started_at": self.started_at}
        holder |= {"heartbeat_at": now, "run_id": self.run_id, "token": self.token}
        self.where.write_bytes(json.dumps(holder).encode())

    def acquire(self) -> ObjectLock:
        holder = self._holder()
        if not self._free(holder):
            raise OutputInUseError(
                f"output {self.output} is in use by another run ({describe(holder)}, last heartbeat "
                f"{time.time() - holder.get('heartbeat_at', 0):.0f} s ago; a holder silent for {self.LEASE_S:.0f} s "
                "is taken for dead); one run per output at a time: wait for it, or choose another --output"
            )
        self._write()
        self.check()
        self._thread = threading.Thread(target=self._renew, name="tritonkit-lease", daemon=True)
        self._thread.start()
        return self

    def check(self) -> None:
        """Raises OutputInUseError when another run has taken the lock (it wrote the lease after this one)."""
        holder = self._holder()
        if holder.get("token") != self.token:
            raise OutputInUseError(
                f"output {self.output} was taken by another run ({describe(holder)}) while this one ran; "
                "this run stops without committing its output"
            )

    def _renew(self) -> None:
        while not self._stop.wait(self.HEARTBEAT_S):
            try:
                if self._holder().get("token") != self.token:
                    return  # lost: `check` says so before the commit
                self._write()
            except OSError as e:  # a blip: the next heartbeat tries again
                logger.warning("could not renew the lock on %s: %s", self.output, e)

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        try:
            if self._holder().get("token") == self.token:
                self.where.delete()
        except OSError as e:
            logger.warning("could not remove the lock %s: %s (it expires by itself)", self.where, e)

    def __enter__(self) -> ObjectLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
