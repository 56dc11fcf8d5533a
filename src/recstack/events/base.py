"""The `EventLog` contract and the record every backend stores.

An event log is append-only. `EventLog.append` gives each event an **offset**: an integer greater
than the offset of every event appended before it (by any process), never reused, not necessarily
contiguous (a failed append may leave a gap). When `append` returns, the events are durable in the
backend's sense (SQLite: fsync'd to the write-ahead log; Redis: per the server's ``appendfsync``;
PostgreSQL: committed) and visible to every reader, in offset order: a reader that has seen offset
``o`` never later sees an event with an offset ``<= o`` appear.

Record schema (`LoggedEvent`; one JSON-able dict per event, the same in every backend):

=============  ===========================================================================
``offset``     int, assigned by the log
``type``       ``view`` | ``click`` | ``rating`` | ``impression`` | ``item`` (a catalogue item
               added online: ``POST /v1/items``)
``user_id``    str: the external user id (integers as their decimal string)
``item_id``    str | None: the external item id (None for an impression)
``rating``     float | None: the rating of a ``rating`` event
``ts``         int: when the event happened (Unix seconds; the client's or the server's clock)
``received``   float: when the server accepted it (Unix seconds, millisecond precision)
``release_id`` str | None: the release that was serving when the event was accepted
``request_id`` str | None: the API request that carried it
``payload``    dict | None: type-specific fields; an impression holds ``{"items": [ids],
               "positions": [ints], "arm": str, "request_id": the recommendation's request}``;
               an item holds ``{"title": str, "year": int | None, "genres": [str], "text": str}``
=============  ===========================================================================

Backends: ``sqlite`` (embedded, WAL, one fsync per append batch: the default), ``redis`` (Redis
Streams) and ``postgres``. `open_log(url)` picks one from a URL.
"""

from __future__ import annotations

import json
import math
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal, get_args

import polars as pl

from recstack.errors import InvalidArgumentError

__all__ = [
    "EVENT_SCHEMA",
    "EVENT_TYPES",
    "EventLog",
    "EventType",
    "LoggedEvent",
    "NewEvent",
    "events_frame",
]

EventType = Literal["view", "click", "rating", "impression", "item"]
EVENT_TYPES: tuple[str, ...] = get_args(EventType)
#: the training interactions among the event types (an impression is an exposure, not a choice)
INTERACTION_TYPES: tuple[str, ...] = ("view", "click", "rating")

#: polars schema of `events_frame` / Parquet exports
EVENT_SCHEMA: dict[str, Any] = {
    "offset": pl.Int64,
    "type": pl.String,
    "user_id": pl.String,
    "item_id": pl.String,
    "rating": pl.Float64,
    "ts": pl.Int64,
    "received": pl.Float64,
    "release_id": pl.String,
    "request_id": pl.String,
    "payload": pl.String,
}


@dataclass(frozen=True, slots=True)
class NewEvent:
    """An event to append (its offset is not known yet). See the module docstring for the fields."""

    type: str
    user_id: str
    item_id: str | None
    ts: int
    rating: float | None = None
    received: float = 0.0
    release_id: str | None = None
    request_id: str | None = None
    payload: Mapping[str, Any] | None = None

    def __post_init__(self) -> None:
        if self.type not in EVENT_TYPES:
            raise InvalidArgumentError(f"event type {self.type!r} is not one of {', '.join(EVENT_TYPES)}")
        if not isinstance(self.user_id, str) or not self.user_id:
            raise InvalidArgumentError("an event needs a non-empty user_id string")
        if self.type != "impression" and not self.item_id:
            raise InvalidArgumentError(f"a {self.type!r} event needs an item_id")
        if self.type == "item" and not (self.payload and str(self.payload.get("title") or "").strip()):
            raise InvalidArgumentError("an 'item' record needs a payload with a non-empty title")
        if self.type == "rating" and (self.rating is None or not math.isfinite(self.rating)):
            raise InvalidArgumentError("a 'rating' event needs a finite rating")
        if isinstance(self.ts, bool) or not isinstance(self.ts, int):
            raise InvalidArgumentError(f"ts must be integer Unix seconds, got {self.ts!r}")

    def to_json(self) -> str:
        """One compact JSON object (the stored form in Redis; SQLite / PostgreSQL use columns)."""
        d = asdict(self)
        if d["payload"] is not None:
            d["payload"] = dict(d["payload"])
        return json.dumps(d, separators=(",", ":"))

    @classmethod
    def from_json(cls, raw: str | bytes) -> NewEvent:
        return cls(**json.loads(raw))

    def payload_json(self) -> str | None:
        return None if self.payload is None else json.dumps(dict(self.payload), separators=(",", ":"))


