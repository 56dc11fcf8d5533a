"""Regression tests of issue 17 (the online service hardened) on the tiny catalogue (conftest.py):
validation at the edge, nothing stored by a rejected request, explicit degraded answers, bounded
online events, errors logged once, the docs offline, write authentication."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from fastapi import APIRouter
from fastapi.testclient import TestClient

from recstack.errors import InvalidArgumentError, UnavailableError
from recstack.serving._release import MemoryRelease
from recstack.serving.api.app import create_app
from recstack.serving.api.schemas import latest_timestamp
from recstack.serving.settings import ServingSettings
from recstack.store import EmbeddedFeatureStore, EventLimits

KEY = {"X-API-Key": "secret"}


@pytest.fixture
def client(tiny_release: MemoryRelease) -> Iterator[TestClient]:
    with TestClient(create_app(ServingSettings(api_key="secret"), release=tiny_release)) as c:
        yield c


def _error(r: Any, status: int, *fragments: str) -> str:
    assert r.status_code == status, r.text
    msg: str = r.json()["error"]["message"]
    for f in fragments:
        assert f in msg, msg
    return msg


def _history(c: TestClient, user: Any) -> list[tuple[int, int]]:
    body = c.get(f"/v1/users/{user}", params={"history_limit": 1000}).json()
    return [(h["item_id"], h["timestamp"]) for h in body["history"]]


# ------------------------------------------------------------------------- the poisoning event
def test_the_poisoning_event_is_refused_and_stores_nothing(client: TestClient) -> None:
    """Issue 17, item 1: a timestamp of 2**63 answered 500, was stored anyway, and broke user 7 until
    restart (OverflowError). Now: 422 at the edge, the history unchanged, user 7 still served."""
    before = _history(client, 7)
    r = client.post("/v1/events", json={"type": "view", "item_id": 101, "user_id": 7, "timestamp": 2**63})
    _error(r, 422, "timestamp")
    assert _history(client, 7) == before
    assert client.get("/v1/users/7/recommendations").status_code == 200
    assert client.get("/users/7").status_code == 200


def test_millisecond_timestamps_are_refused_by_name(client: TestClient) -> None:
    r = client.post(
        "/v1/events", json={"type": "view", "item_id": 101, "user_id": 7, "timestamp": 1796479116000}
    )
    _error(r, 422, "looks like milliseconds", "1796479116")
    _error(
        client.post("/v1/events", json={"type": "view", "item_id": 101, "user_id": 7, "timestamp": 10}),
        422,
        "greater than or equal to 631152000",
    )
    future = int(time.time()) + 3 * 86_400
    r = client.post("/v1/events", json={"type": "view", "item_id": 101, "user_id": 7, "timestamp": future})
    _error(r, 422, "in the future")
    ok = int(time.time()) - 60
    r = client.post("/v1/events", json={"type": "view", "item_id": 101, "user_id": 7, "timestamp": ok})
    assert r.status_code == 201 and (101, ok) in _history(client, 7)


@pytest.mark.parametrize(
    ("event", "fragment"),
    [
        ({"type": "view", "item_id": 101, "user_id": False}, "user_id"),  # booleans are not ids
        ({"type": "view", "item_id": 101, "user_id": "x" * 65}, "at most 64 characters"),
        ({"type": "view", "item_id": 101, "user_id": "a\nb"}, "user_id"),  # control characters
        ({"type": "view", "item_id": 2**60, "user_id": 7}, "item_id"),  # beyond 2**53 - 1
        ({"type": "rating", "item_id": 101, "user_id": 7}, "rating"),  # a rating needs a rating
        ({"type": "rating", "item_id": 101, "user_id": 7, "rating": "4"}, "rating"),  # not a number
        ({"type": "view", "item_id": 101, "user_id": 7, "timestamp": "1800000000"}, "timestamp"),
    ],
)
def test_invalid_events_are_422_and_change_nothing(
    client: TestClient, event: dict[str, Any], fragment: str
) -> None:
    before = _history(client, 7)
    _error(client.post("/v1/events", json=event), 422, fragment)
    assert _history(client, 7) == before


def test_integral_floats_are_integers(client: TestClient) -> None:
    """JSON Schema's integer holds 7.0: the API takes it as 7 (and refuses 7.5)."""
    r = client.post("/v1/events", json={"type": "view", "item_id": 101.0, "user_id": 7.0})
    assert r.status_code == 201, r.text
    assert r.json()["user_id"] == 7
    _error(client.post("/v1/events", json={"type": "view", "item_id": 101.5, "user_id": 7}), 422, "item_id")


