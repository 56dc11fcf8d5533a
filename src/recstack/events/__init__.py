"""recstack.events: the durable event log behind ``POST /v1/events`` and the builds that learn from it.

One `EventLog` contract (`recstack.events.base`), three backends chosen by URL with `open_log`:

=======================================  ==============================================================
``sqlite:///path/events.db`` or a path   embedded (default): SQLite in WAL mode, fsync per append batch
``redis://host:port/db?prefix=recstack`` Redis Streams (the log of ``serve --store redis``)
``postgresql://...?table=recstack_events`` PostgreSQL
``off``                                  no log (`open_log` returns None)
=======================================  ==============================================================

`recstack.events.dataset` turns a log (plus an optional base data set) into a `Dataset` for
``recstack build``, with the duplicate / late-event policy documented there.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from recstack.errors import ConfigError
from recstack.events.base import (
    EVENT_SCHEMA,
    EVENT_TYPES,
    INTERACTION_TYPES,
    EventLog,
    EventType,
    LoggedEvent,
    NewEvent,
    events_frame,
)

__all__ = [
    "EVENT_SCHEMA",
    "EVENT_TYPES",
    "INTERACTION_TYPES",
    "EventLog",
    "EventType",
    "LoggedEvent",
    "NewEvent",
    "default_log_url",
    "events_frame",
    "open_log",
]

OFF = ("off", "none", "")


def default_log_url(releases_dir: str | Path, store: str = "embedded", redis_url: str | None = None) -> str:
    """The log a server and ``recstack retrain`` use when none is configured: Redis Streams beside
    the Redis store, else ``events/events.db`` next to the releases directory."""
    if store == "redis" and redis_url:
        return redis_url
    return f"sqlite:///{Path(releases_dir).resolve().parent / 'events' / 'events.db'}"


def _split_param(url: str, name: str, default: str) -> tuple[str, str]:
    """(url without the query parameter ``name``, its value or ``default``)."""
    parts = urlsplit(url)
    q = parse_qsl(parts.query, keep_blank_values=True)
    value = next((v for k, v in q if k == name), default)
    rest = urlencode([(k, v) for k, v in q if k != name])
    return urlunsplit(parts._replace(query=rest)), value


def open_log(url: str | Path | None) -> EventLog | None:
    """Open (creating when missing) the log at ``url``; None for ``off``. See the module docstring."""
    if url is None:
        return None
    s = str(url)
    if s.strip().lower() in OFF:
        return None
    if s.startswith("sqlite:///") or "://" not in s:
        from recstack.events.sqlite import SqliteEventLog

        return SqliteEventLog(s.removeprefix("sqlite:///") if s.startswith("sqlite:///") else s)
    scheme = s.split("://", 1)[0]
    if scheme in ("redis", "rediss", "unix"):
        from recstack.events.redis import RedisEventLog
        from recstack.store.redis import connect

        bare, prefix = _split_param(s, "prefix", "recstack")
        safe = urlsplit(bare)._replace(netloc=urlsplit(bare).hostname or "")
        return RedisEventLog(connect(bare), prefix=prefix, url=f"{urlunsplit(safe)}?prefix={prefix}")
    if scheme in ("postgresql", "postgres"):
        from recstack.events.postgres import PostgresEventLog

        bare, table = _split_param(s, "table", "recstack_events")
        return PostgresEventLog(bare, table=table)
    raise ConfigError(f"event log URL {s!r}: use sqlite:///path, redis://..., postgresql://... or 'off'")
