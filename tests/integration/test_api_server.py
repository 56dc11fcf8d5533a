"""End to end on the bundled ML-100K: a real release built by `recstack build`, served by
`recstack serve` (a uvicorn process with 2 workers on a free port), and Redis-backed serving."""

from __future__ import annotations

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
