"""Versioned recommendation tables in SQLite or PostgreSQL: written by batch jobs (the sinks),
flipped atomically, and read by serving (`BatchReader`).

Layout (both backends)::

    recstack_releases(kind, version, release_id, table_name, rows, k, created_at, current)
        one row per published version; exactly one ``current`` row per job kind (a partial unique
        index enforces it)
    user_recs_<version>(user_id TEXT, release_id TEXT, items TEXT, scores TEXT)
    pair_recs_<version>(item_a TEXT, item_b TEXT, release_id TEXT, items TEXT, scores TEXT)
        ``items``: JSON array of external item ids, best first; ``scores``: JSON array of float32
        rank scores (higher is better); pairs are stored once with ``item_a < item_b`` (as text)

``version`` = release id + job start time (UTC, milliseconds), so every table name and every row
carries the release id that produced it.

Atomicity (both mechanisms at once): a job writes into a *staging* table ``stg_<table>`` (block by
block, committed as it goes, never read by anyone), then in ONE transaction counts its rows (must
equal the expected count), renames it to ``<table>`` and flips the ``current`` pointer. Readers only
ever reach a table through the current pointer. A job killed midway (even SIGKILL) leaves the previous
version current and only an orphan ``stg_`` table, which the next job of the same kind drops.
"""

from __future__ import annotations

import hashlib
import re
import sqlite3
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from recstack.errors import ArtifactError, InvalidArgumentError, NotFoundError, UnavailableError

__all__ = [
    "DEFAULT_SINK",
    "BatchReader",
    "JobKind",
    "PostgresSink",
    "SQLiteSink",
    "Sink",
    "VersionInfo",
    "make_version",
    "open_sink",
    "table_name",
]

JobKind = Literal["users", "pairs"]
Row = tuple[Any, ...]

DEFAULT_SINK = "sqlite:///recstack_batch.db"
META = "recstack_releases"
STAGING = "stg_"
_PREFIX: dict[str, str] = {"users": "user_recs_", "pairs": "pair_recs_"}
_KEYS: dict[str, tuple[str, ...]] = {"users": ("user_id",), "pairs": ("item_a", "item_b")}
_SAFE = re.compile(r"[^a-z0-9_]")
#: PostgreSQL identifiers are at most 63 bytes; stg_pair_recs_ + 48 stays below
_MAX_VERSION = 48


@dataclass(frozen=True)
class VersionInfo:
    """One published version of a job kind (a row of ``recstack_releases``)."""

    kind: str
    version: str
    release_id: str
    table: str
    rows: int
    k: int
    created_at: str
    current: bool


def make_version(release_id: str, when: datetime | None = None) -> str:
    """``<release id>_<UTC job time to the millisecond>``, made a safe lower-case SQL identifier part."""
    t = (when or datetime.now(UTC)).astimezone(UTC)
    raw = f"{release_id}_{t:%Y%m%dt%H%M%S}{t.microsecond // 1000:03d}".lower()
    v = _SAFE.sub("_", raw)
    if len(v) > _MAX_VERSION:
        v = v[: _MAX_VERSION - 9] + "_" + hashlib.sha1(raw.encode()).hexdigest()[:8]
    return v


def table_name(kind: str, version: str) -> str:
    if kind not in _PREFIX:
        raise InvalidArgumentError(f"job kind must be users or pairs, got {kind!r}")
    if _SAFE.search(version):
        raise InvalidArgumentError(f"version {version!r} must only hold a-z, 0-9 and _ (use make_version)")
    return _PREFIX[kind] + version


def _columns(kind: str) -> tuple[str, ...]:
    return (*_KEYS[kind], "release_id", "items", "scores")