@dataclass(frozen=True, slots=True)
class LoggedEvent:
    """An event as read back from the log, with its offset."""

    offset: int
    type: str
    user_id: str
    item_id: str | None
    ts: int
    rating: float | None
    received: float
    release_id: str | None
    request_id: str | None
    payload: dict[str, Any] | None

    @classmethod
    def of(cls, offset: int, ev: NewEvent) -> LoggedEvent:
        return cls(
            offset=int(offset),
            type=ev.type,
            user_id=ev.user_id,
            item_id=ev.item_id,
            ts=int(ev.ts),
            rating=ev.rating,
            received=float(ev.received),
            release_id=ev.release_id,
            request_id=ev.request_id,
            payload=None if ev.payload is None else dict(ev.payload),
        )


def events_frame(events: Sequence[LoggedEvent]) -> pl.DataFrame:
    """Events as a polars DataFrame with `EVENT_SCHEMA` (``payload`` as a JSON string)."""
    cols: dict[str, list[Any]] = {k: [] for k in EVENT_SCHEMA}
    for e in events:
        cols["offset"].append(e.offset)
        cols["type"].append(e.type)
        cols["user_id"].append(e.user_id)
        cols["item_id"].append(e.item_id)
        cols["rating"].append(e.rating)
        cols["ts"].append(e.ts)
        cols["received"].append(e.received)
        cols["release_id"].append(e.release_id)
        cols["request_id"].append(e.request_id)
        cols["payload"].append(None if e.payload is None else json.dumps(e.payload, separators=(",", ":")))
    return pl.DataFrame(cols, schema=EVENT_SCHEMA)


class EventLog(ABC):
    """An append-only, durable log of events with monotonically increasing offsets."""

    #: the backend's name (``sqlite``, ``redis``, ``postgres``)
    backend: str = ""

    @property
    @abstractmethod
    def log_id(self) -> str:
        """A random id fixed when the log was created: offsets are comparable only within one log
        (a release records the log id with its offset range)."""

    @property
    @abstractmethod
    def url(self) -> str:
        """Where the log lives, without credentials."""

    @abstractmethod
    def append(self, events: Sequence[NewEvent]) -> list[int]:
        """Append events atomically (all or none) in the given order; their offsets, ascending.
        Durable and visible to readers when it returns."""

    @abstractmethod
    def read(self, after: int = 0, limit: int = 10_000, upto: int | None = None) -> list[LoggedEvent]:
        """Up to ``limit`` events with ``after < offset (<= upto)``, in offset order."""

    @abstractmethod
    def last_offset(self) -> int:
        """The largest offset ever appended (0 when none; compaction does not lower it)."""

    @abstractmethod
    def first_offset(self) -> int | None:
        """The smallest offset still held (None when the log holds no event)."""

    @abstractmethod
    def count(self) -> int:
        """Events held (compacted ones are gone)."""

    @abstractmethod
    def compact(self, upto: int) -> int:
        """Delete every event with ``offset <= upto`` (after exporting them: `export_parquet`);
        returns how many went. Offsets are never reused."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""

    def __enter__(self) -> EventLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ generic helpers
    def iter_batches(
        self, after: int = 0, upto: int | None = None, batch: int = 10_000
    ) -> Iterator[list[LoggedEvent]]:
        """Every event with ``after < offset <= upto`` in batches, in offset order."""
        cursor = after
        while True:
            evs = self.read(cursor, batch, upto)
            if not evs:
                return
            yield evs
            cursor = evs[-1].offset

    def to_frame(self, after: int = 0, upto: int | None = None) -> pl.DataFrame:
        """The events with ``after < offset <= upto`` as one DataFrame (`EVENT_SCHEMA`)."""
        parts = [events_frame(b) for b in self.iter_batches(after, upto)]
        return pl.concat(parts) if parts else events_frame([])

    def export_parquet(self, path: str, after: int = 0, upto: int | None = None) -> int:
        """Write the events with ``after < offset <= upto`` to a Parquet file; returns the count."""
        df = self.to_frame(after, upto)
        df.write_parquet(path)
        return df.height

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r})"