def test_body_limit_is_413(client: TestClient) -> None:
    """A 10 MB user id was stored and echoed back; bodies above max_body_bytes are 413 now."""
    big = {"type": "view", "item_id": 101, "user_id": "u" * (10 * 2**20)}
    _error(client.post("/v1/events", json=big), 413, "larger than 262,144 bytes")
    assert client.get("/v1/users/" + "u" * 64).status_code == 404


def test_list_and_offset_caps(client: TestClient) -> None:
    _error(
        client.post("/v1/recommendations", json={"user_id": 1, "filters": {"exclude": list(range(1001))}}),
        422,
        "exclude",
    )
    _error(
        client.post("/v1/recommendations", json={"user_id": 1, "filters": {"genres": ["Drama"] * 65}}),
        422,
        "genres",
    )
    params = {"exclude": ",".join(str(100 + i % 12) for i in range(1001))}
    _error(client.get("/v1/users/1/recommendations", params=params), 422, "at most 1000")
    _error(client.get("/v1/items", params={"offset": 339042073014670655488}), 422, "offset")
    _error(client.get("/v1/users/" + "9" * 65), 422, "user_id")
    assert client.get("/v1/items", params={"offset": 10_000_000}).json()["items"] == []


def test_trace_is_405_with_allow(client: TestClient) -> None:
    r = client.request("TRACE", "/v1/users/1")
    assert r.status_code == 405 and r.headers["allow"] == "GET, HEAD"
    r = client.request("DELETE", "/admin/reload")  # two routes on one path: both methods are listed
    assert r.status_code == 405 and r.headers["allow"] == "GET, HEAD, POST"