class Sink(ABC):
    """Where a batch job writes. Usage: ``begin`` -> ``write`` blocks -> ``publish`` (or ``abort``)."""

    url: str
    placeholder = "?"

    def __init__(self, url: str) -> None:
        self.url = url
        self._staging: str | None = None
        self._kind: str | None = None
        self._written = 0

    # ------------------------------------------------------------ backend
    @abstractmethod
    def _connect(self) -> Any: ...

    @property
    @abstractmethod
    def conn(self) -> Any: ...

    @abstractmethod
    def _tables(self, like: str) -> list[str]: ...

    @abstractmethod
    def _copy_rows(self, table: str, kind: str, rows: Sequence[Row]) -> None:
        """Append rows to ``table`` and commit."""

    @contextmanager
    @abstractmethod
    def _transaction(self) -> Iterator[Any]: ...

    @property
    def _bool(self) -> tuple[str, str]:
        return ("TRUE", "FALSE")

    # --------------------------------------------------------------- meta
    def ensure_meta(self) -> None:
        """Create ``recstack_releases`` (and its one-current-per-kind index) when missing."""
        t, _ = self._bool
        with self._transaction() as cur:
            cur.execute(
                f"CREATE TABLE IF NOT EXISTS {META} (kind TEXT NOT NULL, version TEXT NOT NULL, "
                "release_id TEXT NOT NULL, table_name TEXT NOT NULL, rows BIGINT NOT NULL, "
                "k INTEGER NOT NULL, created_at TEXT NOT NULL, current BOOLEAN NOT NULL, "
                "PRIMARY KEY (kind, version))"
            )
            cur.execute(
                f"CREATE UNIQUE INDEX IF NOT EXISTS {META}_current ON {META} (kind) WHERE current = {t}"
            )

    def versions(self, kind: str) -> list[VersionInfo]:
        """Published versions of ``kind``, newest first."""
        self.ensure_meta()
        p = self.placeholder
        with self._transaction() as cur:
            cur.execute(
                f"SELECT kind, version, release_id, table_name, rows, k, created_at, current FROM {META} "
                f"WHERE kind = {p} ORDER BY created_at DESC, version DESC",
                (kind,),
            )
            rows = cur.fetchall()
        return [VersionInfo(r[0], r[1], r[2], r[3], int(r[4]), int(r[5]), r[6], bool(r[7])) for r in rows]

    def current(self, kind: str) -> VersionInfo | None:
        return next((v for v in self.versions(kind) if v.current), None)

    # -------------------------------------------------------------- write
    def begin(self, kind: str, version: str) -> str:
        """Create the (empty) staging table of ``version``; returns its name."""
        final = table_name(kind, version)
        staging = STAGING + final
        cols = ", ".join(f"{c} TEXT NOT NULL" for c in _columns(kind))
        self.ensure_meta()
        with self._transaction() as cur:
            cur.execute(f"DROP TABLE IF EXISTS {staging}")
            cur.execute(f"CREATE TABLE {staging} ({cols})")
        self._staging, self._kind, self._written = staging, kind, 0
        return staging

    def write(self, rows: Sequence[Row]) -> None:
        """Append a block of rows to the staging table (committed: durable but invisible)."""
        if self._staging is None or self._kind is None:
            raise InvalidArgumentError("call begin(kind, version) before write()")
        if rows:
            self._copy_rows(self._staging, self._kind, rows)
            self._written += len(rows)

    def publish(self, version: str, release_id: str, k: int, expected_rows: int) -> VersionInfo:
        """Index the staging table, then in ONE transaction: check its row count, rename it to the
        version's table and make that version current. Raises `ArtifactError` (nothing published)
        when the count differs from ``expected_rows``."""
        if self._staging is None or self._kind is None:
            raise InvalidArgumentError("nothing to publish: call begin() and write() first")
        kind, staging = self._kind, self._staging
        final = table_name(kind, version)
        keys = ", ".join(_KEYS[kind])
        t, f = self._bool
        p = self.placeholder
        created = datetime.now(UTC).isoformat(timespec="milliseconds")
        with self._transaction() as cur:  # the unique index is built while still invisible
            cur.execute(f"CREATE UNIQUE INDEX ix_{final} ON {staging} ({keys})")
        with self._transaction() as cur:
            cur.execute(f"SELECT count(*) FROM {staging}")
            n = int(cur.fetchone()[0])
            if n != expected_rows:
                raise ArtifactError(
                    f"batch table {staging} holds {n} rows, expected {expected_rows}: not published "
                    "(the previous version stays current); run the job again"
                )
            cur.execute(f"ALTER TABLE {staging} RENAME TO {final}")
            cur.execute(f"UPDATE {META} SET current = {f} WHERE kind = {p} AND current = {t}", (kind,))
            cur.execute(
                f"INSERT INTO {META} (kind, version, release_id, table_name, rows, k, created_at, current) "
                f"VALUES ({p}, {p}, {p}, {p}, {p}, {p}, {p}, {t})",
                (kind, version, release_id, final, n, k, created),
            )
        self._staging = None
        return VersionInfo(kind, version, release_id, final, n, k, created, True)

    def abort(self) -> None:
        """Drop the staging table of an unfinished job (best effort)."""
        if self._staging is not None:
            try:
                with self._transaction() as cur:
                    cur.execute(f"DROP TABLE IF EXISTS {self._staging}")
            except Exception:
                pass
            self._staging = None

    def prune(self, kind: str, keep: int) -> list[str]:
        """Keep the ``keep`` newest versions of ``kind`` (the current one always) and drop the tables
        of older ones, plus staging tables left by killed jobs. Returns the dropped table names."""
        if keep < 1:
            raise InvalidArgumentError(
                f"--keep must be >= 1 (the current version is always kept), got {keep}"
            )
        vs = self.versions(kind)
        kept = {v.version for v in vs[:keep]} | {v.version for v in vs if v.current}
        old = [v for v in vs if v.version not in kept]
        dropped: list[str] = []
        p = self.placeholder
        with self._transaction() as cur:
            for v in old:
                cur.execute(f"DROP TABLE IF EXISTS {v.table}")
                cur.execute(f"DELETE FROM {META} WHERE kind = {p} AND version = {p}", (kind, v.version))
                dropped.append(v.table)
        own = self._staging
        for t in self._tables(STAGING + _PREFIX[kind]):
            if t != own:
                with self._transaction() as cur:
                    cur.execute(f"DROP TABLE IF EXISTS {t}")
                dropped.append(t)
        return dropped

    def tables(self) -> list[str]:
        """Every batch table (published and staging) in the database."""
        return sorted(set(self._tables("user_recs_") + self._tables("pair_recs_") + self._tables(STAGING)))

    def count(self, table: str) -> int:
        with self._transaction() as cur:
            cur.execute(f"SELECT count(*) FROM {table}")
            return int(cur.fetchone()[0])

    @abstractmethod
    def close(self) -> None: ...


