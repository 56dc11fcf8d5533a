"""The event log in PostgreSQL: one table ``{table}`` and a one-row counter ``{table}_seq``.

An append is one transaction that takes the counter row (``UPDATE ... RETURNING``: appenders
queue on that row lock), inserts its events under the next offsets and commits. Offsets are
therefore assigned in commit order, so a reader that has seen offset ``o`` never later finds a
smaller one appear (a ``BIGSERIAL`` alone would not promise that: sequences are handed out
before commit).
"""

from __future__ import annotations

import json
import re
import threading
import time
import uuid
from collections.abc import Sequence
from typing import Any

from recstack.errors import InvalidArgumentError, UnavailableError
from recstack.events.base import EventLog, LoggedEvent, NewEvent

__all__ = ["PostgresEventLog"]

_TABLE_RE = re.compile(r"^[a-z_][a-z0-9_]{0,50}$")
_COLS = "event_offset, type, user_id, item_id, rating, ts, received, release_id, request_id, payload"


class PostgresEventLog(EventLog):
    """An event log in table ``table`` of the database at ``dsn`` (created when missing)."""

    backend = "postgres"

    def __init__(self, dsn: str, *, table: str = "recstack_events") -> None:
        import psycopg

        if not _TABLE_RE.match(table):
            raise InvalidArgumentError(f"table {table!r}: use lower-case letters, digits and '_'")
        self._err = psycopg.Error
        self.table = table
        self._dsn = dsn
        self._lock = threading.Lock()
        try:
            self._conn = psycopg.connect(dsn, autocommit=True, connect_timeout=10)
            with self._conn.transaction():
                self._conn.execute(f"SELECT pg_advisory_xact_lock(hashtext('{table}'))")
                self._conn.execute(
                    f"CREATE TABLE IF NOT EXISTS {table} (event_offset BIGINT PRIMARY KEY, "
                    "type TEXT NOT NULL, user_id TEXT NOT NULL, item_id TEXT, rating DOUBLE PRECISION, "
                    "ts BIGINT NOT NULL, received DOUBLE PRECISION NOT NULL, release_id TEXT, "
                    "request_id TEXT, payload TEXT)"
                )
                self._conn.execute(
                    f"CREATE TABLE IF NOT EXISTS {table}_seq (one INT PRIMARY KEY CHECK (one = 1), "
                    "last BIGINT NOT NULL, log_id TEXT NOT NULL)"
                )
                self._conn.execute(
                    f"INSERT INTO {table}_seq VALUES (1, 0, %s) ON CONFLICT DO NOTHING", (uuid.uuid4().hex,)
                )
                row = self._conn.execute(f"SELECT log_id FROM {table}_seq").fetchone()
        except psycopg.Error as exc:
            raise UnavailableError(f"event log on PostgreSQL does not answer: {exc}") from exc
        assert row is not None
        self._log_id = str(row[0])

    @property
    def log_id(self) -> str:
        return self._log_id

    @property
    def url(self) -> str:
        from psycopg.conninfo import conninfo_to_dict, make_conninfo

        info = conninfo_to_dict(self._dsn)
        info.pop("password", None)
        return f"{make_conninfo(**info)} table={self.table}"  # type: ignore[arg-type]

    def append(self, events: Sequence[NewEvent]) -> list[int]:
        if not events:
            return []
        t = self.table
        with self._lock:
            try:
                with self._conn.transaction():
                    row = self._conn.execute(
                        f"UPDATE {t}_seq SET last = last + %s RETURNING last", (len(events),)
                    ).fetchone()
                    assert row is not None
                    first = int(row[0]) - len(events) + 1
                    offsets = list(range(first, first + len(events)))
                    with self._conn.cursor() as cur:
                        cur.executemany(
                            f"INSERT INTO {t} ({_COLS}) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                            [
                                (
                                    o,
                                    e.type,
                                    e.user_id,
                                    e.item_id,
                                    e.rating,
                                    int(e.ts),
                                    e.received or time.time(),
                                    e.release_id,
                                    e.request_id,
                                    e.payload_json(),
                                )
                                for o, e in zip(offsets, events, strict=True)
                            ],
                        )
            except self._err as exc:
                raise UnavailableError(f"event log on PostgreSQL: append failed: {exc}") from exc
        return offsets

    def _query(self, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            try:
                rows = self._conn.execute(sql, args).fetchall()
            except self._err as exc:
                raise UnavailableError(f"event log on PostgreSQL: {exc}") from exc
        return rows

    def read(self, after: int = 0, limit: int = 10_000, upto: int | None = None) -> list[LoggedEvent]:
        sql = f"SELECT {_COLS} FROM {self.table} WHERE event_offset > %s"
        args: list[Any] = [int(after)]
        if upto is not None:
            sql += " AND event_offset <= %s"
            args.append(int(upto))
        rows = self._query(sql + " ORDER BY event_offset LIMIT %s", [*args, int(limit)])
        return [
            LoggedEvent(
                offset=int(r[0]),
                type=str(r[1]),
                user_id=str(r[2]),
                item_id=r[3],
                rating=r[4],
                ts=int(r[5]),
                received=float(r[6]),
                release_id=r[7],
                request_id=r[8],
                payload=None if r[9] is None else json.loads(r[9]),
            )
            for r in rows
        ]

    def last_offset(self) -> int:
        return int(self._query(f"SELECT last FROM {self.table}_seq")[0][0])

    def first_offset(self) -> int | None:
        v = self._query(f"SELECT MIN(event_offset) FROM {self.table}")[0][0]
        return None if v is None else int(v)

    def count(self) -> int:
        return int(self._query(f"SELECT COUNT(*) FROM {self.table}")[0][0])

    def compact(self, upto: int) -> int:
        with self._lock, self._conn.transaction():
            n = self._conn.execute(
                f"DELETE FROM {self.table} WHERE event_offset <= %s", (int(upto),)
            ).rowcount
        return int(n)

    def drop(self) -> None:
        """Drop the log's tables (tests)."""
        with self._lock, self._conn.transaction():
            self._conn.execute(f"DROP TABLE IF EXISTS {self.table}, {self.table}_seq")

    def close(self) -> None:
        with self._lock:
            self._conn.close()
