"""`tritonkit score --watch DIR`: score each file that lands in a folder, once, across restarts.

Micro-batches for near-real-time pipelines: an upstream job drops Parquet, CSV or JSON Lines files
into DIR; each is scored into `OUT/<stem><ext>` with its rejects and its report beside it. The
output folder is the ledger: a file whose output exists is done, a file whose `.parts` folder
exists was interrupted and is resumed (exactly once, as `score --resume`), anything else is new.
So the watcher keeps no state of its own and may be killed at any moment.

A file is taken only once its size and modification time have stayed the same for `settle_s`
(writers that copy slowly are not read half-way); names starting with `.` or `_`, or ending in
`.tmp`/`.part`/`_COPYING_`, are skipped, so writers that rename into place are picked up at once.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from tritonkit import atomic
from tritonkit.clients import formats, storage
from tritonkit.clients.score import ScoreOptions, ScoreReport, score
from tritonkit.clients.sinks import PartStore, output_format
from tritonkit.errors import TritonKitError, UsageError

logger = logging.getLogger(__name__)

IN_PROGRESS_SUFFIXES = (".tmp", ".part", "_COPYING_", ".crdownload")


@dataclass
class WatchResult:
    """What one pass or one whole watch did."""

    scored: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)


class Watcher:
    """Scores the files of `folder` into `out_dir`, one `score` run per file."""

    def __init__(
        self,
        base: ScoreOptions,
        folder: Path,
        out_dir: Path,
        settle_s: float = 1.0,
        on_file: Callable[[Path, ScoreReport], None] | None = None,
    ):
        if storage.is_uri(str(folder)) or storage.is_uri(str(out_dir)):
            raise UsageError("--watch follows a local folder into a local --output folder; object storage has no watch")
        folder, out_dir = Path(folder), Path(out_dir)
        if not folder.is_dir():
            raise UsageError(f"--watch {folder}: not a folder")
        if out_dir.exists() and not out_dir.is_dir():
            raise UsageError(f"--output {out_dir}: with --watch, the output must be a folder (one result per file)")
        if out_dir.resolve() == folder.resolve():
            raise UsageError(f"--output {out_dir} is the watched folder; results would be read back as new input")
        self.base, self.folder, self.out_dir = base, folder, out_dir
        self.fmt = output_format(Path("x" + formats.EXTENSION.get(base.format or "", ".parquet")), base.format)
        self.settle_s = settle_s
        self.on_file = on_file
        self._seen: dict[Path, tuple[int, int, float]] = {}  # path -> (size, mtime_ns, first seen unchanged)
        self._failed: dict[Path, tuple[int, int]] = {}  # failed in this process: not retried unless changed

    def output_for(self, file: Path) -> Path:
        return self.out_dir / f"{file.stem}{formats.EXTENSION[self.fmt]}"

    def _candidates(self) -> list[Path]:
        files = []
        for path in self.folder.iterdir():
            name = path.name
            if name.startswith((".", "_")) or name.endswith(IN_PROGRESS_SUFFIXES):
                continue
            if formats.of(path) and path.is_file():
                files.append(path)
        stems: dict[str, Path] = {}
        for path in sorted(files):
            if path.stem in stems:
                raise UsageError(
                    f"--watch {self.folder}: {stems[path.stem].name} and {path.name} would both be "
                    f"scored into {self.output_for(path).name}; give them different names"
                )
            stems[path.stem] = path
        return sorted(files, key=lambda p: (p.stat().st_mtime_ns, p.name))

    def _settled(self, path: Path, now: float) -> bool:
        stat = path.stat()
        key = (stat.st_size, stat.st_mtime_ns)
        seen = self._seen.get(path)
        if seen is None or seen[:2] != key:
            self._seen[path] = (*key, now)
            return self.settle_s <= 0
        return now - seen[2] >= self.settle_s

    def pending(self, now: float | None = None) -> list[Path]:
        """Files ready to score: settled, not scored yet, not failed in this process (unless changed since)."""
        now = time.monotonic() if now is None else now
        ready = []
        for path in self._candidates():
            output = self.output_for(path)
            if output.exists():
                parts = PartStore(output)
                if parts.dir.exists():  # killed between the output's rename and the parts' removal
                    parts.remove()
                continue
            stat = path.stat()
            if self._failed.get(path) == (stat.st_size, stat.st_mtime_ns):
                continue
            if self._settled(path, now):
                ready.append(path)
        return ready

    def score_file(self, path: Path) -> ScoreReport:
        output = self.output_for(path)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        options = replace(
            self.base,
            input=path,
            output=output,
            resume=PartStore(output).exists(),
            rejects=self.out_dir / f"{path.stem}.rejects.jsonl",
            format=self.fmt,
        )
        return score(options)

    def _write_report(self, path: Path, report: ScoreReport) -> None:
        atomic.write_text(self.out_dir / f"{path.stem}.report.json", json.dumps(report.to_dict(), indent=2))

    def run_once(self) -> WatchResult:
        """One pass: scores every ready file; a file that fails is reported and left for the next start."""
        result = WatchResult()
        for path in self.pending():
            try:
                report = self.score_file(path)
            except TritonKitError as e:
                stat = path.stat()
                self._failed[path] = (stat.st_size, stat.st_mtime_ns)
                result.failed[str(path)] = str(e)
                logger.error("%s: %s", path, e)
                continue
            result.scored.append(str(path))
            if self.on_file is not None:
                self.on_file(path, report)
            self._write_report(path, report)  # after the file's line: a report on disk means the line is out
        return result

    def run(self, poll_s: float = 2.0, should_stop: Callable[[], bool] = lambda: False) -> WatchResult:
        """Passes every `poll_s` seconds until `should_stop()`; returns everything done."""
        total = WatchResult()
        while not should_stop():
            done = self.run_once()
            total.scored += done.scored
            total.failed.update(done.failed)
            deadline = time.monotonic() + poll_s
            while not should_stop() and time.monotonic() < deadline:
                time.sleep(min(0.1, poll_s))
        return total
