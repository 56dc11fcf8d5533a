"""The EventLog contract, run on every backend: SQLite (embedded), Redis Streams, PostgreSQL."""

from __future__ import annotations

import multiprocessing
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from recstack.errors import InvalidArgumentError
from recstack.events import EVENT_SCHEMA, EventLog, NewEvent, open_log

Factory = Callable[[], EventLog]


def _ev(i: int, **kw: Any) -> NewEvent:
    base: dict[str, Any] = {"type": "view", "user_id": f"u{i % 3}", "item_id": str(i), "ts": 1_000 + i}
    base.update(kw)
    return NewEvent(**base)


def _url(request: pytest.FixtureRequest, backend: str, tmp_path: Path) -> str:
    if backend == "sqlite":
        return f"sqlite:///{tmp_path / 'ev' / 'events.db'}"
    if backend == "redis":
        url = request.getfixturevalue("redis_url")
        request.getfixturevalue("redis_client")  # deletes the prefix's keys afterwards
        return f"{url}?prefix={request.getfixturevalue('redis_prefix')}"
    dsn = request.getfixturevalue("postgres_dsn")
    sep = "&" if "?" in dsn else "?"
    return f"{dsn}{sep}table=rstest_ev_{uuid.uuid4().hex[:10]}"


@pytest.fixture(
    params=[
        "sqlite",
        pytest.param("redis", marks=pytest.mark.redis),
        pytest.param("postgres", marks=pytest.mark.postgres),
    ]
)
def make_log(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Factory]:
    url = _url(request, request.param, tmp_path)
    opened: list[EventLog] = []

    def make() -> EventLog:
        log = open_log(url)
        assert log is not None
        opened.append(log)
        return log

    yield make
    if request.param == "postgres" and opened:
        opened[0].drop()  # type: ignore[attr-defined]
    for log in opened:
        log.close()


def test_empty_log(make_log: Factory) -> None:
    log = make_log()
    assert (log.last_offset(), log.first_offset(), log.count()) == (0, None, 0)
    assert log.read() == []
    assert log.append([]) == []


def test_offsets_increase_and_read_back_every_field(make_log: Factory) -> None:
    log = make_log()
    a = log.append([_ev(1), _ev(2, type="rating", rating=4.5)])
    b = log.append([_ev(3, release_id="r1", request_id="q1", received=12.5)])
    assert len(a) == 2 and len(b) == 1
    assert a[0] < a[1] < b[0]  # increasing across calls
    assert log.last_offset() == b[0] and log.first_offset() == a[0] and log.count() == 3
    got = log.read()
    assert [e.offset for e in got] == [*a, *b]
    assert (got[1].type, got[1].rating, got[1].user_id, got[1].item_id, got[1].ts) == (
        "rating", 4.5, "u2", "2", 1_002
    )  # fmt: skip
    assert (got[2].release_id, got[2].request_id, got[2].received) == ("r1", "q1", 12.5)
    assert got[0].rating is None and got[0].payload is None


def test_impression_payload_round_trips(make_log: Factory) -> None:
    log = make_log()
    payload = {"items": ["10", "20", "30"], "positions": [1, 2, 3], "arm": "B", "request_id": "rq-7"}
    [off] = log.append([NewEvent("impression", "u1", None, 2_000, payload=payload, release_id="r9")])
    [e] = log.read()
    assert (e.offset, e.type, e.item_id, e.payload, e.release_id) == (off, "impression", None, payload, "r9")


def test_read_after_limit_upto(make_log: Factory) -> None:
    log = make_log()
    offs = log.append([_ev(i) for i in range(10)])
    assert [e.offset for e in log.read(after=offs[3])] == offs[4:]
    assert [e.offset for e in log.read(after=offs[3], limit=2)] == offs[4:6]
    assert [e.offset for e in log.read(after=offs[3], upto=offs[6])] == offs[4:7]
    batches = list(log.iter_batches(after=0, batch=3))
    assert [len(b) for b in batches] == [3, 3, 3, 1]
    assert [e.offset for b in batches for e in b] == offs


