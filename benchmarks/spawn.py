"""Child processes started without fork() from a process that gevent has patched (any that imported Locust).

gevent's patched subprocess forks the whole parent (`gevent.os.fork_and_watch`). In `tritonkit bench`,
whose process also holds gRPC's, gevent's thread pool's and pyarrow's jemalloc threads, that fork()
once hung in the parent for 240 s while starting `locust --processes` (tests/integration/test_bench.py).
`os.posix_spawn` runs neither the libraries' fork handlers nor Python's before-fork hooks, and gevent's
child watcher (the one its own subprocess uses) reaps the child cooperatively. In an unpatched process
`run` is `subprocess.run`.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Mapping


def _gevent_patched() -> bool:
    monkey = sys.modules.get("gevent.monkey")
    return monkey is not None and monkey.is_module_patched("subprocess")


def run(command: list[str], timeout_s: float, env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess:
    """Runs `command` to its end (stdin empty; stdout and stderr captured as text), as `subprocess.run` would:
    raises `subprocess.TimeoutExpired` after killing it when it runs past `timeout_s`."""
    if not _gevent_patched():
        return subprocess.run(command, capture_output=True, text=True, timeout=timeout_s, env=env)
    import gevent
    from gevent.event import AsyncResult

    executable = shutil.which(command[0]) or command[0]
    loop = gevent.get_hub().loop
    loop.install_sigchld()  # as gevent's subprocess does: the loop reaps children on SIGCHLD
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        actions = [
            (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
            (os.POSIX_SPAWN_DUP2, out.fileno(), 1),
            (os.POSIX_SPAWN_DUP2, err.fileno(), 2),
        ]
        pid = os.posix_spawn(executable, command, dict(os.environ if env is None else env), file_actions=actions)
        # no yield to the hub between the spawn and the watcher: the child's SIGCHLD cannot be handled before
        watcher, status = loop.child(pid, False), AsyncResult()
        watcher.start(lambda: status.set(watcher.rstatus))
        try:
            try:
                code = os.waitstatus_to_exitcode(status.get(timeout=timeout_s))
                timed_out = False
            except gevent.Timeout:
                os.kill(pid, signal.SIGKILL)
                status.get(timeout=30)
                timed_out = True
        finally:
            watcher.stop()
        stdout, stderr = (_text(handle) for handle in (out, err))
    if timed_out:
        raise subprocess.TimeoutExpired(command, timeout_s, stdout, stderr)
    return subprocess.CompletedProcess(command, code, stdout, stderr)


def _text(handle) -> str:
    handle.seek(0)
    return handle.read().decode("utf-8", errors="replace")


def stop_group(process: subprocess.Popen, grace_s: float = 30.0) -> None:
    """Stops a child started with `start_new_session=True` and every process of its group: SIGTERM, then
    SIGKILL when it has not exited after `grace_s`."""
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(grace_s)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
