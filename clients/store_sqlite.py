"""The SQLite prediction store: one file, no server; the embedded default.

Each entry row carries its `expires_at` (predicted_at + the source's TTL): reads treat expired rows as
absent, and writers purge them now and then. WAL mode lets readers run while a batch run writes.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from contextlib import contextmanager
from pathlib import Path

from tritonkit.clients.store import Entry, StoreError, StoreUnavailableError, check_model_name, normalize_run

logger = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS predictions (
    model TEXT NOT NULL,
    entity_id TEXT NOT NULL,
    model_version TEXT NOT NULL,
    outputs TEXT NOT NULL,
    predicted_at REAL NOT NULL,
    source TEXT NOT NULL,
    expires_at REAL NOT NULL,
    PRIMARY KEY (model, entity_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS predictions_by_age ON predictions (model, predicted_at);
CREATE INDEX IF NOT EXISTS predictions_by_expiry ON predictions (expires_at);
CREATE TABLE IF NOT EXISTS runs (
    model TEXT NOT NULL,
    run_id TEXT NOT NULL,
    finished_at REAL NOT NULL,
    summary TEXT NOT NULL,
    PRIMARY KEY (model, run_id)
);
"""
_PUT = (
    "INSERT OR REPLACE INTO predictions (model, entity_id, model_version, outputs, predicted_at, source, "
    "expires_at) VALUES (?, ?, ?, ?, ?, ?, ?)"
)


class SQLiteStore:
    """Predictions in one SQLite file; safe to share between threads (calls are serialised).

    Args:
        path: the database file; its folder must exist (the file is created on first use).
        ttl_s: seconds an entry lives, per source.
        purge_interval_s: writers delete expired rows at most this often.
    """

    def __init__(self, path: str | Path, ttl_s: dict[str, float], purge_interval_s: float = 60.0):
        self.path = Path(path)
        self.url = f"sqlite://{self.path}" if self.path.is_absolute() else f"sqlite://{path}"
        self.ttl_s = dict(ttl_s)
        self.purge_interval_s = purge_interval_s
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.RLock()
        self._last_purge = 0.0

    @contextmanager
    def _db(self, action: str):
        """The open connection, under the lock; SQLite failures become StoreUnavailableError."""
        with self._lock:
            try:
                if self._conn is None:
                    self._conn = self._connect()
                yield self._conn
            except sqlite3.Error as e:
                self._drop()
                hint = "" if self.path.parent.is_dir() else f" (folder {self.path.parent} does not exist)"
                raise StoreUnavailableError(
                    f"prediction store {self.url} failed to {action}: {e}{hint}", url=self.url
                ) from e

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=10, isolation_level=None, check_same_thread=False)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.executescript(SCHEMA)
        except sqlite3.Error:
            conn.close()
            raise
        return conn

    def _drop(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except sqlite3.Error:
                pass
            self._conn = None

    def _row(self, entry: Entry) -> tuple:
        check_model_name(entry.model)
        predicted_at = float(entry.predicted_at)
        return (
            entry.model,
            str(entry.entity_id),
            str(entry.model_version),
            entry.outputs_json(),
            predicted_at,
            entry.source,
            predicted_at + self.ttl_s[entry.source],
        )

    def put_many(self, entries: list[Entry]) -> None:
        """Writes every entry in one transaction: an error part-way (or a crash) leaves none visible."""
        if not entries:
            return
        with self._db("write predictions") as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.executemany(_PUT, (self._row(e) for e in entries))
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
            if time.time() - self._last_purge >= self.purge_interval_s:
                self.purge_expired()

    def get(self, model: str, entity_id: str) -> Entry | None:
        with self._db("read a prediction") as conn:
            row = conn.execute(
                "SELECT model_version, outputs, predicted_at, source FROM predictions "
                "WHERE model = ? AND entity_id = ? AND expires_at > ?",
                (model, str(entity_id), time.time()),
            ).fetchone()
        if row is None:
            return None
        try:
            outputs = json.loads(row[1])
        except json.JSONDecodeError as e:
            raise StoreError(
                f"entry `{entity_id}` of model `{model}` in {self.url} is not valid JSON: {e}", url=self.url
            ) from e
        return Entry(str(entity_id), model, row[0], outputs, row[2], row[3])

    def purge_expired(self, now: float | None = None) -> int:
        """Deletes expired entries; returns how many."""
        now = time.time() if now is None else now
        with self._db("purge expired predictions") as conn:
            deleted = conn.execute("DELETE FROM predictions WHERE expires_at <= ?", (now,)).rowcount
        self._last_purge = now
        if deleted:
            logger.info("purged %d expired predictions from %s", deleted, self.url)
        return deleted

    def record_run(self, model: str, run: dict) -> None:
        summary = normalize_run(check_model_name(model), run)
        with self._db("record a batch run") as conn:
            conn.execute(
                "INSERT OR REPLACE INTO runs (model, run_id, finished_at, summary) VALUES (?, ?, ?, ?)",
                (model, summary["run_id"], summary["finished_at"], json.dumps(summary)),
            )

    def last_run(self, model: str) -> dict | None:
        with self._db("read the last batch run") as conn:
            row = conn.execute(
                "SELECT summary FROM runs WHERE model = ? ORDER BY finished_at DESC LIMIT 1", (model,)
            ).fetchone()
        return json.loads(row[0]) if row else None

    def count_fresh(self, model: str, max_age_s: float, now: float | None = None) -> dict[str, int]:
        now = time.time() if now is None else now
        with self._db("count fresh predictions") as conn:
            rows = conn.execute(
                "SELECT source, COUNT(*) FROM predictions WHERE model = ? AND predicted_at >= ? AND expires_at > ? "
                "GROUP BY source",
                (model, now - max_age_s, now),
            ).fetchall()
        counts = {"batch": 0, "realtime": 0}
        counts.update(dict(rows))
        return counts

    def close(self) -> None:
        with self._lock:
            self._drop()

    def __enter__(self) -> SQLiteStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"SQLiteStore({self.url!r})"
