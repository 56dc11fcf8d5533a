"""The REST API over the tiny catalogue (conftest.py): every endpoint and error case, events that
change the next recommendation, and reloads under concurrent requests."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from recstack.errors import NotFoundError
from recstack.serving._release import MemoryRelease, ServingRelease
from recstack.serving.api.app import create_app
from recstack.serving.settings import ServingSettings

KEY = {"X-API-Key": "secret"}


@pytest.fixture(scope="module")
def releases(tiny_release: MemoryRelease, full_release: MemoryRelease) -> dict[str, ServingRelease]:
    return {"tiny-a": tiny_release, "tiny-full": full_release, "production": tiny_release}


def _loader(releases: dict[str, ServingRelease]) -> Any:
    def load(target: str) -> ServingRelease:
        if target not in releases:
            raise NotFoundError(f"no release or channel {target!r}")
        return releases[target]

    return load


@pytest.fixture
def client(releases: dict[str, ServingRelease]) -> Iterator[TestClient]:
    app = create_app(ServingSettings(api_key="secret"), loader=_loader(releases))
    with TestClient(app) as c:  # the lifespan loads the production channel
        yield c


def _ids(body: dict[str, Any]) -> list[int]:
    return [it["item_id"] for it in body["items"]]


def _error(r: Any, status: int, code: str | None = None) -> dict[str, Any]:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body["error"]) == {"code", "message"} and body["error"]["message"]
    if code is not None:
        assert body["error"]["code"] == code
    assert body["request_id"] == r.headers["x-request-id"]
    return body


# ------------------------------------------------------------------ recommendations
def test_user_recommendations(client: TestClient) -> None:
    r = client.get("/v1/users/1/recommendations", params={"k": 4})
    assert r.status_code == 200
    body = r.json()
    assert body["request_id"] == r.headers["x-request-id"] and body["release_id"] == "tiny-a"
    assert body["model"] == "recall" and body["cold_start"] is False and body["k"] == 4
    assert len(body["items"]) == 4
    assert not {100, 101, 103} & set(_ids(body))  # user 1's history
    first = body["items"][0]
    assert set(first) >= {"item_id", "score", "title", "year", "genres", "sources"}


def test_request_id_is_echoed(client: TestClient) -> None:
    r = client.get("/v1/users/1/recommendations", headers={"X-Request-ID": "abc-123"})
    assert r.headers["x-request-id"] == "abc-123" and r.json()["request_id"] == "abc-123"


def test_filters_in_query(client: TestClient) -> None:
    r = client.get("/v1/users/1/recommendations", params={"k": 5, "genres": "Comedy", "exclude": "104"})
    assert sorted(_ids(r.json())) == [107, 110]  # comedies 1, 4, 7, 10 minus seen 1, excluded 4
    r = client.get("/v1/users/1/recommendations", params={"year_min": 1995, "year_max": 1997})
    assert sorted(_ids(r.json())) == [105, 106, 107]


def test_explain(client: TestClient) -> None:
    r = client.get("/v1/users/1/recommendations", params={"k": 2, "explain": "true"})
    ex = r.json()["items"][0]["explain"]
    assert set(ex) >= {"sources", "recall_scores", "merged_score", "rank_score", "rank_position"}


def test_unknown_user_is_cold_start(client: TestClient) -> None:
    r = client.get("/v1/users/nobody/recommendations", params={"k": 3})
    assert r.status_code == 200
    body = r.json()
    assert body["cold_start"] is True and _ids(body) == [100, 101, 103]  # most popular


@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({"k": 101}, "between 1 and 100"),
        ({"k": 0}, "greater than or equal to 1"),
        ({"k": "ten"}, "k: Input should be a valid integer"),
        ({"model": "deepfm"}, "allowed: recall"),
        ({"genres": "Opera"}, "allowed genres: Action, Comedy, Drama"),
        ({"explain": "maybe"}, "explain"),
        ({"source": "cache"}, "source"),
    ],
)
def test_invalid_params_are_422(client: TestClient, params: dict[str, Any], match: str) -> None:
    body = _error(client.get("/v1/users/1/recommendations", params=params), 422, "invalid_argument")
    assert match in body["error"]["message"]


def test_unknown_excluded_item_is_404(client: TestClient) -> None:
    _error(client.get("/v1/users/1/recommendations", params={"exclude": "999"}), 404, "unknown_id")


def test_post_recommendations(client: TestClient) -> None:
    r = client.post(
        "/v1/recommendations", json={"user_id": 1, "k": 3, "filters": {"exclude_genres": ["Action"]}}
    )
    assert r.status_code == 200 and all((i - 100) % 3 != 0 for i in _ids(r.json()))
    r = client.post("/v1/recommendations", json={"profile": {"age": 25, "gender": "F"}, "k": 3})
    body = r.json()
    # the tiny release has no cold-users verdict: the profile is not used, and not claimed
    assert body["user_kind"] == "profile" and body["cold_start"] and "demographic" not in body["fallbacks"]
    r = client.post("/v1/recommendations", json={"liked_items": [103, 104], "k": 4})
    body = r.json()
    assert body["user_kind"] == "liked_items" and not {103, 104} & set(_ids(body))


@pytest.mark.parametrize(
    ("payload", "status", "match"),
    [
        ({"user_id": 1, "k": 500}, 422, "between 1 and 100"),
        ({"user_id": 1, "colour": "red"}, 422, "colour: Extra inputs are not permitted"),
        ({"profile": {"age": -3}}, 422, "profile.age"),
        ({"liked_items": [999]}, 404, "999"),
    ],
)
def test_post_errors(client: TestClient, payload: dict[str, Any], status: int, match: str) -> None:
    assert match in _error(client.post("/v1/recommendations", json=payload), status)["error"]["message"]


@pytest.mark.parametrize("payload", [{}, {"liked_items": []}])
def test_post_without_who_is_an_anonymous_visitor(client: TestClient, payload: dict[str, Any]) -> None:
    """No user_id, profile nor liked items: the popular items (items 0 and 1, ids 100 and 101, are
    the most popular of the tiny catalogue), flagged as an anonymous cold start."""
    body = client.post("/v1/recommendations", json={**payload, "k": 2}).json()
    assert body["user_kind"] == "anonymous" and body["cold_start"] is True
    assert [it["item_id"] for it in body["items"]] == [100, 101]


def test_malformed_json_is_422(client: TestClient) -> None:
    r = client.post("/v1/recommendations", content=b"{not json", headers={"content-type": "application/json"})
    _error(r, 422, "invalid_argument")


# ------------------------------------------------------------------------- items
def test_items(client: TestClient) -> None:
    r = client.get("/v1/items/104")
    body = r.json()
    assert body["title"] == "Movie 4" and body["year"] == 1994 and body["genres"] == ["Comedy"]
    assert body["popularity"] == 6 and body["release_id"] == "tiny-a"
    _error(client.get("/v1/items/999"), 404, "unknown_id")
    _error(client.get("/v1/items/abc"), 404, "unknown_id")


def test_item_list_and_search(client: TestClient) -> None:
    body = client.get("/v1/items", params={"genre": "drama"}).json()
    # dramas 2, 5, 8, 11 by popularity 5, 6, 5, 3 -> 5, 2, 8, 11
    assert [it["item_id"] for it in body["items"]] == [105, 102, 108, 111] and body["total"] == 4
    body = client.get("/v1/items", params={"q": "MOVIE 1"}).json()
    assert sorted(it["item_id"] for it in body["items"]) == [
        101,
        110,
        111,
    ]  # "movie 1", "movie 10", "movie 11"
    _error(client.get("/v1/items", params={"limit": 0}), 422)
    _error(client.get("/v1/items", params={"genre": "Opera"}), 422)


def test_similar_items(client: TestClient) -> None:
    body = client.get("/v1/items/100/similar", params={"k": 3}).json()
    assert body["model"] == "itemknn" and len(body["items"]) == 3 and 100 not in _ids(body)
    _error(client.get("/v1/items/999/similar"), 404)
    _error(client.get("/v1/items/100/similar", params={"model": "nope"}), 422)
    _error(client.get("/v1/items/100/similar", params={"k": 1000}), 422)


# ------------------------------------------------------------------ users, events
def test_user_profile_history_and_stats(client: TestClient) -> None:
    body = client.get("/v1/users/1").json()
    # user 1: item 0 rated 1 + (1 + 0) % 5 = 2, item 1 rated 3, item 3 rated 5 (times 1000, 1001, 1002)
    assert body["known"] and body["profile"]["gender"] == "M"
    assert body["stats"] == {
        "count": 3,
        "rated": 3,
        "average_rating": pytest.approx(10 / 3),
        "highest_rating": 5.0,
        "lowest_rating": 2.0,
        "favourite_genres": ["Action", "Comedy"],  # 2 Action (0, 3), 1 Comedy (1)
    }
    assert [h["item_id"] for h in body["history"]] == [103, 101, 100]  # most recent first
    _error(client.get("/v1/users/nobody"), 404, "unknown_id")


def test_event_changes_next_recommendation(client: TestClient) -> None:
    top = _ids(client.get("/v1/users/1/recommendations", params={"k": 3}).json())[0]
    r = client.post("/v1/events", json={"user_id": 1, "item_id": top, "type": "view"})
    assert r.status_code == 201 and r.json()["history_length"] == 4
    after = _ids(client.get("/v1/users/1/recommendations", params={"k": 9}).json())
    assert top not in after
    assert client.get("/v1/users/1").json()["history"][0]["item_id"] == top


def test_events_give_an_unknown_user_a_history(client: TestClient) -> None:
    r = client.post("/v1/events", json={"user_id": "newbie", "item_id": 105, "type": "rating", "rating": 5})
    assert r.status_code == 201
    body = client.get("/v1/users/newbie/recommendations", params={"k": 4}).json()
    assert body["cold_start"] is True and 105 not in _ids(body)
    assert any("itemknn" in it["sources"] for it in body["items"])  # the event is used as history
    user = client.get("/v1/users/newbie").json()
    assert user["known"] is False and user["stats"]["average_rating"] == 5.0


@pytest.mark.parametrize(
    ("event", "status"),
    [
        ({"user_id": 1, "item_id": 105, "type": "rating"}, 422),
        ({"user_id": 1, "item_id": 105, "type": "purchase"}, 422),
        ({"user_id": 1, "item_id": 999, "type": "view"}, 404),
        ({"user_id": 1, "type": "view"}, 422),
    ],
)
def test_bad_events(client: TestClient, event: dict[str, Any], status: int) -> None:
    _error(client.post("/v1/events", json=event), status)


# ------------------------------------------------------------------------- ops
def test_release_health_ready_docs(client: TestClient) -> None:
    body = client.get("/v1/release").json()
    assert body["release_id"] == "tiny-a" and body["k_max"] == 100 and body["models"] == ["recall"]
    assert body["sources"] == ["itemknn", "popular"] and body["genres"] == ["Action", "Comedy", "Drama"]
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").json()["release_id"] == "tiny-a"
    assert client.get("/docs").status_code == 200
    paths = client.get("/openapi.json").json()["paths"]
    assert {
        "/v1/users/{user_id}/recommendations",
        "/v1/recommendations",
        "/v1/events",
        "/admin/reload",
    } <= set(paths)


def test_metrics(client: TestClient) -> None:
    client.get("/v1/users/1/recommendations")
    client.get("/v1/users/zzz/recommendations")
    text = client.get("/metrics").text
    assert (
        'recstack_http_requests_total{endpoint="/v1/users/{user_id}/recommendations",method="GET",status="200"}'
        in text
    )
    assert 'recstack_pipeline_stage_duration_seconds_count{stage="rank"}' in text
    assert 'recstack_fallbacks_total{kind="no_history"}' in text
    assert 'recstack_release_info{release_id="tiny-a"} 1.0' in text


def test_unknown_route_and_method(client: TestClient) -> None:
    _error(client.get("/v2/nothing"), 404, "not_found")
    _error(client.delete("/v1/release"), 405)


# ------------------------------------------------------------------------ admin
def test_reload_needs_the_key(client: TestClient, releases: dict[str, ServingRelease]) -> None:
    _error(client.post("/admin/reload", json={"release": "tiny-full"}), 401, "unauthorized")
    _error(client.post("/admin/reload", json={}, headers={"X-API-Key": "wrong"}), 401)
    app = create_app(ServingSettings(), loader=_loader(releases))
    with TestClient(app) as c:
        _error(c.post("/admin/reload", json={}, headers=KEY), 403, "forbidden")


def test_reload_swaps_release(client: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    r = client.post("/admin/reload", params={"wait": "true"}, json={"release": "tiny-full"}, headers=KEY)
    assert r.status_code == 200, r.text
    assert r.json()["previous"] == "tiny-a" and r.json()["release_id"] == "tiny-full"
    body = client.get("/v1/users/1/recommendations", params={"model": "pos", "k": 2}).json()
    assert body["release_id"] == "tiny-full" and body["model"] == "pos"
    r = client.post("/admin/reload", params={"wait": "true"}, json={"release": "missing"}, headers=KEY)
    _error(r, 404, "not_found")
    assert client.get("/v1/release").json()["release_id"] == "tiny-full"  # a failed reload keeps serving
    assert client.get("/admin/reload", headers=KEY).json()["last_error"].startswith("NotFoundError")
    # an unknown release is an expected refusal: one warning naming it, no traceback in the log
    refusals = [rec for rec in caplog.records if "reload of 'missing' failed" in rec.getMessage()]
    assert [(rec.levelname, rec.exc_info) for rec in refusals] == [("WARNING", None)]


def test_reload_under_concurrent_requests_has_no_failures(client: TestClient) -> None:
    failures: list[str] = []
    seen: set[str] = set()
    stop = threading.Event()

    def hammer(n: int) -> None:
        i = 0
        while not stop.is_set():
            i += 1
            if i % 2:
                r = client.get(f"/v1/users/{(n + i) % 20 + 1}/recommendations", params={"k": 5})
            else:
                r = client.post("/v1/recommendations", json={"liked_items": [100 + (i % 12)], "k": 3})
            if r.status_code != 200 or len(r.json()["items"]) == 0:
                failures.append(f"{r.status_code} {r.text[:200]}")
            else:
                seen.add(r.json()["release_id"])

    threads = [threading.Thread(target=hammer, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    try:
        for target in ("tiny-full", "tiny-a", "tiny-full", "tiny-a"):
            r = client.post("/admin/reload", params={"wait": "true"}, json={"release": target}, headers=KEY)
            assert r.status_code == 200, r.text
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert failures == []
    assert seen == {"tiny-a", "tiny-full"}
