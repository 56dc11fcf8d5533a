"""The event log on Redis Streams (``--store redis``).

Keys (``prefix`` defaults to ``recstack``)::

    {prefix}:events         a stream; entry id ``<offset>-0``, one field ``e`` = the event's JSON
    {prefix}:events:seq     the last offset given (INCR)
    {prefix}:events:id      the log id

An append is one Lua script (atomic: no other client's command runs in between): it INCRs the
counter once per event and XADDs the event under the id ``<offset>-0``, so stream order is offset
order and an offset is never reused (compaction trims the stream with ``XTRIM MINID`` and leaves
the counter alone). Durability is the Redis server's: with ``appendonly yes`` and
``appendfsync always`` an acknowledged append survives a crash of Redis itself; with the default
``everysec`` up to a second of appends can be lost when *Redis* dies (a killed recstack server
loses nothing either way).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from recstack.errors import UnavailableError
from recstack.events.base import EventLog, LoggedEvent, NewEvent

__all__ = ["RedisEventLog"]

# KEYS[1] stream, KEYS[2] counter; ARGV: one JSON per event -> their offsets
_APPEND = """
local seq = redis.call('GET', KEYS[2])
if not seq then
  local last = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
  local start = 0
  if #last > 0 then start = tonumber(string.match(last[1][1], '^(%d+)')) end
  redis.call('SET', KEYS[2], start)
end
local out = {}
for i = 1, #ARGV do
  local o = redis.call('INCR', KEYS[2])
  redis.call('XADD', KEYS[1], o .. '-0', 'e', ARGV[i])
  out[i] = o
end
return out
"""


class RedisEventLog(EventLog):
    """An event log in a Redis stream under ``prefix``."""

    backend = "redis"

    def __init__(self, client: Any, *, prefix: str = "recstack", url: str = "redis://") -> None:
        import redis

        self._err = redis.RedisError
        self.client = client
        self.prefix = prefix
        self._stream = f"{prefix}:events"
        self._seq = f"{prefix}:events:seq"
        self._url = url
        try:
            self._script = client.register_script(_APPEND)
            client.set(f"{prefix}:events:id", uuid.uuid4().hex, nx=True)
            self._log_id: str = client.get(f"{prefix}:events:id").decode()
        except redis.RedisError as exc:
            raise UnavailableError(f"event log on Redis does not answer: {exc}") from exc

    @property
    def log_id(self) -> str:
        return self._log_id

    @property
    def url(self) -> str:
        return self._url

    def append(self, events: Sequence[NewEvent]) -> list[int]:
        if not events:
            return []
        try:
            out = self._script(keys=[self._stream, self._seq], args=[e.to_json() for e in events])
        except self._err as exc:
            raise UnavailableError(f"event log on Redis: append failed: {exc}") from exc
        return [int(o) for o in out]

    def read(self, after: int = 0, limit: int = 10_000, upto: int | None = None) -> list[LoggedEvent]:
        hi = "+" if upto is None else f"{int(upto)}-0"
        try:
            entries = self.client.xrange(self._stream, f"({int(after)}-0", hi, count=int(limit))
        except self._err as exc:
            raise UnavailableError(f"event log on Redis: read failed: {exc}") from exc
        out = []
        for eid, fields in entries:
            off = int(eid.split(b"-", 1)[0])
            out.append(LoggedEvent.of(off, NewEvent.from_json(fields[b"e"])))
        return out

    def last_offset(self) -> int:
        try:
            raw = self.client.get(self._seq)
        except self._err as exc:
            raise UnavailableError(f"event log on Redis does not answer: {exc}") from exc
        return int(raw) if raw is not None else 0

    def first_offset(self) -> int | None:
        first = self.client.xrange(self._stream, "-", "+", count=1)
        return int(first[0][0].split(b"-", 1)[0]) if first else None

    def count(self) -> int:
        return int(self.client.xlen(self._stream))

    def compact(self, upto: int) -> int:
        return int(self.client.xtrim(self._stream, minid=f"{int(upto) + 1}-0", approximate=False))

    def close(self) -> None:
        self.client.close()
