"""The aggregator with a hop down or slow: degraded answers that say so, never past the deadline."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from typing import Any

import grpc
import pytest

from recstack.serving.grpc.client import GrpcClient, ServiceCallError, make_user
from recstack.serving.grpc.server import RunningServer, make_servicer, start_server
from recstack.serving.grpc.services import RankServicer, ServiceState
from recstack.serving.pipeline import Pipeline, RecRequest


def _dead_address() -> str:
    """An address where nothing listens (a port bound then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{s.getsockname()[1]}"


class SlowRank:
    """The real rank servicer, ``delay`` seconds late."""

    def __init__(self, inner: RankServicer, delay: float) -> None:
        self.inner, self.delay = inner, delay

    def Rank(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        time.sleep(self.delay)
        return self.inner.Rank(request, context)


@pytest.fixture(scope="module")
def slow_rank(pipeline: Pipeline) -> Iterator[RunningServer]:
    s = start_server("rank", SlowRank(RankServicer(ServiceState.of(pipeline)), 1.5), 0, workers=4)
    yield s
    s.stop(0)


def _aggregator(
    cluster: Any, down: str | None = None, hop_timeout: float = 2.0, **over: str
) -> RunningServer:
    ups = {n: cluster.address(n) for n in ("user", "item", "recall", "rank")}
    if down is not None:
        ups[down] = _dead_address()
    ups.update(over)
    return start_server("aggregator", make_servicer("aggregator", upstreams=ups, hop_timeout=hop_timeout))


def _recommend(agg: RunningServer, timeout: float = 5.0, **kw: Any) -> Any:
    with GrpcClient({"aggregator": f"127.0.0.1:{agg.port}"}, timeout=timeout) as c:
        return c.recommend(**kw)


def test_rank_down_gives_recall_order(cluster: Any) -> None:
    agg = _aggregator(cluster, down="rank")
    try:
        r = _recommend(agg, user=make_user("12"), k=3, log_id="d1")
    finally:
        agg.stop(0)
    assert r.error.degraded and list(r.error.failed_hops) == ["rank"] and r.error.code == 0
    assert "rank" in r.error.text and r.log_id == "d1"
    with GrpcClient(cluster.addresses) as c:
        recall = c.recall(make_user("12"), k=3)
    # the first 3 recall candidates, with their merged recall scores, in recall order
    assert [s.item.item_id for s in r.items] == [c.item_id for c in recall.candidates[:3]]
    assert [s.score for s in r.items] == [c.score for c in recall.candidates[:3]]
    assert r.model == "recall" and r.items[0].item.title  # the item service still answered


def test_recall_down_gives_popular_unseen_items_ranked(cluster: Any) -> None:
    agg = _aggregator(cluster, down="recall")
    try:
        r = _recommend(agg, user=make_user("12"), k=3)
    finally:
        agg.stop(0)
    assert r.error.degraded and list(r.error.failed_hops) == ["recall"]
    # popular order 100..107 minus user 12's history (100, 103, 104): 101, 102, 105, 106, 107;
    # ranker lin prefers low ids: 101 (-2), 102 (-3), 105 (-6); genres C, A, C respect the cap of 2
    assert [s.item.item_id for s in r.items] == ["101", "102", "105"]
    assert [s.score for s in r.items] == [-2.0, -3.0, -6.0]
    assert list(r.fallbacks) == ["popular"] and r.user_kind == "known"
    assert all(list(s.sources) == ["popular"] for s in r.items)


def test_item_down_gives_bare_ids(cluster: Any, pipeline: Pipeline) -> None:
    agg = _aggregator(cluster, down="item")
    try:
        r = _recommend(agg, user=make_user("12"), k=3)
    finally:
        agg.stop(0)
    res = pipeline.recommend(RecRequest(user_id="12", k=3))
    assert list(r.error.failed_hops) == ["item"]
    assert [s.item.item_id for s in r.items] == [str(pipeline.catalog.item_ids[i]) for i in res.items]
    assert all(s.item.title == "" for s in r.items)


def test_user_down_still_serves(cluster: Any, pipeline: Pipeline) -> None:
    agg = _aggregator(cluster, down="user")
    try:
        r = _recommend(agg, user=make_user("12"), k=3)
    finally:
        agg.stop(0)
    res = pipeline.recommend(RecRequest(user_id="12", k=3))
    assert list(r.error.failed_hops) == ["user"]
    assert [s.item.item_id for s in r.items] == [str(pipeline.catalog.item_ids[i]) for i in res.items]


def test_recall_and_item_down_is_unavailable(cluster: Any) -> None:
    agg = _aggregator(cluster, down="recall", item=_dead_address())
    try:
        with pytest.raises(ServiceCallError) as ei:
            _recommend(agg, user=make_user("12"), k=3)
    finally:
        agg.stop(0)
    assert ei.value.status == grpc.StatusCode.UNAVAILABLE and "no candidates" in ei.value.envelope.text


def test_slow_rank_misses_hop_deadline(cluster: Any, slow_rank: RunningServer) -> None:
    # rank answers after 1.5 s; the hop timeout is 0.2 s: degraded recall order well before 1.5 s
    agg = _aggregator(cluster, hop_timeout=0.2, rank=f"127.0.0.1:{slow_rank.port}")
    try:
        t0 = time.perf_counter()
        r = _recommend(agg, user=make_user("12"), k=3)
        elapsed = time.perf_counter() - t0
    finally:
        agg.stop(0)
    assert list(r.error.failed_hops) == ["rank"] and r.hop_ms["rank"] < 1000
    assert elapsed < 1.4  # the 1.5 s rank answer was never waited for


def test_caller_deadline_caps_hops(cluster: Any, slow_rank: RunningServer) -> None:
    # hop timeout 5 s but the caller gives 0.8 s: the rank hop gets a share of what is left, so
    # the answer (degraded) arrives before the caller's deadline instead of DEADLINE_EXCEEDED
    agg = _aggregator(cluster, hop_timeout=5.0, rank=f"127.0.0.1:{slow_rank.port}")
    try:
        r = _recommend(agg, timeout=0.8, user=make_user("12"), k=3)
    finally:
        agg.stop(0)
    assert "rank" in r.error.failed_hops and len(r.items) == 3
