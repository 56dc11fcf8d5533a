"""The embedded event log: one SQLite database in WAL mode with ``synchronous=FULL``.

Why SQLite rather than hand-written segment files (``benchmarks/bench_event_log.py`` measured
both on this machine): with several server processes appending to one log, SQLite already gives
what a segment log would have to build by hand: one writer at a time across processes (its file
lock), offsets from ``INTEGER PRIMARY KEY AUTOINCREMENT`` (increasing, never reused, assigned in
commit order), a checksummed write-ahead log that a crash (``kill -9``, power loss after the fsync)
rolls back to the last committed transaction, and concurrent readers that never block the writer.
An append of a batch is one transaction: one fsync of the WAL whatever the batch size, so a server
that groups the events that arrive together (`recstack.serving._events`) pays one fsync per group.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from recstack.errors import UnavailableError
from recstack.events.base import EventLog, LoggedEvent, NewEvent

__all__ = ["SqliteEventLog"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    event_offset INTEGER PRIMARY KEY AUTOINCREMENT,
    type TEXT NOT NULL,
    user_id TEXT NOT NULL,
    item_id TEXT,
    rating REAL,
    ts INTEGER NOT NULL,
    received REAL NOT NULL,
    release_id TEXT,
    request_id TEXT,
    payload TEXT
);
CREATE TABLE IF NOT EXISTS log_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""
_COLS = "event_offset, type, user_id, item_id, rating, ts, received, release_id, request_id, payload"


class SqliteEventLog(EventLog):
    """An event log in one SQLite file (created with its directory when missing).

    ``busy_timeout_s``: how long an append waits for another process's write lock before failing
    with `UnavailableError`.
    """

    backend = "sqlite"

    def __init__(self, path: str | Path, *, busy_timeout_s: float = 10.0) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._busy = busy_timeout_s
        self._lock = threading.Lock()
        self._conn = self._connect()
        with self._lock, self._conn:
            self._conn.executescript(_SCHEMA)
            self._conn.execute(
                "INSERT OR IGNORE INTO log_meta(key, value) VALUES ('log_id', ?)", (uuid.uuid4().hex,)
            )
        row = self._conn.execute("SELECT value FROM log_meta WHERE key = 'log_id'").fetchone()
        self._log_id = str(row[0])

    def _connect(self) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(
                self.path, timeout=self._busy, isolation_level=None, check_same_thread=False
            )
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")  # fsync the WAL at every commit: durable on return
            conn.execute(f"PRAGMA busy_timeout={int(self._busy * 1000)}")
        except sqlite3.Error as exc:
            raise UnavailableError(f"event log {self.path}: cannot open: {exc}") from exc
        return conn

    @property
    def log_id(self) -> str:
        return self._log_id

    @property
    def url(self) -> str:
        return f"sqlite:///{self.path}"

    def append(self, events: Sequence[NewEvent]) -> list[int]:
        if not events:
            return []
        rows = [
            (e.type, e.user_id, e.item_id, e.rating, int(e.ts), e.received or time.time(),
             e.release_id, e.request_id, e.payload_json())
            for e in events
        ]  # fmt: skip
        with self._lock:
            try:
                self._conn.execute("BEGIN IMMEDIATE")
                try:
                    offsets: list[int] = []
                    for r in rows:  # lastrowid per row: executemany cannot return the offsets
                        c = self._conn.execute(
                            "INSERT INTO events(type, user_id, item_id, rating, ts, received, release_id, "
                            "request_id, payload) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                            r,
                        )
                        offsets.append(int(c.lastrowid or 0))
                    self._conn.execute("COMMIT")
                except BaseException:
                    self._conn.execute("ROLLBACK")
                    raise
            except sqlite3.Error as exc:
                raise UnavailableError(f"event log {self.path}: append failed: {exc}") from exc
        return offsets

    def read(self, after: int = 0, limit: int = 10_000, upto: int | None = None) -> list[LoggedEvent]:
        sql = f"SELECT {_COLS} FROM events WHERE event_offset > ?"
        args: list[Any] = [int(after)]
        if upto is not None:
            sql += " AND event_offset <= ?"
            args.append(int(upto))
        sql += " ORDER BY event_offset LIMIT ?"
        args.append(int(limit))
        with self._lock:
            try:
                rows = self._conn.execute(sql, args).fetchall()
            except sqlite3.Error as exc:
                raise UnavailableError(f"event log {self.path}: read failed: {exc}") from exc
        return [_row(r) for r in rows]

    def last_offset(self) -> int:
        with self._lock:
            row = self._conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'events'").fetchone()
        return int(row[0]) if row else 0

    def first_offset(self) -> int | None:
        with self._lock:
            row = self._conn.execute("SELECT MIN(event_offset) FROM events").fetchone()
        return None if row is None or row[0] is None else int(row[0])

    def count(self) -> int:
        with self._lock:
            return int(self._conn.execute("SELECT COUNT(*) FROM events").fetchone()[0])

    def compact(self, upto: int) -> int:
        with self._lock, self._conn:
            n = self._conn.execute("DELETE FROM events WHERE event_offset <= ?", (int(upto),)).rowcount
        with self._lock:
            self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return int(n)

    def close(self) -> None:
        with self._lock:
            self._conn.close()


def _row(r: Sequence[Any]) -> LoggedEvent:
    return LoggedEvent(
        offset=int(r[0]),
        type=str(r[1]),
        user_id=str(r[2]),
        item_id=None if r[3] is None else str(r[3]),
        rating=None if r[4] is None else float(r[4]),
        ts=int(r[5]),
        received=float(r[6]),
        release_id=r[7],
        request_id=r[8],
        payload=None if r[9] is None else json.loads(r[9]),
    )
