"""The Redis store under concurrency and failures (issue 17): one loader per release and idempotent
loads (two workers doubled every history), bounded online events, a release that Redis lost is
loaded again, and a frozen Redis fails calls fast (circuit breaker) and recovers."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from typing import Any

import polars as pl
import pytest

from conftest import require_service
from recstack.errors import UnavailableError
from recstack.store import EventLimits, open_store
from recstack.store import redis as rs
from recstack.testing import free_port

pytestmark = pytest.mark.redis

USERS = pl.DataFrame({"user": [0, 1, 2]})
ITEMS = pl.DataFrame({"item": [0, 1, 2, 3], "year": [1990, 1991, 1992, 1993]})
# user 0 has 3 events, user 1 one, user 2 none
INTER = pl.DataFrame(
    {
        "user": [0, 0, 0, 1],
        "item": [1, 2, 3, 0],
        "rating": [4.0, 3.0, 5.0, 2.0],
        "timestamp": [10, 20, 30, 40],
    }
)


def _open(url: str, prefix: str, **kw: Any) -> rs.RedisFeatureStore:
    st = open_store(
        "redis", release_id="r1", users=USERS, items=ITEMS, interactions=INTER, url=url, prefix=prefix, **kw
    )
    assert isinstance(st, rs.RedisFeatureStore)
    return st


def test_concurrent_openers_load_once_and_loading_twice_is_the_same(
    redis_url: str, redis_client: Any, redis_prefix: str
) -> None:
    """Issue 17, item 4: both workers bulk-loaded, so user 1 had 544 history entries instead of 272."""
    loads: list[bool] = []
    real = rs._write_release

    def counting(*args: Any, **kwargs: Any) -> None:
        loads.append(True)
        time.sleep(0.2)  # a slow load: the other openers must wait for it, not load too
        real(*args, **kwargs)

    rs._write_release = counting  # type: ignore[assignment]
    try:
        stores: list[Any] = []
        threads = [
            threading.Thread(target=lambda: stores.append(_open(redis_url, redis_prefix))) for _ in range(4)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        rs._write_release = real  # type: ignore[assignment]
    assert len(loads) == 1 and len(stores) == 4
    key = f"{redis_prefix}:r1:history:0"
    assert redis_client.llen(key) == 3
    before = {k: redis_client.dump(k) for k in sorted(redis_client.scan_iter(match=f"{redis_prefix}:r1:*"))}
    src = open_store("embedded", release_id="r1", users=USERS, items=ITEMS, interactions=INTER)
    u, i, h = src.arrays()
    rs.bulk_load(rs.connect(redis_url), "r1", u, i, h, src.vocabularies, prefix=redis_prefix)  # again
    after = {k: redis_client.dump(k) for k in sorted(redis_client.scan_iter(match=f"{redis_prefix}:r1:*"))}
    assert after == before  # idempotent: the same keys, the same bytes
    assert stores[0].get_history(0).items.tolist() == [1, 2, 3]


def test_online_events_are_bounded_and_expire(redis_url: str, redis_client: Any, redis_prefix: str) -> None:
    st = _open(redis_url, redis_prefix, limits=EventLimits(max_users=2, max_events=3, ttl_seconds=3600))
    for t in range(5):
        n = st.append_event(0, t % 4, "view", ts=1000 + t)
    assert n == 3 + 3  # the release's 3 events + the last 3 online ones
    assert st.get_history(0).timestamps.tolist() == [10, 20, 30, 1002, 1003, 1004]
    assert 0 < redis_client.ttl(f"{redis_prefix}:r1:events:0") <= 3600
    st.append_event("a", 1, "view", ts=2000)
    time.sleep(1.1)  # the users' order is by the second of their last event
    st.append_event(0, 1, "view", ts=2001)
    st.append_event("b", 2, "view", ts=2002)  # a third user: "a", the least recently active, goes
    assert st.online_users == 2
    assert st.get_history("a").items.tolist() == []
    assert st.get_history("b").items.tolist() == [2]
    assert len(st.get_history(0).items) == 6
    assert st.get_history(1).items.tolist() == [0]  # the release's history is never evicted


def test_a_release_that_redis_lost_is_loaded_again(
    redis_url: str, redis_client: Any, redis_prefix: str
) -> None:
    """Issue 17, item 4: Redis back empty answered 200 "as if no history"; now the store says so
    (StoreEmptyError, which serving turns into degraded answers and a 503 /readyz) and loads the
    release again in the background."""
    st = _open(redis_url, redis_prefix)
    st.append_event(0, 0, "view", ts=5000)
    for k in list(redis_client.scan_iter(match=f"{redis_prefix}:r1:*")):
        if b":events" not in k:  # everything of the release but the online events
            redis_client.delete(k)
    with pytest.raises(rs.StoreEmptyError, match="holds no data"):
        st.get_history(0)
    assert st.health()["status"] in ("empty", "ok")
    deadline = time.monotonic() + 20
    while True:
        try:
            h = st.get_history(0)
            break
        except rs.StoreEmptyError:
            assert time.monotonic() < deadline, "the release was not loaded again"
            time.sleep(0.1)
    assert h.items.tolist() == [1, 2, 3, 0]  # the release's history back, and the online event kept
    assert st.health()["status"] == "ok" and not st.empty


@pytest.fixture
def private_redis() -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """A redis-server of this test's own (it is frozen and killed: never the shared one)."""
    exe = shutil.which("redis-server")
    if exe is None:
        require_service("redis-server", "not installed")
    port = free_port()
    proc = subprocess.Popen(
        [str(exe), "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    url = f"redis://127.0.0.1:{port}/0"
    deadline = time.monotonic() + 10
    while True:
        try:
            rs.connect(url, timeout=0.2)
            break
        except UnavailableError:
            assert time.monotonic() < deadline
            time.sleep(0.05)
    try:
        yield url, proc
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def test_frozen_redis_fails_fast_then_recovers(private_redis: tuple[str, subprocess.Popen[bytes]]) -> None:
    url, proc = private_redis
    st = _open(url, "rstest", timeout=0.2, retries=1)
    assert st.get_history(0).items.tolist() == [1, 2, 3]
    os.killpg(proc.pid, signal.SIGSTOP)
    try:
        took, messages = [], []
        for _ in range(6):
            t0 = time.perf_counter()
            with pytest.raises(UnavailableError) as ei:
                st.get_history(0)
            took.append(time.perf_counter() - t0)
            messages.append(ei.value.message)
        # the first 3 calls wait for their timeout (0.2 s, one retry), then the circuit is open and
        # calls fail at once, without touching Redis
        assert min(took[:3]) >= 0.2 and max(took) < 5.0
        assert all("does not answer" in m for m in messages[:3])
        assert all("failing fast" in m for m in messages[3:]) and st.breaker.state == "open"
        assert min(took[3:]) < 0.05
        with pytest.raises(UnavailableError, match="failing fast"):
            st.append_event(0, 1, "view", ts=100)
    finally:
        os.killpg(proc.pid, signal.SIGCONT)
    deadline = time.monotonic() + 5
    while True:
        try:
            assert st.get_history(0).items.tolist() == [1, 2, 3]  # nothing was written while frozen
            break
        except UnavailableError:
            assert time.monotonic() < deadline, "no recovery"
            time.sleep(0.05)
    assert st.breaker.state == "closed"
