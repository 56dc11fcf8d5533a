"""The server's side of the event log: durable appends before ``201`` and histories kept in step.

`EventSink` (one per worker process) appends events to the `EventLog` from one writer thread. The
events that arrive while an append is in flight go together into the next one: one transaction,
one fsync for the whole group (group commit), so the log's cost per event falls as the load rises.
``POST /v1/events`` awaits its event's offset and answers 201 only then.

`HistoryFeed` (one per loaded release) applies the log to the release's user histories:

- on load it replays every event after the release's data cut-off (the last log offset the release
  was built from, `release_cutoff`), so a restarted worker has every acknowledged event;
- afterwards the holder's poller calls `HistoryFeed.catch_up` every ``event_poll_s`` seconds, which
  applies the events other workers appended (each worker holds its own embedded histories).

Appends are idempotent by offset (`recstack.store.FeatureStore.append_event`), so the worker's own
events, applied at once by the request, are skipped when the feed reads them back, and replaying
into a shared Redis store after a restart doubles nothing. Events for items unknown to the release
stay in the log (the next release learns them) but cannot enter a history of item indices.
``item`` records (``POST /v1/items``) add their item to the pipeline's catalogue (`Pipeline.add_items`),
so a restarted worker, and every other worker, serves the items added online.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import Callable
from typing import Any

from recstack.events import INTERACTION_TYPES, EventLog, LoggedEvent, NewEvent
from recstack.ops import metrics, monitoring

__all__ = ["EventSink", "HistoryFeed", "release_cutoff"]

log = logging.getLogger(__name__)

_STOP = object()


class EventSink:
    """Group-committing appender: ``await sink.append(event)`` -> the event's offset, durable."""

    def __init__(self, event_log: EventLog, *, max_batch: int = 512) -> None:
        self.log = event_log
        self.max_batch = max_batch
        self._q: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="event-log-writer", daemon=True)
        self._thread.start()
        #: appends and events written (batches = groups, for the metrics / benchmarks)
        self.batches = 0
        self.events = 0
        #: events queued with `submit` (no waiter) that the log refused
        self.dropped = 0

    async def append(self, event: NewEvent) -> int:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[int] = loop.create_future()
        self._q.put((event, fut, loop))
        return await fut

    def submit(self, event: NewEvent) -> None:
        """Queue ``event`` without waiting for it (impressions: the answer does not wait for the
        log; an append that fails is counted in ``dropped`` and logged)."""
        self._q.put((event, None, None))

    def append_sync(self, event: NewEvent) -> int:
        """The same from a thread without an event loop (gRPC handlers, tests)."""
        [off] = self.log.append([event])
        return off

    def _run(self) -> None:
        while True:
            first = self._q.get()
            if first is _STOP:
                return
            group = [first]
            while len(group) < self.max_batch:
                try:
                    nxt = self._q.get_nowait()
                except queue.Empty:
                    break
                if nxt is _STOP:
                    self._q.put(_STOP)
                    break
                group.append(nxt)
            try:
                offsets = self.log.append([g[0] for g in group])
            except Exception as exc:  # every waiter gets the error: nothing was acknowledged
                metrics.EVENTS_LOGGED.labels(outcome="error").inc(len(group))
                for _, fut, loop in group:
                    if fut is None:  # a submitted impression: counted, nobody waits for it
                        self.dropped += 1
                        monitoring.IMPRESSIONS_DROPPED.inc()
                    else:
                        loop.call_soon_threadsafe(_set_exception, fut, exc)
                log.warning("event log append of %d events failed: %s", len(group), exc)
                continue
            self.batches += 1
            self.events += len(group)
            metrics.EVENTS_LOGGED.labels(outcome="ok").inc(len(group))
            metrics.EVENT_LOG_COMMITS.inc()
            for (_, fut, loop), off in zip(group, offsets, strict=True):
                if fut is not None:
                    loop.call_soon_threadsafe(_set_result, fut, off)

    def close(self) -> None:
        self._q.put(_STOP)
        self._thread.join(timeout=10)
        self.log.close()


def _set_result(fut: asyncio.Future[int], value: int) -> None:
    if not fut.done():
        fut.set_result(value)


def _set_exception(fut: asyncio.Future[int], exc: BaseException) -> None:
    if not fut.done():
        fut.set_exception(exc)


def release_cutoff(release: Any) -> tuple[str | None, int]:
    """(log id, last offset) of the event log a release was built from; (None, 0) when it was built
    without one (then every event in the log is newer than the release)."""
    manifest = getattr(release, "manifest", None)
    ev = getattr(manifest, "events", None)
    if ev is None and isinstance(manifest, dict):
        ev = manifest.get("events")
    if ev is None:
        return None, 0
    if isinstance(ev, dict):
        return ev.get("log_id"), int(ev.get("last_offset") or 0)
    return getattr(ev, "log_id", None), int(getattr(ev, "last_offset", 0) or 0)


class HistoryFeed:
    """Applies the log's events after ``after`` to ``history`` (a `HistoryBackend`) via ``catalog``
    (external ids -> indices)."""

    def __init__(self, event_log: EventLog, history: Any, catalog: Any, after: int) -> None:
        self.log = event_log
        self.history = history
        self.catalog = catalog
        self.cursor = int(after)
        self.applied = 0
        self.unknown_items = 0
        self._lock = threading.Lock()
        #: ``item`` records (items added online): given to ``on_item`` (the pipeline's `add_items`),
        #: kept in ``pending_items`` until it is set
        self.on_item: Callable[[LoggedEvent], None] | None = None
        self.pending_items: list[LoggedEvent] = []

    @classmethod
    def for_release(cls, event_log: EventLog, history: Any, catalog: Any, release: Any) -> HistoryFeed:
        log_id, cutoff = release_cutoff(release)
        if log_id is not None and log_id != event_log.log_id:
            log.warning(
                "release %s was built from event log %s, this server logs to %s: replaying all of it",
                getattr(release, "id", "?"),
                log_id,
                event_log.log_id,
            )
            cutoff = 0
        return cls(event_log, history, catalog, cutoff)

    def apply(self, e: LoggedEvent) -> None:
        if e.type == "item" and e.item_id is not None:
            if self.on_item is not None:
                self.on_item(e)
            else:
                self.pending_items.append(e)
            return
        if e.type not in INTERACTION_TYPES or e.item_id is None:
            return
        item = self.catalog.dataset.item_vocab.get(e.item_id)
        if item is None:
            self.unknown_items += 1
            return
        uidx = self.catalog.user_index(e.user_id)
        rating = e.rating if e.type == "rating" else None
        self.history.append(e.user_id, uidx, int(item), e.type, rating, int(e.ts), offset=e.offset)
        self.applied += 1

    def catch_up(self, on_batch: Callable[[int], None] | None = None) -> int:
        """Apply every event after the cursor; returns how many were read."""
        n = 0
        with self._lock:
            for batch in self.log.iter_batches(self.cursor):
                before = self.applied
                for e in batch:
                    self.apply(e)
                self.cursor = batch[-1].offset
                n += len(batch)
                metrics.EVENTS_REPLAYED.inc(self.applied - before)
                if on_batch is not None:
                    on_batch(n)
        return n