def test_frame_and_parquet_export(make_log: Factory, tmp_path: Path) -> None:
    log = make_log()
    offs = log.append([_ev(i, type="rating", rating=float(i)) for i in range(5)])
    df = log.to_frame(after=offs[1])
    assert df.schema == pl.Schema(EVENT_SCHEMA)
    assert df["offset"].to_list() == offs[2:] and df["rating"].to_list() == [2.0, 3.0, 4.0]
    n = log.export_parquet(str(tmp_path / "ev.parquet"), upto=offs[2])
    back = pl.read_parquet(tmp_path / "ev.parquet")
    assert n == 3 and back["offset"].to_list() == offs[:3]


def test_compact_keeps_offsets_monotonic(make_log: Factory) -> None:
    log = make_log()
    offs = log.append([_ev(i) for i in range(6)])
    assert log.compact(offs[3]) == 4
    assert log.count() == 2 and log.first_offset() == offs[4]
    assert [e.offset for e in log.read()] == offs[4:]
    assert log.last_offset() == offs[5]  # compaction does not lower it
    [new] = log.append([_ev(9)])
    assert new > offs[5]  # never reused


def test_compact_everything_then_append(make_log: Factory) -> None:
    log = make_log()
    offs = log.append([_ev(i) for i in range(3)])
    log.compact(offs[-1])
    assert log.count() == 0 and log.first_offset() is None
    [new] = log.append([_ev(5)])
    assert new > offs[-1]


def test_reopen_keeps_events_and_log_id(make_log: Factory) -> None:
    first = make_log()
    offs = first.append([_ev(i) for i in range(4)])
    again = make_log()
    assert again.log_id == first.log_id and len(first.log_id) == 32
    assert [e.offset for e in again.read()] == offs
    [more] = again.append([_ev(7)])
    assert more > offs[-1] and first.read(after=offs[-1])[0].offset == more


def test_two_handles_interleave_without_reusing_offsets(make_log: Factory) -> None:
    a, b = make_log(), make_log()
    got: list[int] = []
    for i in range(20):
        got += (a if i % 2 else b).append([_ev(i), _ev(i + 100)])
    assert got == sorted(got) and len(set(got)) == 40
    assert [e.offset for e in a.read(limit=100)] == got


def test_invalid_events_are_refused() -> None:
    with pytest.raises(InvalidArgumentError, match="not one of"):
        NewEvent("purchase", "u", "i", 1)
    with pytest.raises(InvalidArgumentError, match="needs an item_id"):
        NewEvent("click", "u", None, 1)
    with pytest.raises(InvalidArgumentError, match="finite rating"):
        NewEvent("rating", "u", "i", 1)
    with pytest.raises(InvalidArgumentError, match="integer Unix seconds"):
        NewEvent("view", "u", "i", 1.5)  # type: ignore[arg-type]


def test_open_log_urls(tmp_path: Path) -> None:
    assert open_log("off") is None and open_log(None) is None
    log = open_log(tmp_path / "plain.db")
    assert log is not None and log.backend == "sqlite" and log.url.endswith("plain.db")
    log.close()
    from recstack.errors import ConfigError

    with pytest.raises(ConfigError, match="event log URL"):
        open_log("ftp://x/y")


def _append_many(path: str, tag: str, n: int, out: Any) -> None:
    log = open_log(path)
    assert log is not None
    offs: list[int] = []
    for i in range(n):
        offs += log.append([NewEvent("view", tag, str(i), 1_000 + i)])
    out.put(offs)


def test_sqlite_two_processes_append_concurrently(tmp_path: Path) -> None:
    """Two processes appending to one SQLite log: every offset distinct, every event once."""
    path = str(tmp_path / "mp.db")
    open_log(path).close()  # type: ignore[union-attr]
    ctx = multiprocessing.get_context("spawn")
    q = ctx.Queue()
    procs = [ctx.Process(target=_append_many, args=(path, tag, 150, q)) for tag in ("a", "b")]
    for p in procs:
        p.start()
    results = [q.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(30)
    log = open_log(path)
    assert log is not None
    events = log.read(limit=1_000)
    assert len(events) == 300 and sorted(results[0] + results[1]) == [e.offset for e in events]
    for tag in ("a", "b"):  # each process's own events in its order
        mine = [e.item_id for e in events if e.user_id == tag]
        assert mine == [str(i) for i in range(150)]
    log.close()
