"""Experiments in the API: sticky arms on every answer, each arm served by its own model and
pipeline, impressions in the event log, clicks attributed to the arm that showed the item, the
admin endpoints' auth and validation, and the report over HTTP."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from recstack.events import open_log
from recstack.experiments import Assigner, ExperimentConfig, ExperimentStore
from recstack.serving._release import MemoryRelease
from recstack.serving.api.app import create_app
from recstack.serving.settings import ServingSettings

KEY = {"X-API-Key": "secret"}
POPULAR_ONLY = {
    "sources": [{"name": "popular", "kind": "popular", "quota": 50}],
    "rerank": {"genre_cap": None},
}
EXPERIMENT: dict[str, Any] = {
    "name": "pop-vs-default",
    "salt": "s1",
    "window_s": 600,
    "k": 5,
    "arms": [
        {"name": "popular", "share": 1, "model": "recall", "pipeline": POPULAR_ONLY},
        {"name": "default", "share": 1},
    ],
}


@pytest.fixture
def paths(tmp_path: Path) -> dict[str, Any]:
    return {"log": f"sqlite:///{tmp_path / 'events.db'}", "exp": tmp_path / "experiments"}


@pytest.fixture
def client(tiny_release: MemoryRelease, paths: dict[str, Any]) -> Iterator[TestClient]:
    settings = ServingSettings(
        api_key="secret", event_log=paths["log"], experiments_dir=paths["exp"], experiments_poll_s=0.05
    )
    with TestClient(create_app(settings, loader=lambda target: tiny_release)) as c:
        yield c


def _logged(url: str, n: int, kind: str = "impression") -> list[Any]:
    """The log's events of type ``kind`` once there are ``n`` (impressions are appended by the
    writer thread after the answer: the test waits for it, up to 10 s)."""
    log = open_log(url)
    assert log is not None
    deadline = time.monotonic() + 10
    while True:
        evs = [e for e in log.read(limit=10_000) if e.type == kind]
        if len(evs) >= n or time.monotonic() > deadline:
            return evs
        time.sleep(0.02)


def _recs(c: TestClient, user: Any, **params: Any) -> dict[str, Any]:
    r = c.get(f"/v1/users/{user}/recommendations", params={"k": 5, **params})
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def test_no_experiment_no_arm_but_impressions_logged(client: TestClient, paths: dict[str, Any]) -> None:
    body = _recs(client, 1)
    assert body["experiment"] is None
    [imp] = _logged(paths["log"], 1)
    assert imp.type == "impression" and imp.user_id == "1" and imp.request_id == body["request_id"]
    assert imp.payload is not None and imp.payload["arm"] is None
    assert imp.payload["items"] == [str(it["item_id"]) for it in body["items"]]
    assert imp.payload["positions"] == [1, 2, 3, 4, 5] and imp.release_id == "tiny-a"


def test_admin_create_needs_the_key_and_a_valid_body(client: TestClient) -> None:
    assert client.post("/admin/experiments", json=EXPERIMENT).status_code == 401
    bad = {**EXPERIMENT, "arms": [{"name": "holdout"}]}
    r = client.post("/admin/experiments", json=bad, headers=KEY)
    assert r.status_code == 422 and "arms" in r.json()["error"]["message"]  # the name pattern
    r = client.post("/admin/experiments", json={**EXPERIMENT, "status": "stopped"}, headers=KEY)
    assert r.status_code == 422
    bad_model = {**EXPERIMENT, "name": "bad", "arms": [{"name": "a", "model": "nope"}, {"name": "b"}]}
    r = client.post("/admin/experiments", json=bad_model, headers=KEY)
    assert r.status_code == 201 and r.json()["live"] is False and "nope" in r.json()["error"]
    # a second running experiment is refused
    r = client.post("/admin/experiments", json=EXPERIMENT, headers=KEY)
    assert r.status_code == 409 and "stop it first" in r.json()["error"]["message"]
    # two arms of one name: a conflict; a pipeline that is no PipelineConfig: refused at once
    two = {**EXPERIMENT, "name": "two", "arms": [{"name": "a"}, {"name": "a"}]}
    assert client.post("/admin/experiments", json=two, headers=KEY).status_code == 409
    bad_pipe = {**EXPERIMENT, "name": "pipe", "arms": [{"name": "a", "pipeline": {"nope": 1}}]}
    r = client.post("/admin/experiments", json=bad_pipe, headers=KEY)
    assert r.status_code == 422 and "nope" in r.json()["error"]["message"]
    assert client.get("/v1/experiments/pipe").status_code == 404
    assert client.get("/v1/experiments/no%20such").status_code == 422


def test_arms_are_sticky_served_by_their_settings_and_logged(
    client: TestClient, tiny_release: MemoryRelease, paths: dict[str, Any]
) -> None:
    r = client.post("/admin/experiments", json=EXPERIMENT, headers=KEY)
    assert r.status_code == 201 and r.json()["live"] is True, r.text
    assign = Assigner(ExperimentConfig.from_config(EXPERIMENT))
    pop_order = [it["item_id"] for it in client.get("/v1/items", params={"limit": 12}).json()["items"]]
    arms = {}
    for user in [*range(1, 21), "new-visitor-1", "new-visitor-2"]:
        first = _recs(client, user)
        again = _recs(client, user)
        assert first["experiment"]["name"] == "pop-vs-default"
        arm = first["experiment"]["arm"]
        assert arm == again["experiment"]["arm"] == assign(user)  # sticky, and the hash decides
        arms[user] = arm
        if arm == "popular":  # popularity order minus the user's items
            assert first["model"] == "recall"
            ids = [it["item_id"] for it in first["items"]]
            assert ids == [i for i in pop_order if i in ids]
    assert set(arms.values()) == {"popular", "default"}
    # an explicit model= opts out of the experiment
    assert _recs(client, 1, model="recall")["experiment"] is None
    imps = _logged(paths["log"], 2 * 22 + 1)
    assert len(imps) == 2 * 22 + 1
    # the segment does not depend on the arm: the user's history decides it
    seg = {e.user_id: e.payload["segment"] for e in reversed(imps) if e.payload}
    assert seg["1"] == "returning" and seg["new-visitor-1"] == "new"
    assert {e.payload["arm"] for e in imps if e.payload and e.payload["experiment"]} == {"popular", "default"}


def test_clicks_are_attributed_to_the_arm_that_showed_the_item(
    client: TestClient, paths: dict[str, Any]
) -> None:
    assert client.post("/admin/experiments", json=EXPERIMENT, headers=KEY).status_code == 201
    shown: dict[str, list[Any]] = {}
    for user in range(1, 21):
        body = _recs(client, user)
        shown[str(user)] = [it["item_id"] for it in body["items"]]
    assign = Assigner(ExperimentConfig.from_config(EXPERIMENT))
    # every "popular" user clicks their top item; "default" users click nothing; one organic click
    clicked = [u for u in shown if assign(u) == "popular"]
    for u in clicked:
        assert (
            client.post(
                "/v1/events", json={"user_id": u, "item_id": shown[u][0], "type": "click"}
            ).status_code
            == 201
        )
    organic = next(u for u in shown if assign(u) == "default")
    unseen = next(i for i in range(100, 112) if i not in shown[organic])
    client.post("/v1/events", json={"user_id": organic, "item_id": unseen, "type": "click"})
    assert len(_logged(paths["log"], 20)) == 20
    rep = client.get("/v1/experiments/pop-vs-default/report").json()
    pop, default = rep["arms"]["popular"], rep["arms"]["default"]
    assert pop["users"] == len(clicked) and default["users"] == 20 - len(clicked)
    assert pop["clicks"] == len(clicked) and default["clicks"] == 0  # the organic click is no arm's
    assert pop["ctr"]["value"] == pytest.approx(len(clicked) / (5 * len(clicked)))
    assert pop["hit_rate"]["value"] == pytest.approx(1.0) and default["hit_rate"]["value"] == 0.0
    assert rep["tests"]["default"]["ctr"]["diff"] == pytest.approx(-0.2)
    assert rep["catalog_size"] == 12 and 0 < pop["coverage"] <= 1
    html = client.get("/v1/experiments/pop-vs-default/report", params={"format": "html"})
    assert html.status_code == 200 and "data:image/png;base64," in html.text and "popular" in html.text


def test_stop_ends_the_arms_and_list_shows_it(client: TestClient, paths: dict[str, Any]) -> None:
    assert client.post("/admin/experiments", json=EXPERIMENT, headers=KEY).status_code == 201
    assert _recs(client, 3)["experiment"] is not None
    assert client.post("/admin/experiments/pop-vs-default/stop").status_code == 401
    r = client.post("/admin/experiments/pop-vs-default/stop", headers=KEY)
    assert r.status_code == 200 and r.json()["status"] == "stopped"
    assert _recs(client, 3)["experiment"] is None
    listing = client.get("/v1/experiments").json()
    assert listing["running"] is None and listing["experiments"][0]["status"] == "stopped"
    assert ExperimentStore(paths["exp"]).get("pop-vs-default").stopped_at is not None
    assert client.get("/v1/experiments/nope").status_code == 404


def test_experiment_created_on_disk_goes_live_in_the_server(
    client: TestClient, paths: dict[str, Any]
) -> None:
    """`recstack experiments create` writes the file; the worker picks it up by itself."""
    ExperimentStore(paths["exp"]).create(ExperimentConfig.from_config(EXPERIMENT))
    client.app.state.online.refresh()  # the poller's tick, without waiting for it
    assert _recs(client, 5)["experiment"]["name"] == "pop-vs-default"


def test_replay_population_drives_the_api(tiny_dataset: Any, paths: dict[str, Any]) -> None:
    """The replay simulator against the in-process app serving a release fitted on the split's train
    part: every user keeps one arm on every visit, a click is always an item of the user's future,
    and each click is followed by its true rating."""
    from recstack.experiments.replay import Population
    from recstack.serving._release import fit_memory_release

    pop = Population.from_split(tiny_dataset, test_fraction=0.3)
    assert pop.future and pop.train is not None
    # a user's future is the split's test part, nothing else
    test = pop.test.interactions
    assert sum(len(f) for f in pop.future.values()) == test.height
    release = fit_memory_release(pop.train, "tiny-train", ("pop", "itemknn"))
    settings = ServingSettings(api_key="secret", event_log=paths["log"], experiments_dir=paths["exp"])
    with TestClient(create_app(settings, loader=lambda target: release)) as client:
        _replay_checks(client, pop, paths)


def _replay_checks(client: TestClient, pop: Any, paths: dict[str, Any]) -> None:
    from recstack.experiments.replay import ReplayConfig, replay

    assert client.post("/admin/experiments", json=EXPERIMENT, headers=KEY).status_code == 201
    stats = replay(client, pop, ReplayConfig(visits=3, k=5, eta=0.0, seed=1, concurrency=1))
    assert stats.users == len(pop.future) and stats.requests == 3 * stats.users and stats.arm_switches == 0
    assign = Assigner(ExperimentConfig.from_config(EXPERIMENT))
    assert all(stats.arms[u] == assign(u) for u in stats.arms)
    clicks = _logged(paths["log"], stats.clicks, "click")
    ratings = _logged(paths["log"], stats.ratings, "rating")
    assert len(clicks) == stats.clicks == len(ratings) and stats.clicks > 0
    for c in clicks:
        assert c.item_id in pop.future[c.user_id]  # eta 0: every shown future item is clicked
    for r in ratings:
        assert r.rating == pop.future[r.user_id][r.item_id]
