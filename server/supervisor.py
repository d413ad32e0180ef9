"""Keeps the embedded Triton serving: an exit nobody asked for is reported as a crash and, by policy, restarted.

`tritonkit serve` runs `Supervisor(server, RestartPolicy(...)).run()` in its main thread. When Triton
exits unasked (SIGSEGV, SIGABRT, the OOM killer, kill -9, any exit code), the supervisor reads the exit
(code, signal name, the tail of Triton's log) and either raises `ServerCrashedError` with it
(`--restart no`) or restarts Triton on the same ports after a backoff (`--restart on-failure`, the
default): 1 s, doubling to 30 s, back to 1 s after a run of a minute. Restarts are counted in
`tritonkit_triton_restarts_total`. Meanwhile the guard keeps the HTTP port and answers 502 (which the
kit's clients retry); gRPC clients see the port closed and retry as well.
"""

from __future__ import annotations

import logging
import re
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tritonkit.errors import ServerCrashedError, ServerStartError, UsageError

logger = logging.getLogger(__name__)

RESTART_MODES = ("on-failure", "no")
_FRAME = re.compile(r"^\s*\d+# ")
_SPACES = re.compile(r"\s{3,}")


@dataclass(frozen=True)
class RestartPolicy:
    """When and how fast Triton is restarted after an exit nobody asked for.

    Attributes:
        mode: "on-failure" restarts after any such exit; "no" reports it and stops.
        backoff_s: wait before the first restart; doubles for each restart in a row, up to max_backoff_s.
        max_backoff_s: the longest wait.
        stable_s: a run at least this long resets the wait to backoff_s.
        max_failed_starts: restarts in a row that fail to start (a model no longer loads) before giving up.
    """

    mode: str = "on-failure"
    backoff_s: float = 1.0
    max_backoff_s: float = 30.0
    stable_s: float = 60.0
    max_failed_starts: int = 5

    def __post_init__(self):
        if self.mode not in RESTART_MODES:
            raise UsageError(f"--restart is {self.mode!r}; expected one of {', '.join(RESTART_MODES)}")


@dataclass(frozen=True)
class TritonExit:
    """How Triton ended: its exit code (negative: the signal that killed it) and the last lines of its log."""

    code: int
    log_file: Path | None
    tail: tuple[str, ...]
    ran_s: float

    @classmethod
    def read(cls, code: int, log_file: Path | None, ran_s: float, lines: int = 6) -> TritonExit:
        return cls(code, log_file, _tail(log_file, lines), ran_s)

    @property
    def signal_name(self) -> str | None:
        if self.code >= 0:
            return None
        try:
            return signal.Signals(-self.code).name
        except ValueError:
            return f"signal {-self.code}"

    def describe(self) -> str:
        how = (
            f"was killed by {self.signal_name} (signal {-self.code})"
            if self.code < 0
            else f"exited with code {self.code}"
        )
        return f"Triton crashed: it {how} after {self.ran_s:.0f} s, unasked"

    def report(self, outcome: str = "") -> str:
        """describe(), what happens next and the tail of Triton's log, for a person."""
        said = self.describe() + (f"; {outcome}" if outcome else "")
        if not self.tail:
            return f"{said}; its log is {self.log_file}"
        shown = "\n".join(f"  | {line}" for line in self.tail)
        return f"{said}; the last lines of its log ({self.log_file}):\n{shown}"

    def error(self, outcome: str) -> ServerCrashedError:
        return ServerCrashedError(
            self.report(outcome), code=self.code, signal_name=self.signal_name, log_file=self.log_file
        )


class Supervisor:
    """Waits on an embedded server and restarts Triton by `policy` until `request_stop()`.

    Args:
        server: a started `EmbeddedServer`.
        policy: the restart policy.
        notify: called with one line per event (crash, restart); logs a warning when None.
    """

    def __init__(self, server, policy: RestartPolicy | None = None, notify: Callable[[str], None] | None = None):
        self.server, self.policy = server, policy or RestartPolicy()
        self.notify = notify or (lambda line: logger.warning("%s", line))
        self.restarts = 0
        self._stopping = threading.Event()

    def request_stop(self) -> None:
        """Asks Triton to drain and exit; safe in a signal handler. `run()` then returns."""
        self._stopping.set()
        self.server.request_stop()

    def run(self) -> int:
        """Serves until asked to stop (returns Triton's exit code); raises ServerCrashedError when a crash
        is not to be restarted or restarting keeps failing."""
        backoff = self.policy.backoff_s
        while True:
            started = time.monotonic()
            code = self.server.wait()
            if self._stopping.is_set():
                self.server.stop()
                return code
            crash = TritonExit.read(code, self.server.log_file, time.monotonic() - started)
            if self.policy.mode == "no":
                self.server.stop()
                raise crash.error("not restarted (--restart no)")
            if crash.ran_s >= self.policy.stable_s:
                backoff = self.policy.backoff_s
            if not self._restart(crash, backoff):
                self.server.stop()
                return 0
            backoff = min(backoff * 2, self.policy.max_backoff_s)

    def _restart(self, crash: TritonExit, backoff: float) -> bool:
        """Restarts Triton after `backoff` s, again on failure; False when asked to stop meanwhile."""
        self.notify(crash.report(f"restarting it in {backoff:.1f} s (--restart on-failure)"))
        for attempt in range(1, self.policy.max_failed_starts + 1):
            if self._stopping.wait(backoff):
                return False
            try:
                self.server.restart()
            except ServerStartError as e:
                if self._stopping.is_set():
                    return False
                if attempt == self.policy.max_failed_starts:
                    self.server.stop()
                    raise crash.error(f"{attempt} restarts in a row failed, the last with: {e}") from None
                backoff = min(backoff * 2, self.policy.max_backoff_s)
                self.notify(f"restart {attempt} failed: {e}; trying again in {backoff:.1f} s")
                continue
            self.restarts += 1
            self.server.kit_metrics.restart()
            self.notify(f"Triton restarted (restart {self.restarts} since start)")
            return True
        return False


def _tail(path: Path | None, lines: int) -> tuple[str, ...]:
    """The last `lines` non-empty lines of a log, stack frames ("12# 0x...") left out and each line cut to
    200 characters; () when it cannot be read."""
    if path is None:
        return ()
    try:
        with open(path, "rb") as f:
            f.seek(0, 2)
            f.seek(max(0, f.tell() - 64 * 1024))
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return ()
    kept = [
        _SPACES.sub("  ", line.strip())[:200] for line in text.splitlines() if line.strip() and not _FRAME.match(line)
    ]
    return tuple(kept[-lines:])