# --------------------------------------------------------------------------------------- SQLite
def _sqlite_path(url: str) -> Path:
    if not url.startswith("sqlite:///"):
        raise InvalidArgumentError(f"SQLite sink URL must look like sqlite:///path/to.db, got {url!r}")
    return Path(url[len("sqlite:///") :])


class SQLiteSink(Sink):
    """SQLite file (WAL); each block is one ``executemany`` in one transaction."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.path = _sqlite_path(url)
        self._conn: sqlite3.Connection | None = None

    def _connect(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, isolation_level=None, timeout=30)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        return conn

    @property
    def conn(self) -> sqlite3.Connection:
        if self._conn is None:
            self._conn = self._connect()
        return self._conn

    @property
    def _bool(self) -> tuple[str, str]:
        return ("1", "0")

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Cursor]:
        cur = self.conn.cursor()
        cur.execute("BEGIN IMMEDIATE")
        try:
            yield cur
        except BaseException:
            cur.execute("ROLLBACK")
            raise
        else:
            cur.execute("COMMIT")
        finally:
            cur.close()

    def _tables(self, like: str) -> list[str]:
        cur = self.conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND substr(name, 1, ?) = ?",
            (len(like), like),
        )
        return [str(r[0]) for r in cur.fetchall()]

    def _copy_rows(self, table: str, kind: str, rows: Sequence[Row]) -> None:
        cols = _columns(kind)
        marks = ", ".join("?" for _ in cols)
        with self._transaction() as cur:
            cur.executemany(f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({marks})", rows)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


# ----------------------------------------------------------------------------------- PostgreSQL
class PostgresSink(Sink):
    """PostgreSQL through psycopg 3; each block is one ``COPY ... FROM STDIN`` in one transaction."""

    placeholder = "%s"

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self._conn: Any = None

    def _connect(self) -> Any:
        import psycopg

        try:
            return psycopg.connect(self.url, autocommit=False, connect_timeout=10)
        except psycopg.OperationalError as exc:
            raise UnavailableError(f"PostgreSQL at {self.url} does not answer: {exc}") from exc

    @property
    def conn(self) -> Any:
        if self._conn is None:
            self._conn = self._connect()
        return self._conn

    @contextmanager
    def _transaction(self) -> Iterator[Any]:
        conn = self.conn
        try:
            with conn.cursor() as cur:
                yield cur
        except BaseException:
            conn.rollback()
            raise
        else:
            conn.commit()

    def _tables(self, like: str) -> list[str]:
        with self._transaction() as cur:
            cur.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = current_schema() "
                "AND left(tablename, %s) = %s",
                (len(like), like),
            )
            return [str(r[0]) for r in cur.fetchall()]

    def _copy_rows(self, table: str, kind: str, rows: Sequence[Row]) -> None:
        cols = ", ".join(_columns(kind))
        with self._transaction() as cur:
            cur.execute("SET LOCAL synchronous_commit = off")  # staging rows: re-run on a crash
            with cur.copy(f"COPY {table} ({cols}) FROM STDIN") as cp:
                for r in rows:
                    cp.write_row(r)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def open_sink(url: str | None = None) -> Sink:
    """``sqlite:///path.db`` (default ``sqlite:///recstack_batch.db``) or ``postgresql://...``."""
    u = url or DEFAULT_SINK
    if u.startswith("sqlite:///"):
        return SQLiteSink(u)
    if u.startswith(("postgresql://", "postgres://")):
        return PostgresSink(u)
    raise InvalidArgumentError(
        f"unknown sink {u!r}: use sqlite:///path/to.db or postgresql://user@host:port/db"
    )


