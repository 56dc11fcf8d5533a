"""End to end on ML-100K (read from the data dir): a real release built by `recstack build`, served by
`recstack serve` (a uvicorn process with 2 workers on a free port), and Redis-backed serving."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from recstack.testing import ServerProcess, build_small_release


@pytest.fixture(scope="module")
def releases_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A promoted ML-100K release (pop + itemknn, no evaluation: a few seconds)."""
    root = tmp_path_factory.mktemp("releases")
    build_small_release(root, ("pop", "itemknn"))
    return root


@pytest.fixture(scope="module")
def server(releases_dir: Path) -> Iterator[str]:
    with ServerProcess(releases_dir, workers=2, env={"RECSTACK_SERVE_API_KEY": "k"}) as srv:
        yield srv.url


@pytest.mark.slow
@pytest.mark.ml100k
def test_real_server_two_workers(server: str, releases_dir: Path) -> None:
    from recstack.release.registry import Registry

    rid = Registry(releases_dir).resolve("production")
    with httpx.Client(base_url=server, timeout=10) as c:
        bodies = [c.get("/v1/users/1/recommendations", params={"k": 10}).json() for _ in range(20)]
        assert {b["release_id"] for b in bodies} == {rid}
        # both workers give the same answer: Star Wars (item 50) is in user 1's history, never returned
        assert len({tuple(it["item_id"] for it in b["items"]) for b in bodies}) == 1
        assert 50 not in [it["item_id"] for it in bodies[0]["items"]]
        cold = c.get("/v1/users/999999/recommendations", params={"k": 3}).json()
        assert cold["cold_start"] is True and cold["items"][0]["item_id"] == 50  # most popular in ML-100K
        err = c.get("/v1/users/1/recommendations", params={"k": 1000})
        assert err.status_code == 422 and "between 1 and 100" in err.json()["error"]["message"]
        assert c.get("/v1/items/50").json()["title"].startswith("Star Wars")
        assert c.get("/v1/items/100000").status_code == 404
        for _ in range(10):
            c.get("/healthz")
        text = c.get("/metrics").text
        # multiprocess mode: counts of both workers are aggregated into one exposition
        line = next(
            ln
            for ln in text.splitlines()
            if ln.startswith('recstack_http_requests_total{endpoint="/healthz",method="GET",status="200"}')
        )
        assert float(line.rsplit(" ", 1)[1]) == 10.0
        assert 'recstack_pipeline_stage_duration_seconds_bucket{le="0.015",stage="recall"}' in text
        r = c.post(
            "/admin/reload",
            params={"wait": "true"},
            json={"channel": "production"},
            headers={"X-API-Key": "k"},
        )
        assert r.status_code == 200 and r.json()["release_id"] == rid


@pytest.mark.slow
@pytest.mark.ml100k
@pytest.mark.redis
def test_redis_backed_serving_shares_events(releases_dir: Path, redis_url: str) -> None:
    """Two apps (as two workers would be) on one Redis: an event posted to one changes the other's
    next recommendation."""
    from fastapi.testclient import TestClient

    from recstack.serving.api.app import create_app
    from recstack.serving.settings import ServingSettings

    settings = ServingSettings(releases_dir=releases_dir, store="redis", redis_url=redis_url, api_key="k")
    with TestClient(create_app(settings)) as a, TestClient(create_app(settings)) as b:
        assert a.get("/v1/release").json()["store"] == "redis"
        user = f"redis-user-{os.getpid()}"
        assert a.get(f"/v1/users/{user}").status_code == 404
        top = b.get("/v1/users/1/recommendations", params={"k": 5}).json()["items"][0]["item_id"]
        r = a.post("/v1/events", json={"user_id": 1, "item_id": top, "type": "rating", "rating": 4})
        assert r.status_code == 201
        after: dict[str, Any] = b.get("/v1/users/1/recommendations", params={"k": 20}).json()
        assert top not in [it["item_id"] for it in after["items"]]
        r = a.post("/v1/events", json={"user_id": user, "item_id": 50, "type": "view"})
        assert r.status_code == 201
        body = b.get(f"/v1/users/{user}").json()
        assert [h["item_id"] for h in body["history"]] == [50]
        recs = b.get(f"/v1/users/{user}/recommendations", params={"k": 5}).json()
        assert recs["cold_start"] is True and 50 not in [it["item_id"] for it in recs["items"]]
        assert any("itemknn" in it["sources"] for it in recs["items"])


def _served_by(prom_dir: Path, endpoint: str) -> dict[int, float]:
    """Requests of ``endpoint`` per worker pid, from the Prometheus multiprocess files."""
    from prometheus_client.mmap_dict import MmapedDict

    out: dict[int, float] = {}
    for f in prom_dir.glob("counter_*.db"):
        pid = int(f.stem.split("_")[1])
        for key, value, _ts, _pos in MmapedDict.read_all_values_from_file(str(f)):
            _metric, sample, labels, *_ = json.loads(key)  # [metric, sample, labels, help]
            if sample == "recstack_http_requests_total" and labels.get("endpoint") == endpoint:
                out[pid] = out.get(pid, 0.0) + value
    return out


def _ready_workers(prom_dir: Path) -> set[int]:
    """Pids of the workers whose startup is done (they set the release gauge at the end of it)."""
    return {int(f.stem.rsplit("_", 1)[1]) for f in prom_dir.glob("gauge_liveall_*.db")}


def _burst(url: str, n: int) -> None:
    """Open ``n`` connections at once, then send one request on each (as a client's pool does)."""
    import socket
    from urllib.parse import urlsplit

    u = urlsplit(url)
    conns = [socket.create_connection((u.hostname, u.port), timeout=10) for _ in range(n)]
    try:
        for c in conns:
            c.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        for c in conns:
            assert c.recv(64).startswith(b"HTTP/1.1 200")
    finally:
        for c in conns:
            c.close()


@pytest.mark.slow
@pytest.mark.ml100k
def test_workers_share_connections_and_a_dead_worker_is_replaced(releases_dir: Path, tmp_path: Path) -> None:
    """`recstack serve --workers 2` on Linux: one listening socket per worker (SO_REUSEPORT), each
    listening once its startup is done; a burst of new connections spreads over both workers, and a
    worker that dies is restarted while the other keeps answering. (Whether one shared socket would
    have spread this burst too depends on wake-up timing; bench_serving measured the difference:
    8 keep-alive connections kept one of two cores idle.)"""
    import signal
    import time

    prom = tmp_path / "prom"
    prom.mkdir()
    with ServerProcess(releases_dir, workers=2, env={"PROMETHEUS_MULTIPROC_DIR": str(prom)}) as srv:
        deadline = time.monotonic() + 120
        while len(_ready_workers(prom)) < 2:
            assert time.monotonic() < deadline, "the second worker never finished its startup"
            time.sleep(0.2)
        time.sleep(0.5)  # its socket listens right after the startup
        _burst(srv.url, 16)
        deadline = time.monotonic() + 10
        while sum((served := _served_by(prom, "/healthz")).values()) < 16 and time.monotonic() < deadline:
            time.sleep(0.1)  # a worker counts a request just after sending its response
        assert len(served) == 2 and sum(served.values()) == 16, served
        victim = min(served)
        os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + 120
        while len(_ready_workers(prom) - {victim}) < 2:  # the replacement loads the release
            with httpx.Client(base_url=srv.url, timeout=10) as c:
                assert c.get("/healthz").status_code == 200  # the other worker keeps answering
            assert time.monotonic() < deadline, "no replacement worker started"
            time.sleep(0.2)