# --------------------------------------------------------------------------------- OpenAPI and docs
def test_openapi_documents_statuses_and_release_limits(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    events = spec["paths"]["/v1/events"]["post"]["responses"]
    assert set(events) == {"201", "400", "401", "404", "413", "422", "503"}  # 201, not 200
    recs = spec["paths"]["/v1/users/{user_id}/recommendations"]["get"]
    assert {"200", "404", "422", "503"} <= set(recs["responses"])
    params = {p["name"]: p["schema"] for p in recs["parameters"]}
    k = params["k"]["anyOf"][0]
    assert k["minimum"] == 1 and k["maximum"] == 100  # the pipeline's k_max
    assert params["model"]["anyOf"][0]["enum"] == ["recall"]  # the release has no ranker
    assert params["genres"]["anyOf"][0]["items"]["enum"] == ["Action", "Comedy", "Drama"]
    ts = spec["components"]["schemas"]["RatingEvent"]["properties"]["timestamp"]["anyOf"][0]
    assert ts["minimum"] == 631152000 and ts["maximum"] == latest_timestamp()
    assert 86_399 <= ts["maximum"] - int(time.time()) < 2 * 86_400


def test_docs_are_served_offline(client: TestClient) -> None:
    """/docs and /redoc load their assets from the package (/static-docs), never from a CDN."""
    for page, assets in (
        ("/docs", ("swagger-ui-bundle.js", "swagger-ui.css")),
        ("/redoc", ("redoc.standalone.js",)),
    ):
        html = client.get(page).text
        assert "http://" not in html and "https://" not in html, page
        for a in assets:
            assert f"/static-docs/{a}" in html
            r = client.get(f"/static-docs/{a}")
            assert r.status_code == 200 and len(r.content) > 100_000


# ------------------------------------------------------------------------------- write auth
def test_events_auth(tiny_release: MemoryRelease) -> None:
    settings = ServingSettings(api_key="secret", events_auth=True)
    with TestClient(create_app(settings, release=tiny_release)) as c:
        ev = {"type": "view", "item_id": 101, "user_id": 7}
        _error(c.post("/v1/events", json=ev), 401, "X-API-Key")
        _error(c.post("/v1/events", json=ev, headers={"X-API-Key": "wrong"}), 401)
        assert c.post("/v1/events", json=ev, headers=KEY).status_code == 201
    with pytest.raises(InvalidArgumentError, match="events_auth needs an api_key"):
        create_app(ServingSettings(events_auth=True), release=tiny_release)


# ---------------------------------------------------------------------------------- logging
def test_unexpected_error_is_one_json_500_logged_once(
    tiny_release: MemoryRelease, caplog: pytest.LogCaptureFixture
) -> None:
    boom = APIRouter()

    @boom.get("/boom")
    async def _boom() -> None:
        raise RuntimeError("kaboom")

    app = create_app(ServingSettings(), release=tiny_release, extra_routers=[boom])
    with TestClient(app, raise_server_exceptions=True) as c, caplog.at_level(logging.INFO):
        r = c.get("/boom")  # not re-raised: the middleware answered it
        assert r.status_code == 500 and r.json()["error"]["code"] == "internal_error"
        assert "kaboom" not in r.text
    errors = [rec for rec in caplog.records if rec.levelno >= logging.ERROR]
    assert len(errors) == 1 and errors[0].exc_info is not None


def test_expected_503_is_a_warning(tiny_release: MemoryRelease, caplog: pytest.LogCaptureFixture) -> None:
    app = create_app(ServingSettings(), release=tiny_release)
    with TestClient(app) as c, caplog.at_level(logging.INFO):
        _FailingStore.install(app)
        assert c.post("/v1/events", json={"type": "view", "item_id": 101, "user_id": 7}).status_code == 503
    levels = [rec.levelno for rec in caplog.records if "Redis" in rec.getMessage()]
    assert levels == [logging.WARNING]


# ------------------------------------------------------------------------- degraded answers
class _FailingStore:
    """A store whose every call fails as a frozen Redis would."""

    def get_history(self, user: Any) -> Any:
        raise UnavailableError("Redis at 127.0.0.1:1 does not answer: Timeout reading from socket")

    def append_event(self, *args: Any, **kwargs: Any) -> int:
        raise UnavailableError("Redis at 127.0.0.1:1 does not answer: Timeout reading from socket")

    def health(self) -> dict[str, Any]:
        return {"status": "unavailable", "detail": "Redis at 127.0.0.1:1 does not answer"}

    @staticmethod
    def install(app: Any) -> None:
        app.state.holder.current.pipeline.history.store = _FailingStore()


def test_store_down_degrades_reads_explicitly_and_refuses_writes(tiny_release: MemoryRelease) -> None:
    app = create_app(ServingSettings(), release=tiny_release)
    with TestClient(app) as c:
        healthy = c.get("/v1/users/12/recommendations", params={"k": 3}).json()
        assert healthy["degraded"] == []
        _FailingStore.install(app)
        body = c.get("/v1/users/12/recommendations", params={"k": 3}).json()
        # the worker holds no copy of the store's histories (issue 23): the answer of a user
        # without history, flagged
        assert len(body["items"]) == 3
        assert body["degraded"] and body["degraded"][0].startswith("history missing")
        user = c.get("/v1/users/12").json()
        assert user["degraded"] and user["history"] == []
        _error(c.get("/v1/users/somebody-new"), 503, "cannot read the events")
        _error(c.post("/v1/events", json={"type": "view", "item_id": 101, "user_id": 12}), 503, "Redis")
        ready = c.get("/readyz")
        assert ready.status_code == 503 and ready.json()["error"]["code"] == "store_unavailable"
        assert c.get("/healthz").status_code == 200
        text = c.get("/metrics").text
        assert 'recstack_degraded_total{reason="history missing"}' in text


# ---------------------------------------------------------------------- bounded online events
def _tiny_store(limits: EventLimits) -> EmbeddedFeatureStore:
    import polars as pl

    inter = pl.DataFrame({"user": [0], "item": [0], "rating": [4.0], "timestamp": [100]})
    users = pl.DataFrame({"user": [0]})
    items = pl.DataFrame({"item": [0, 1, 2]})
    st = EmbeddedFeatureStore.from_tables("r1", users, items, inter)
    st.limits = limits
    return st


def test_embedded_store_bounds_users_and_events() -> None:
    st = _tiny_store(EventLimits(max_users=2, max_events=3))
    for t in range(5):
        n = st.append_event(0, t % 3, "view", ts=1000 + t)
    assert n == 1 + 3  # the release's one event + the last 3 online events
    assert st.get_history(0).timestamps.tolist() == [100, 1002, 1003, 1004]
    st.append_event("a", 1, "view", ts=2000)
    st.append_event(0, 1, "view", ts=2001)  # user 0 is now the most recently active
    st.append_event("b", 2, "view", ts=2002)  # a third user: "a", the least recently active, goes
    assert st.online_users == 2
    assert len(st.get_history("a").items) == 0 and len(st.get_history("b").items) == 1
    assert len(st.get_history(0).items) == 4


def test_store_refuses_out_of_range_timestamps_before_writing() -> None:
    st = _tiny_store(EventLimits())
    for ts in (2**63, -1):
        with pytest.raises(InvalidArgumentError, match="timestamp"):
            st.append_event(0, 1, "view", ts=ts)
    with pytest.raises(Exception, match="unknown item"):
        st.append_event(0, 99, "view", ts=1000)
    assert st.get_history(0).items.tolist() == [0]  # nothing was written
    np.testing.assert_array_equal(st.get_history(0).timestamps, [100])