# ---------------------------------------------------------------------------------------- reader
class BatchReader:
    """Serving-side lookups in the current batch tables: one cached connection per process (guarded
    by a lock), the current pointer re-read at most every ``pointer_ttl`` seconds, and one prepared
    primary-key lookup per request."""

    def __init__(self, url: str | None = None, pointer_ttl: float = 1.0) -> None:
        self.url = url or DEFAULT_SINK
        self.pointer_ttl = pointer_ttl
        self._lock = threading.Lock()
        self._conn: Any = None
        self._pg = self.url.startswith(("postgresql://", "postgres://"))
        self._pointers: dict[str, tuple[float, tuple[str, str, str] | None]] = {}
        if not self._pg:
            _sqlite_path(self.url)

    def _connection(self) -> Any:
        if self._conn is None:
            if self._pg:
                import psycopg

                try:
                    self._conn = psycopg.connect(self.url, autocommit=True, connect_timeout=5)
                except psycopg.OperationalError as exc:
                    raise UnavailableError(f"batch tables at {self.url} do not answer: {exc}") from exc
            else:
                path = _sqlite_path(self.url)
                if not path.is_file():  # nothing published yet: a lookup finds nothing (404)
                    raise NotFoundError(
                        f"no batch tables at {path}: run `recstack batch users|pairs --sink {self.url}`, "
                        "or point the server at yours with `recstack serve --batch-sink URL` "
                        "(or RECSTACK_BATCH_SINK)"
                    )
                conn = sqlite3.connect(
                    f"file:{path}?mode=ro", uri=True, check_same_thread=False, cached_statements=256
                )
                self._conn = conn
        return self._conn

    def _query(self, sql: str, params: tuple[Any, ...]) -> Any:
        conn = self._connection()
        if self._pg:
            return conn.execute(sql.replace("?", "%s"), params, prepare=True).fetchone()
        return conn.execute(sql, params).fetchone()

    def _pointer(self, kind: str, refresh: bool = False) -> tuple[str, str, str] | None:
        """(table, release_id, version) of the current version of ``kind``, or None."""
        now = time.monotonic()
        hit = self._pointers.get(kind)
        if hit is not None and not refresh and now - hit[0] < self.pointer_ttl:
            return hit[1]
        t = "TRUE" if self._pg else "1"
        try:
            row = self._query(
                f"SELECT table_name, release_id, version FROM {META} WHERE kind = ? AND current = {t}",
                (kind,),
            )
        except Exception as exc:
            if self._is_missing_table(exc):
                row = None
            else:
                raise
        ptr = None if row is None else (str(row[0]), str(row[1]), str(row[2]))
        self._pointers[kind] = (now, ptr)
        return ptr

    def _is_missing_table(self, exc: Exception) -> bool:
        if isinstance(exc, sqlite3.OperationalError):
            return "no such table" in str(exc)
        try:
            import psycopg

            if isinstance(exc, psycopg.errors.UndefinedTable):
                return True
        except ImportError:  # pragma: no cover
            pass
        return False

    def lookup(self, kind: str, key: tuple[str, ...]) -> tuple[str, str, str, str] | None:
        """(items JSON, scores JSON, release_id, version) of ``key`` in the current ``kind`` table;
        None when the key is not there. `UnavailableError` when no version was published yet."""
        where = " AND ".join(f"{c} = ?" for c in _KEYS[kind])
        with self._lock:
            for attempt in range(2):
                ptr = self._pointer(kind, refresh=attempt > 0)
                if ptr is None:
                    raise NotFoundError(
                        f"no current batch {kind} table in {self.url}: run `recstack batch {kind}` first"
                    )
                table, rid, version = ptr
                try:
                    row = self._query(f"SELECT items, scores FROM {table} WHERE {where}", key)
                except Exception as exc:
                    if self._is_missing_table(exc) and attempt == 0:
                        continue  # the version was pruned since the pointer was read
                    raise
                return None if row is None else (str(row[0]), str(row[1]), rid, version)
        return None

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
