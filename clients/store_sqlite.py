"""The SQLite prediction store: one file, no server; the embedded default.

Each entry row carries its `expires_at` (predicted_at + the source's TTL): reads treat expired rows as
absent, and writers purge them now and then. WAL mode lets readers run while a batch run writes; a
writer that finds the file locked by another waits at most the call's `timeout_s` (10 s by default), so
a caller with a latency budget is never held longer than its budget. Features live in their own table,
one JSON object per entity, merged on write (SQLite's json_patch).
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from contextlib import contextmanager
from pathlib import Path

from tritonkit.clients.store import (
    DEFAULT_FEATURES_TTL_S,
    Entry,
    FeatureRow,
    Found,
    StoreError,
    StoreUnavailableError,
    check_model_name,
    json_loads,
    normalize_run,
)

logger = logging.getLogger(__name__)

LOCK_WAIT_S = 10.0  # longest wait for another writer's lock when a call gives no timeout_s
IN_CHUNK = 500  # entity ids per `IN (...)` query (SQLite allows 999 parameters in older builds)

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
CREATE TABLE IF NOT EXISTS features (
    model TEXT NOT NULL,
    entity_id TEXT NOT NULL,
    features TEXT NOT NULL,
    updated_at REAL NOT NULL,
    expires_at REAL NOT NULL,
    PRIMARY KEY (model, entity_id)
) WITHOUT ROWID;
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
_PUT_FEATURES = (
    "INSERT INTO features (model, entity_id, features, updated_at, expires_at) VALUES (?, ?, ?, ?, ?) "
    "ON CONFLICT (model, entity_id) DO UPDATE SET "
    "features = CASE WHEN features.expires_at > ? THEN json_patch(features.features, excluded.features) "
    "ELSE excluded.features END, updated_at = excluded.updated_at, expires_at = excluded.expires_at"
)


class SQLiteStore:
    """Predictions in one SQLite file; safe to share between threads (calls are serialised).

    Args:
        path: the database file; its folder must exist (the file is created on first use).
        ttl_s: seconds an entry lives, per source.
        purge_interval_s: writers delete expired rows at most this often.
    """

    def __init__(
        self,
        path: str | Path,
        ttl_s: dict[str, float],
        purge_interval_s: float = 60.0,
        features_ttl_s: float = DEFAULT_FEATURES_TTL_S,
    ):
        self.path = Path(path)
        self.url = f"sqlite://{self.path}" if self.path.is_absolute() else f"sqlite://{path}"
        self.ttl_s = dict(ttl_s)
        self.features_ttl_s = float(features_ttl_s)
        self.purge_interval_s = purge_interval_s
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.RLock()
        self._last_purge = 0.0

    @contextmanager
    def _db(self, action: str, timeout_s: float | None = None):
        """The open connection, under the lock, waiting at most `timeout_s` for another writer's lock;
        SQLite failures become StoreUnavailableError."""
        wait_ms = int(max(0.001, LOCK_WAIT_S if timeout_s is None else timeout_s) * 1000)
        with self._lock:
            try:
                if self._conn is None:
                    self._conn = self._connect(wait_ms)
                self._conn.execute(f"PRAGMA busy_timeout = {wait_ms}")
                yield self._conn
            except sqlite3.Error as e:
                self._drop()
                hint = "" if self.path.parent.is_dir() else f" (folder {self.path.parent} does not exist)"
                raise StoreUnavailableError(
                    f"prediction store {self.url} failed to {action}: {e}{hint}", url=self.url
                ) from e

    def _connect(self, wait_ms: int) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=wait_ms / 1000, isolation_level=None, check_same_thread=False)
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

    def _feature_row(self, row: FeatureRow, now: float) -> tuple:
        check_model_name(row.model)
        at = float(row.updated_at)
        values = "{" + ",".join(f"{json.dumps(k)}:{v}" for k, v in row.encoded().items()) + "}"
        return (row.model, str(row.entity_id), values, at, at + self.features_ttl_s, now)

    def put_many(
        self, entries: list[Entry], features: list[FeatureRow] | None = None, timeout_s: float | None = None
    ) -> None:
        """Writes every entry and feature row in one transaction: an error part-way (or a crash) leaves none
        visible. Waits at most `timeout_s` for another writer's lock (StoreUnavailableError after)."""
        if not entries and not features:
            return
        now = time.time()
        rows = [self._row(e) for e in entries]  # everything is encoded before the transaction begins
        feature_rows = [self._feature_row(f, now) for f in features or []]
        with self._db("write predictions", timeout_s) as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.executemany(_PUT, rows)
                conn.executemany(_PUT_FEATURES, feature_rows)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
            if time.time() - self._last_purge >= self.purge_interval_s:
                self.purge_expired(timeout_s=timeout_s)

    def put_features(self, rows: list[FeatureRow], timeout_s: float | None = None) -> None:
        self.put_many([], rows, timeout_s)

    def get(self, model: str, entity_id: str, timeout_s: float | None = None) -> Entry | None:
        return self.get_many(model, [entity_id], timeout_s=timeout_s)[0].entry

    def get_features(self, model: str, entity_id: str, timeout_s: float | None = None) -> FeatureRow | None:
        return self.get_many(model, [entity_id], features=True, timeout_s=timeout_s)[0].features

    def get_many(
        self, model: str, entity_ids: list[str], features: bool = False, timeout_s: float | None = None
    ) -> list[Found]:
        ids = list(dict.fromkeys(str(e) for e in entity_ids))
        entries, rows = {}, {}
        now = time.time()
        with self._db("read a prediction" if len(ids) == 1 else "read predictions", timeout_s) as conn:
            for start in range(0, len(ids), IN_CHUNK):
                part = ids[start : start + IN_CHUNK]
                marks = ",".join("?" * len(part))
                entries.update(
                    (r[0], r[1:])
                    for r in conn.execute(
                        "SELECT entity_id, model_version, outputs, predicted_at, source FROM predictions "
                        f"WHERE model = ? AND expires_at > ? AND entity_id IN ({marks})",
                        (model, now, *part),
                    )
                )
                if features:
                    rows.update(
                        (r[0], r[1:])
                        for r in conn.execute(
                            "SELECT entity_id, features, updated_at FROM features "
                            f"WHERE model = ? AND expires_at > ? AND entity_id IN ({marks})",
                            (model, now, *part),
                        )
                    )
        return [self._found(model, str(e), entries.get(str(e)), rows.get(str(e))) for e in entity_ids]

    def _found(self, model: str, entity_id: str, entry: tuple | None, row: tuple | None) -> Found:
        try:
            decoded = Entry(entity_id, model, entry[0], json_loads(entry[1]), entry[2], entry[3]) if entry else None
            features = FeatureRow(entity_id, model, json_loads(row[0]), row[1]) if row else None
        except ValueError as e:
            raise StoreError(
                f"entry or features of `{entity_id}` (model `{model}`) in {self.url} are not valid JSON: {e}",
                url=self.url,
            ) from e
        return Found(entity_id, decoded, features)

    def purge_expired(self, now: float | None = None, timeout_s: float | None = None) -> int:
        """Deletes expired entries and feature rows; returns how many."""
        now = time.time() if now is None else now
        with self._db("purge expired predictions", timeout_s) as conn:
            deleted = conn.execute("DELETE FROM predictions WHERE expires_at <= ?", (now,)).rowcount
            deleted += conn.execute("DELETE FROM features WHERE expires_at <= ?", (now,)).rowcount
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
