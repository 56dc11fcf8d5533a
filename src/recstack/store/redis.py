"""Redis feature store: binary-packed rows, one round trip per batch, release-namespaced keys.

Keys (``prefix`` defaults to ``recstack``)::

    {prefix}:current                         release id that readers open by default (atomic SET)
    {prefix}:{release}:meta                  JSON: schemas, vocabularies, sizes (written last: the
                                             load-complete marker)
    {prefix}:{release}:loading               the bulk-load lock (SET NX PX, a random token)
    {prefix}:{release}:user:{idx}            one packed row of every user feature
    {prefix}:{release}:item:{idx}            one packed row of every item feature
    {prefix}:{release}:history:{idx}         the release's history of user idx: 20-byte events
                                             (item i8, ts i8, rating f4), oldest first
    {prefix}:{release}:events:{idx}          events appended online for a known user (same records)
    {prefix}:{release}:events:ext:{key}      same, for users unknown to the release
    {prefix}:{release}:events:users          sorted set: events key suffix -> time of its last event
    {prefix}:{release}:events:applied        set of event-log offsets already appended (idempotence)

A row is the bytes of one record of a numpy structured dtype built from the feature schema
(little-endian, unaligned), so a batch of ``n`` rows decodes with one ``np.frombuffer``.

Loading. `bulk_load` writes a whole release with pipelined ``MSET`` / ``DEL`` + ``RPUSH`` and a
progress bar, ``meta`` last, then (optionally) switches ``current`` to it: readers see either the old
or the new release, never a mix. It runs under the release's lock (``SET NX`` with an expiry it
renews while it works), so of several processes that open the same release at once (the workers of
one server) exactly one loads and the others wait for ``meta``; a loader that dies leaves the lock to
expire and the next one starts over. Loading is idempotent: every key is overwritten (a history list
is deleted before it is pushed), so loading twice gives the same state, and the online events live
in their own keys, which a load never touches.

Failures. The client has socket timeouts and retries with jittered exponential backoff (`connect`);
every call goes through a `CircuitBreaker`, so while Redis is down calls fail at once with
`UnavailableError` instead of each waiting for its timeout. A store that finds its release's
``meta`` gone (Redis restarted empty, or flushed) raises `StoreEmptyError` and loads the release
again in the background, under the same lock, when it was given the source to load it from.

Online events are appended by one Lua script (atomic: all or nothing) that also applies the
`EventLimits`: the per-user cap (``LTRIM``), the expiry of the user's events and the bound on users
holding events (the least recently active are evicted).
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from recstack._progress import progress_bar
from recstack.errors import InvalidArgumentError, NotFoundError, UnavailableError
from recstack.store._breaker import BreakerOpenError, CircuitBreaker
from recstack.store.base import (
    EventLimits,
    FeatureArrays,
    FeatureStore,
    History,
    HistoryArrays,
    UserKey,
    check_release_id,
    schema_of,
    sort_history,
)

__all__ = [
    "DEFAULT_PREFIX",
    "HISTORY_DTYPE",
    "RedisFeatureStore",
    "StoreEmptyError",
    "bulk_load",
    "connect",
    "current_release",
    "delete_release",
    "ensure_loaded",
    "list_releases",
    "set_current",
]

log = logging.getLogger(__name__)

DEFAULT_PREFIX = "recstack"
HISTORY_DTYPE = np.dtype([("item", "<i8"), ("ts", "<i8"), ("rating", "<f4")])
_FORMAT = 1
_CHUNK = 2000
_KEY_CACHE_MAX = 2_000_000
#: the bulk-load lock's expiry (ms); the loader renews it after every chunk
_LOCK_MS = 30_000
#: default socket timeout (s) of `connect`: loopback round trips take well under a millisecond
DEFAULT_TIMEOUT = 0.5


class StoreEmptyError(UnavailableError):
    """Redis answers but holds no data of the release (restarted empty, or flushed)."""

    code = "store_empty"


def connect(
    url: str = "redis://127.0.0.1:6379/0",
    *,
    timeout: float = DEFAULT_TIMEOUT,
    retries: int = 1,
    **kwargs: Any,
) -> Any:
    """A ``redis.Redis`` client (binary responses) that answered PING; `UnavailableError` if none.

    ``timeout``: seconds for connecting and for each reply; ``retries``: further attempts on a
    connection error or timeout, after a jittered exponential backoff (8 ms doubling, at most 100 ms).
    A call on a dead server so fails after about ``timeout * (1 + retries)`` seconds."""
    import redis
    from redis.backoff import ExponentialWithJitterBackoff
    from redis.retry import Retry

    kwargs.setdefault("socket_timeout", timeout)
    kwargs.setdefault("socket_connect_timeout", timeout)
    kwargs.setdefault("retry", Retry(ExponentialWithJitterBackoff(cap=0.1, base=0.008), retries))
    client = redis.Redis.from_url(url, decode_responses=False, **kwargs)
    try:
        client.ping()
    except redis.RedisError as exc:
        raise UnavailableError(f"Redis at {url} does not answer ({exc}); start it or fix the URL") from exc
    return client


def _row_dtype(schema: Sequence[Sequence[Any]]) -> np.dtype[Any]:
    return np.dtype([(str(name), np.dtype(dt).newbyteorder("<"), tuple(shape)) for name, dt, shape in schema])


def _ns(prefix: str, release: str) -> str:
    return f"{prefix}:{release}"


def current_release(client: Any, prefix: str = DEFAULT_PREFIX) -> str | None:
    """The release id ``{prefix}:current`` points to, or None."""
    raw = client.get(f"{prefix}:current")
    return None if raw is None else raw.decode()


def set_current(client: Any, release_id: str, prefix: str = DEFAULT_PREFIX) -> None:
    """Point ``{prefix}:current`` at a fully loaded release (one atomic SET)."""
    check_release_id(release_id)
    if not client.exists(f"{_ns(prefix, release_id)}:meta"):
        raise NotFoundError(f"release {release_id!r} is not loaded in Redis under prefix {prefix!r}")
    client.set(f"{prefix}:current", release_id)


def list_releases(client: Any, prefix: str = DEFAULT_PREFIX) -> list[str]:
    """Release ids fully loaded under ``prefix`` (those with a meta key)."""
    out = []
    for key in client.scan_iter(match=f"{prefix}:*:meta", count=1000):
        out.append(key.decode()[len(prefix) + 1 : -len(":meta")])
    return sorted(out)


def delete_release(client: Any, release_id: str, prefix: str = DEFAULT_PREFIX) -> int:
    """Delete every key of a release (meta first, so it is never half visible); returns the count.
    Refuses to delete the current release."""
    check_release_id(release_id)
    if current_release(client, prefix) == release_id:
        raise InvalidArgumentError(f"release {release_id!r} is current; switch to another one first")
    ns = _ns(prefix, release_id)
    n = int(client.delete(f"{ns}:meta"))
    batch: list[bytes] = []
    for key in client.scan_iter(match=f"{ns}:*", count=2000):
        batch.append(key)
        if len(batch) >= _CHUNK:
            n += int(client.unlink(*batch))
            batch.clear()
    if batch:
        n += int(client.unlink(*batch))
    return n


def _chunks(n: int, size: int) -> Iterator[tuple[int, int]]:
    for lo in range(0, n, size):
        yield lo, min(n, lo + size)


def _release_lock(client: Any, key: str, token: str) -> None:
    """Delete the lock ``key`` if it still holds ``token`` (one atomic script: never another's lock)."""
    client.eval(
        "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0",
        1,
        key,
        token,
    )


def _write_release(
    client: Any,
    release_id: str,
    users: Mapping[str, npt.NDArray[Any]],
    items: Mapping[str, npt.NDArray[Any]],
    histories: HistoryArrays,
    vocabularies: Mapping[str, list[str]] | None,
    prefix: str,
    chunk: int,
    renew: Callable[[], None],
) -> None:
    """Write every key of a release, ``meta`` last. Idempotent: each key is overwritten (a history
    list deleted, then pushed), so a second load, or one after a half-done load, ends in the same
    state. ``renew`` is called after every chunk (it extends the load lock)."""
    n_users = len(histories.indptr) - 1
    n_items = next(iter(items.values())).shape[0] if items else 0
    ns = _ns(prefix, release_id)
    packed: dict[str, tuple[npt.NDArray[Any], int]] = {}
    for what, arrays, n in (("user", users, n_users), ("item", items, n_items)):
        schema = schema_of(arrays)
        rec = np.zeros(n, dtype=_row_dtype(schema))
        for name, _, _ in schema:
            rec[name] = arrays[name]
        packed[what] = (rec, n)
    total = n_users + n_items + n_users
    with progress_bar() as prog:
        task = prog.add_task(f"redis load {release_id}", total=total, status="")
        pipe = client.pipeline(transaction=False)
        for what, (rec, n) in packed.items():
            raw = rec.tobytes()
            width = rec.dtype.itemsize
            for lo, hi in _chunks(n, chunk):
                pipe.mset({f"{ns}:{what}:{i}": raw[i * width : (i + 1) * width] for i in range(lo, hi)})
                pipe.execute()
                renew()
                prog.advance(task, hi - lo)
        hist_rec = np.empty(len(histories.items), dtype=HISTORY_DTYPE)
        hist_rec["item"], hist_rec["ts"], hist_rec["rating"] = (
            histories.items,
            histories.timestamps,
            histories.ratings,
        )
        hraw = hist_rec.tobytes()
        w = HISTORY_DTYPE.itemsize
        indptr = histories.indptr
        for lo, hi in _chunks(n_users, chunk):
            for u in range(lo, hi):
                a, b = int(indptr[u]), int(indptr[u + 1])
                key = f"{ns}:history:{u}"
                pipe.delete(key)
                if b > a:
                    pipe.rpush(key, *(hraw[j * w : (j + 1) * w] for j in range(a, b)))
            pipe.execute()
            renew()
            prog.advance(task, hi - lo)
    meta = {
        "format": _FORMAT,
        "release_id": release_id,
        "n_users": n_users,
        "n_items": n_items,
        "user_schema": schema_of(users),
        "item_schema": schema_of(items),
        "vocabularies": dict(vocabularies or {}),
    }
    client.set(f"{ns}:meta", json.dumps(meta))


#: what a loader returns: (user features, item features, histories, vocabularies)
Source = Callable[[], tuple[FeatureArrays, FeatureArrays, HistoryArrays, Mapping[str, list[str]]]]


def ensure_loaded(
    client: Any,
    release_id: str,
    source: Source,
    *,
    prefix: str = DEFAULT_PREFIX,
    timeout: float = 600.0,
    chunk: int = _CHUNK,
    force: bool = False,
) -> bool:
    """Make sure Redis holds ``release_id``: returns at once when its ``meta`` exists (unless
    ``force``); otherwise exactly one caller, across processes, takes the release's lock and writes
    it from ``source()``, while the others wait for ``meta`` (taking over the load if the lock
    expires without it). Returns True when this caller loaded. `UnavailableError` after ``timeout``
    seconds or when Redis fails."""
    import redis

    check_release_id(release_id)
    ns = _ns(prefix, release_id)
    lock = f"{ns}:loading"
    token = uuid.uuid4().hex
    deadline = time.monotonic() + timeout
    try:
        while True:
            if not force and client.exists(f"{ns}:meta"):
                return False
            if client.set(lock, token, nx=True, px=_LOCK_MS):
                try:
                    if not force and client.exists(f"{ns}:meta"):  # loaded while we took the lock
                        return False
                    u, i, h, vocabs = source()

                    def renew() -> None:
                        client.pexpire(lock, _LOCK_MS)

                    _write_release(client, release_id, u, i, h, vocabs, prefix, chunk, renew)
                    return True
                finally:
                    _release_lock(client, lock, token)
            if time.monotonic() > deadline:
                raise UnavailableError(
                    f"Redis release {release_id!r} is still being loaded by another process after "
                    f"{timeout:.0f} s (lock {lock})"
                )
            time.sleep(0.05)
    except redis.RedisError as exc:
        raise UnavailableError(f"Redis bulk load of {release_id!r} failed: {exc}") from exc


def bulk_load(
    client: Any,
    release_id: str,
    users: Mapping[str, npt.NDArray[Any]],
    items: Mapping[str, npt.NDArray[Any]],
    histories: HistoryArrays,
    vocabularies: Mapping[str, list[str]] | None = None,
    *,
    prefix: str = DEFAULT_PREFIX,
    make_current: bool = True,
    chunk: int = _CHUNK,
    limits: EventLimits | None = None,
) -> RedisFeatureStore:
    """Write a release into Redis (pipelined, with a progress bar, under the release's load lock)
    and return a store reading it. Loading a release that is already there writes the same keys
    again (idempotent); ``meta`` is written last and ``current`` switched after it, so readers never
    see a partly loaded release."""
    ensure_loaded(
        client,
        release_id,
        lambda: (dict(users), dict(items), histories, dict(vocabularies or {})),
        prefix=prefix,
        chunk=chunk,
        force=True,
    )
    if make_current:
        set_current(client, release_id, prefix)
    return RedisFeatureStore(client, release_id, prefix=prefix, limits=limits)


#: KEYS: events list, users zset, base history list, applied-offsets set. ARGV: record, max events,
#: ttl (s), now (s), max users, member (events key suffix), events key prefix, the event-log offset
#: ('' for none: an offset already in the set changes nothing). Returns the history length after it.
_APPEND = """
if ARGV[8] ~= '' and redis.call('SADD', KEYS[4], ARGV[8]) == 0 then
  return redis.call('LLEN', KEYS[1]) + redis.call('LLEN', KEYS[3])
end
local n = redis.call('RPUSH', KEYS[1], ARGV[1])
local cap = tonumber(ARGV[2])
if n > cap then
  redis.call('LTRIM', KEYS[1], -cap, -1)
  n = cap
end
local ttl = tonumber(ARGV[3])
local now = tonumber(ARGV[4])
redis.call('EXPIRE', KEYS[1], ttl)
redis.call('ZADD', KEYS[2], now, ARGV[6])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - ttl)
local over = redis.call('ZCARD', KEYS[2]) - tonumber(ARGV[5])
if over > 0 then
  local old = redis.call('ZPOPMIN', KEYS[2], over)
  for i = 1, #old, 2 do
    redis.call('UNLINK', ARGV[7] .. old[i])
  end
end
return n + redis.call('LLEN', KEYS[3])
"""


class RedisFeatureStore(FeatureStore):
    """Reads one release's keys; ``get_users`` / ``get_items`` are one ``MGET`` each, a history one
    round trip (the release's list, the online events and the ``meta`` marker, pipelined).

    ``source`` (optional): how to load the release again when Redis lost it (`ensure_loaded`)."""

    def __init__(
        self,
        client: Any,
        release_id: str | None = None,
        *,
        prefix: str = DEFAULT_PREFIX,
        limits: EventLimits | None = None,
        breaker: CircuitBreaker | None = None,
        source: Source | None = None,
    ) -> None:
        import redis

        self._redis_error = redis.RedisError
        self.breaker = breaker or CircuitBreaker(failures=(redis.ConnectionError, redis.TimeoutError))
        try:
            rid = release_id if release_id is not None else current_release(client, prefix)
            if rid is None:
                raise NotFoundError(
                    f"no current release in Redis ({prefix}:current is unset); bulk_load one first"
                )
            raw = client.get(f"{_ns(prefix, check_release_id(rid))}:meta")
        except redis.RedisError as exc:
            raise UnavailableError(f"Redis does not answer: {exc}") from exc
        if raw is None:
            raise NotFoundError(
                f"release {rid!r} is not loaded in Redis under prefix {prefix!r}; bulk_load it"
            )
        meta = json.loads(raw)
        super().__init__(rid, int(meta["n_users"]), int(meta["n_items"]), meta.get("vocabularies"), limits)
        self.client = client
        self.prefix = prefix
        self.source = source
        self._ns = _ns(prefix, rid)
        self._user_dtype = _row_dtype(meta["user_schema"])
        self._item_dtype = _row_dtype(meta["item_schema"])
        self._key_cache: dict[str, npt.NDArray[np.object_]] = {}
        self._append_script = client.register_script(_APPEND)
        #: set while Redis answers without the release's data; cleared when it is loaded again
        self.empty = False
        self._reloading = threading.Lock()
        kw = client.connection_pool.connection_kwargs
        self._where = f"{kw.get('host', '?')}:{kw.get('port', '?')}"

    # ------------------------------------------------------------------ calls
    def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(*args)`` through the circuit breaker; Redis failures become `UnavailableError`."""
        try:
            return self.breaker.call(fn, *args)
        except BreakerOpenError as exc:
            raise UnavailableError(
                f"Redis at {self._where} is unavailable (failing fast for {exc.retry_in:.1f} s more; "
                f"last error: {exc.last_error})"
            ) from None
        except self._redis_error as exc:
            raise UnavailableError(f"Redis at {self._where} does not answer: {exc}") from exc

    def _lost(self) -> StoreEmptyError:
        """Redis answered without the release's meta: flag it, load it again in the background."""
        self.empty = True
        self._reload_in_background()
        return StoreEmptyError(
            f"Redis at {self._where} holds no data of release {self.release_id!r} (restarted empty or "
            "flushed?); " + ("it is being loaded again" if self.source is not None else "bulk_load it again")
        )

    def _reload_in_background(self) -> None:
        if self.source is None or not self._reloading.acquire(blocking=False):
            return

        def run() -> None:
            try:
                assert self.source is not None
                ensure_loaded(self.client, self.release_id, self.source, prefix=self.prefix)
                self.empty = False
                log.warning("Redis release %s is loaded again", self.release_id)
            except Exception as exc:  # retried on the next read that finds it missing
                log.warning("loading Redis release %s again failed: %s", self.release_id, exc)
            finally:
                self._reloading.release()

        threading.Thread(target=run, name=f"redis-reload-{self.release_id}", daemon=True).start()

    def health(self) -> dict[str, Any]:
        """``{"status": "ok" | "unavailable" | "empty", "detail": ...}`` from one PING + EXISTS."""

        def probe() -> Any:
            pipe = self.client.pipeline(transaction=False)
            pipe.ping()
            pipe.exists(f"{self._ns}:meta")
            return pipe.execute()

        try:
            _, has_meta = self._call(probe)
        except UnavailableError as exc:
            return {"status": "unavailable", "detail": exc.message, "breaker": self.breaker.state}
        if not has_meta:
            return {"status": "empty", "detail": self._lost().message, "breaker": self.breaker.state}
        self.empty = False
        return {"status": "ok", "detail": None, "breaker": self.breaker.state}

    # ------------------------------------------------------------------ contract
    @property
    def user_features(self) -> list[str]:
        return list(self._user_dtype.names or ())

    @property
    def item_features(self) -> list[str]:
        return list(self._item_dtype.names or ())

    def _mget(self, what: str, ids: npt.NDArray[np.int64], dtype: np.dtype[Any]) -> FeatureArrays:
        if len(ids) == 0:
            rec = np.zeros(0, dtype=dtype)
        else:
            keys = self._keys(what, ids)
            values = self._call(self.client.mget, keys)
            if any(v is None for v in values):
                first = next(i for i, v in zip(ids.tolist(), values, strict=True) if v is None)
                raise NotFoundError(
                    f"{what} {first} has no row in Redis release {self.release_id!r}"
                    " (deleted or partly loaded?); bulk_load the release again"
                )
            rec = np.frombuffer(b"".join(values), dtype=dtype)
        return {name: np.ascontiguousarray(rec[name]) for name in dtype.names or ()}

    def _keys(self, what: str, ids: npt.NDArray[np.int64]) -> list[bytes]:
        """Encoded keys of ``ids``; the key strings of a release are built once per store (up to
        ``_KEY_CACHE_MAX`` rows), which halves the client CPU of a 300-row MGET."""
        cache = self._key_cache.get(what)
        if cache is None:
            n = self.n_users if what == "user" else self.n_items
            if n > _KEY_CACHE_MAX:
                return [f"{self._ns}:{what}:{i}".encode() for i in ids.tolist()]
            cache = np.array([f"{self._ns}:{what}:{i}".encode() for i in range(n)], dtype=object)
            self._key_cache[what] = cache
        keys: list[bytes] = cache[ids].tolist()
        return keys

    def get_users(self, ids: npt.ArrayLike) -> FeatureArrays:
        return self._mget("user", self._check_ids(ids, self.n_users, "user"), self._user_dtype)

    def get_items(self, ids: npt.ArrayLike) -> FeatureArrays:
        return self._mget("item", self._check_ids(ids, self.n_items, "item"), self._item_dtype)

    @staticmethod
    def _member(key: UserKey) -> str:
        return str(key) if isinstance(key, int) else f"ext:{key}"

    def _history_key(self, key: UserKey) -> str:
        return f"{self._ns}:history:{key}" if isinstance(key, int) else f"{self._ns}:history:ext:{key}"

    def get_history(self, user: UserKey) -> History:
        key = self._check_user_key(user)

        def read() -> Any:
            pipe = self.client.pipeline(transaction=False)
            pipe.lrange(self._history_key(key), 0, -1)
            pipe.lrange(f"{self._ns}:events:{self._member(key)}", 0, -1)
            pipe.exists(f"{self._ns}:meta")
            return pipe.execute()

        base, events, has_meta = self._call(read)
        if not has_meta:
            raise self._lost()
        rec = np.frombuffer(b"".join(base) + b"".join(events), dtype=HISTORY_DTYPE)
        h = History(
            rec["item"].astype(np.int64),
            rec["ts"].astype(np.int64),
            rec["rating"].astype(np.float32),
        )
        return sort_history(h)

    def _append(self, user: UserKey, item: int, ts: int, rating: float, offset: int | None) -> int:
        rec = np.array([(item, ts, rating)], dtype=HISTORY_DTYPE)
        member = self._member(user)
        lim = self.limits
        keys = [f"{self._ns}:events:{member}", f"{self._ns}:events:users", self._history_key(user)]
        keys.append(f"{self._ns}:events:applied")
        args = [rec.tobytes(), lim.max_events, lim.ttl_seconds, int(time.time()), lim.max_users]
        args += [member, f"{self._ns}:events:", "" if offset is None else str(offset)]
        return int(self._call(lambda: self._append_script(keys=keys, args=args)))

    @property
    def online_users(self) -> int:
        """Users holding online events (the size of the release's events sorted set)."""
        return int(self._call(self.client.zcard, f"{self._ns}:events:users"))

    def is_current(self) -> bool:
        """True while ``{prefix}:current`` still points at this store's release."""
        return current_release(self.client, self.prefix) == self.release_id

    def close(self) -> None:
        self.client.close()
