"""The API with an event log: events are logged before 201, histories are rebuilt from the log on
start (a restart loses nothing, doubles nothing), workers see each other's events, unknown users
and items are kept."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from recstack.events import NewEvent, open_log
from recstack.serving._release import MemoryRelease
from recstack.serving.api.app import create_app
from recstack.serving.settings import ServingSettings


def _app(release: MemoryRelease, log_url: str, **kw: Any) -> Any:
    settings = ServingSettings(api_key="secret", event_log=log_url, event_poll_s=0.05, **kw)
    return create_app(settings, loader=lambda target: release)


@pytest.fixture
def log_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'events.db'}"


@pytest.fixture
def client(tiny_release: MemoryRelease, log_url: str) -> Iterator[TestClient]:
    with TestClient(_app(tiny_release, log_url)) as c:
        yield c


def _history(c: TestClient, user: Any) -> list[int]:
    return [h["item_id"] for h in c.get(f"/v1/users/{user}", params={"history_limit": 100}).json()["history"]]


def test_event_is_logged_before_201(client: TestClient, log_url: str) -> None:
    r = client.post("/v1/events", json={"user_id": 1, "item_id": 105, "type": "rating", "rating": 4})
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["offset"] == 1 and body["item_known"] is True and body["history_length"] == 4
    log = open_log(log_url)
    assert log is not None
    [e] = log.read()
    assert (e.offset, e.type, e.user_id, e.item_id, e.rating) == (1, "rating", "1", "105", 4.0)
    assert e.release_id == "tiny-a" and e.request_id == r.headers["x-request-id"]
    assert abs(e.received - time.time()) < 60
    text = client.get("/metrics").text
    assert 'recstack_events_logged_total{outcome="ok"}' in text
    assert "recstack_event_log_commits_total" in text


def test_unknown_item_is_kept_in_the_log_only(client: TestClient, log_url: str) -> None:
    r = client.post("/v1/events", json={"user_id": 1, "item_id": 999, "type": "click"})
    assert r.status_code == 201 and r.json()["item_known"] is False and r.json()["history_length"] == 3
    log = open_log(log_url)
    assert log is not None and [e.item_id for e in log.read()] == ["999"]


def test_restart_rebuilds_histories_from_the_log(tiny_release: MemoryRelease, log_url: str) -> None:
    with TestClient(_app(tiny_release, log_url)) as c:
        for item in (105, 106):
            assert (
                c.post("/v1/events", json={"user_id": 1, "item_id": item, "type": "view"}).status_code == 201
            )
        c.post("/v1/events", json={"user_id": "fresh", "item_id": 107, "type": "click"})
        before = _history(c, 1)
    with TestClient(_app(tiny_release, log_url)) as c2:  # a new process: nothing in memory
        assert _history(c2, 1) == before and before[:2] == [106, 105]
        assert _history(c2, "fresh") == [107]  # a user unknown to the release keeps its history
        # the replay did not double anything; a second read of the log changes nothing either
        c2.app.state.holder.current.feed.catch_up()
        assert _history(c2, 1) == before


def test_two_workers_see_each_others_events(tiny_release: MemoryRelease, log_url: str) -> None:
    with TestClient(_app(tiny_release, log_url)) as a, TestClient(_app(tiny_release, log_url)) as b:
        assert a.post("/v1/events", json={"user_id": 2, "item_id": 110, "type": "view"}).status_code == 201
        deadline = time.monotonic() + 5
        while 110 not in _history(b, 2) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _history(b, 2)[0] == 110
        assert _history(a, 2).count(110) == 1  # a read its own event back without doubling it


def test_release_cutoff_skips_events_the_release_holds(tiny_release: MemoryRelease, log_url: str) -> None:
    log = open_log(log_url)
    assert log is not None
    offs = log.append([NewEvent("view", "3", str(item), 5_000 + item) for item in (108, 109)])

    @dataclasses.dataclass
    class CutRelease(MemoryRelease):
        @property
        def manifest(self) -> dict[str, Any]:
            return {"id": self.id, "events": {"log_id": log.log_id, "last_offset": offs[0]}}

    rel = CutRelease(**{f.name: getattr(tiny_release, f.name) for f in dataclasses.fields(MemoryRelease)})
    with TestClient(_app(rel, log_url)) as c:
        hist = _history(c, 3)
        assert 109 in hist and 108 not in hist  # 108 is "in" the release (offset <= its cut-off)


def test_a_failing_log_answers_503_and_keeps_nothing(client: TestClient) -> None:
    holder = client.app.state.holder  # type: ignore[attr-defined]

    def broken(events: Any) -> list[int]:
        from recstack.errors import UnavailableError

        raise UnavailableError("disk full")

    holder.event_log.append = broken
    r = client.post("/v1/events", json={"user_id": 4, "item_id": 100, "type": "view"})
    assert r.status_code == 503 and "disk full" in r.json()["error"]["message"]
    assert len(_history(client, 4)) == 3  # unchanged


def test_without_a_log_unknown_items_are_refused(tiny_release: MemoryRelease) -> None:
    app = create_app(ServingSettings(api_key="secret"), loader=lambda t: tiny_release)
    with TestClient(app) as c:
        r = c.post("/v1/events", json={"user_id": 1, "item_id": 999, "type": "view"})
        assert r.status_code == 404
        ok = c.post("/v1/events", json={"user_id": 1, "item_id": 105, "type": "view"}).json()
        assert ok["offset"] is None and ok["history_length"] == 4
