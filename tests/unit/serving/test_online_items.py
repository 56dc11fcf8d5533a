"""Items added online (``POST /v1/items``, `Pipeline.add_items`): in the catalogue, the text index,
search, recommendations and similar items at once; persisted as ``item`` records of the event log
(a restart and the next build from the log keep them)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from movies_data import MOVIES, WordEncoder, movie_dataset
from recstack.errors import InvalidArgumentError, NotFoundError
from recstack.events import NewEvent, open_log
from recstack.events.dataset import EventsSpec, dataset_with_events, read_events
from recstack.serving._release import MemoryRelease, ServingRelease, fit_memory_release
from recstack.serving._search import TextSearch
from recstack.serving._state import build_state
from recstack.serving.api.app import create_app
from recstack.serving.pipeline import NEW_ITEMS_SOURCE, Pipeline, RecRequest
from recstack.serving.settings import ServingSettings

ROBOT = {
    "item_id": 7,
    "title": "Robot Wars",
    "year": 2024,
    "genres": ["Sci-Fi"],
    "text": "Droids fight in space.",
}


@pytest.fixture
def release() -> MemoryRelease:
    return fit_memory_release(movie_dataset(), "movies-0", ("pop", "itemknn"))


def _with_words(pipe: Pipeline) -> Pipeline:
    """The pipeline with the bag-of-words stand-in for the ONNX text encoder."""
    enc = WordEncoder()
    emb = enc.encode([f"{m[1]} {' '.join(m[4])} {'droids' if m[0] == 1 else ''}" for m in MOVIES])
    pipe._text_search = TextSearch(pipe.catalog, emb, enc)
    return pipe


def test_added_item_is_searchable_recommendable_and_similar(release: MemoryRelease) -> None:
    pipe = _with_words(Pipeline(release))
    assert pipe.catalog.n_items == 6
    [idx] = pipe.add_items([ROBOT])
    assert idx == 6 and pipe.catalog.n_items == 7 and pipe.base_n_items == 6
    assert pipe.catalog.item_index(7) == 6 and pipe.catalog.titles[6] == "Robot Wars"
    assert pipe.catalog.years[6] == 2024 and pipe.catalog.genre_lists[6] == ["Sci-Fi"]
    # idempotent: the same id again changes nothing
    assert pipe.add_items([ROBOT]).tolist() == [6] and pipe.catalog.n_items == 7
    # search: by title and by meaning ("droids" is in its text and Star Wars')
    hit = pipe.text_search.search("robot wars", 1)
    assert hit.items.tolist() == [6]
    assert set(pipe.text_search.search("droids", 2).items.tolist()) == {0, 6}
    # similar items by text embedding, both ways
    ids, _, model = pipe.similar(6, 1)
    assert ids.tolist() == [0] and model == "content"
    ids, _, _ = pipe.similar(0, 1, "content")
    assert ids.tolist() == [6]
    # recommendable at once: user 1 liked Star Wars (and Toy Story) -> the new item through new_items
    res = pipe.recommend(RecRequest(user_id=1, k=5))
    items = res.items.tolist()
    assert 6 in items and NEW_ITEMS_SOURCE in res.sources[items.index(6)]
    # a fan of romances (Notting Hill: nothing in common with its text) does not get it recalled
    res = pipe.recommend(RecRequest(liked_items=[2], k=7))
    assert all(NEW_ITEMS_SOURCE not in s for s in res.sources)
    # a liked new item is excluded, and the models still go on the release items of the history
    res = pipe.recommend(RecRequest(liked_items=[7, 1], k=3))
    assert 6 not in res.items.tolist() and res.history == 1


def test_without_encoder_items_are_searchable_by_words(release: MemoryRelease) -> None:
    pipe = Pipeline(release)
    assert not pipe.text_search.semantic
    assert pipe.text_search.search("droids", 3).items.tolist() == []
    [idx] = pipe.add_items([ROBOT])
    # its title first; Star Wars (its tag "ROBOTS AND ANDROIDS") matches the word too
    assert pipe.text_search.search("robot", 3).items.tolist() == [idx, 0]
    # words of its text: the BM25 index covers the grown catalogue once rebuilt (in the background)
    pipe.text_search.wait_lexical()
    assert pipe.text_search.search("droids", 3).items.tolist() == [idx]
    # similar items: the most popular ones sharing a genre, then the most popular others
    ids, scores, used = pipe.similar(idx, pipe.catalog.n_items)
    cat = pipe.catalog
    share = [bool(set(cat.genre_lists[int(i)]) & set(ROBOT["genres"])) for i in ids]
    assert used == "genre" and idx not in ids.tolist() and share == sorted(share, reverse=True)
    assert any(share) and list(scores[: sum(share)]) == sorted(scores[: sum(share)], reverse=True)
    res = pipe.recommend(RecRequest(user_id=1, k=7))
    assert NEW_ITEMS_SOURCE not in {s for ss in res.sources for s in ss}


def test_item_records_restart_and_build(release: MemoryRelease, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'events.db'}"
    log = open_log(url)
    assert log is not None
    payload = {k: ROBOT[k] for k in ("title", "year", "genres", "text")}
    log.append([NewEvent(type="item", user_id="admin", item_id="7", ts=100, payload=payload)])
    log.append([NewEvent(type="rating", user_id="1", item_id="7", ts=101, rating=5.0)])
    with pytest.raises(InvalidArgumentError, match="title"):
        NewEvent(type="item", user_id="admin", item_id="8", ts=1, payload={"title": " "})
    # a worker (re)starting on the log adds the logged item to its catalogue
    state = build_state(release, ServingSettings(), event_log=log)
    assert state.pipeline.catalog.item_index(7) == 6
    assert state.pipeline.catalog.titles[6] == "Robot Wars"
    # the next build from the log has the item with its attributes (and its rating)
    events, _ = read_events(EventsSpec(log=url), log)
    ds, stats = dataset_with_events(movie_dataset(), events, EventsSpec(log=url))
    assert ds.n_items == 7 and stats["new_items"] == 1
    row = ds.items.filter(ds.items["external_id"] == 7).row(0, named=True)
    assert (row["title"], row["year"], row["genres"], row["text"]) == (
        "Robot Wars",
        2024,
        ["Sci-Fi"],
        "Droids fight in space.",
    )
    assert ds.interactions.filter(ds.interactions["item"] == ds.item_vocab.index(7)).height == 1
    log.close()


def _client(rel: ServingRelease, settings: ServingSettings) -> TestClient:
    def load(target: str) -> ServingRelease:
        if target not in ("production", rel.id):
            raise NotFoundError(f"no release {target!r}")
        return rel

    return TestClient(create_app(settings, loader=load))


def test_post_items_api(release: MemoryRelease, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'events.db'}"
    settings = ServingSettings(api_key="secret", event_log=url)
    with _client(release, settings) as client:
        assert client.post("/v1/items", json=ROBOT).status_code == 401
        assert client.post("/v1/items", json=ROBOT, headers={"X-API-Key": "nope"}).status_code == 401
        bad = client.post("/v1/items", json={"item_id": 9}, headers={"X-API-Key": "secret"})
        assert bad.status_code == 422
        # a catalogue of integer ids takes integer ids only, refused before anything is logged (a
        # logged id the catalogue cannot hold was replayed, and failed, in every worker)
        word = client.post("/v1/items", json={**ROBOT, "item_id": "robot"}, headers={"X-API-Key": "secret"})
        assert word.status_code == 422 and "integers" in word.json()["error"]["message"]
        log = open_log(url)
        assert log is not None and log.last_offset() == 0
        spec = client.get("/openapi.json").json()["components"]["schemas"]["NewItem"]["properties"]
        assert {s["type"] for s in spec["item_id"]["anyOf"]} == {"integer", "string"}
        assert spec["item_id"]["anyOf"][1]["pattern"] == "^-?[0-9]{1,15}$"
        r = client.post("/v1/items", json=ROBOT, headers={"X-API-Key": "secret"})
        assert r.status_code == 201, r.text
        body = r.json()
        assert body["created"] and body["persisted"] and body["offset"] >= 1
        assert (body["item_id"], body["title"], body["year"]) == (7, "Robot Wars", 2024)
        assert client.get("/v1/items/7").json()["title"] == "Robot Wars"
        found = client.get("/v1/search", params={"q": "robot wars", "k": 1}).json()
        assert [it["item_id"] for it in found["items"]] == [7]
        again = client.post("/v1/items", json=ROBOT, headers={"X-API-Key": "secret"})
        assert again.status_code == 200 and not again.json()["created"]
        # an event on the new item is accepted
        ev = client.post("/v1/events", json={"type": "view", "user_id": 1, "item_id": 7})
        assert ev.status_code == 201, ev.text
        assert client.get("/v1/users/1/recommendations", params={"k": 5}).status_code == 200
    # a restarted server on the same log still has it
    with _client(release, settings) as client:
        assert client.get("/v1/items/7").json()["title"] == "Robot Wars"
    # without admin keys the endpoint is off
    with _client(release, ServingSettings()) as client:
        assert client.post("/v1/items", json=ROBOT).status_code == 403


def test_rankers_score_new_items_as_their_nearest_release_item(release: MemoryRelease) -> None:
    pipe = _with_words(Pipeline(release))
    pipe.add_items([ROBOT])
    seen: list[np.ndarray] = []

    class Spy:
        def score(self, ctx: object, items: np.ndarray) -> np.ndarray:
            seen.append(items.copy())
            return -items.astype(np.float32)

    pipe.rankers["spy"] = Spy()  # type: ignore[assignment]
    user = pipe.resolve(RecRequest(user_id=1))
    pipe.rank(user, "spy", np.array([6, 2], dtype=np.int64), np.zeros(2, np.float32))
    # item 6 (Robot Wars) is scored as item 0 (Star Wars, its nearest by text)
    assert seen[0].tolist() == [0, 2]


def test_answer_monitor_skips_items_added_after_it(release: MemoryRelease) -> None:
    from recstack.ops.monitoring import ShownMonitor

    pipe = _with_words(Pipeline(release))
    cat = pipe.catalog
    monitor = ShownMonitor(cat.popularity, cat.genre_codes, cat.genre_names, sample_every=1)
    pipe.add_items([ROBOT])
    items = np.array([6, 0, 2], dtype=np.int64)  # 6: added online, unknown to the monitor's tables
    monitor.observe("movies-0", "none", items, np.ones(3, np.float32), False, [])
    assert monitor._coverage(("movies-0", "none"), np.array([0], dtype=np.int64)) == pytest.approx(2 / 6)


@pytest.mark.parametrize("genres", [["Sci-Fi", "Action"], ["Western"]], ids=["known-genres", "new-genre"])
def test_extend_catalog_equals_a_rebuild(genres: list[str]) -> None:
    from recstack.serving._catalog import build_catalog, extend_catalog, extend_items

    ds = movie_dataset()
    rows = [{**ROBOT, "genres": genres}, {"item_id": 8, "title": "Untitled", "year": None, "genres": []}]
    fast = extend_catalog(build_catalog(ds), rows)
    full = build_catalog(extend_items(ds, rows))
    for name in ("item_ids", "titles", "genre_names", "genre_lists", "genre_codes", "n_users"):
        assert getattr(fast, name) == getattr(full, name), name
    for name in (
        "years",
        "genre_bits",
        "genre_matrix",
        "popularity",
        "pop_order",
        "rating_count",
        "rater_count",
        "rating_mean",
    ):
        np.testing.assert_array_equal(getattr(fast, name), getattr(full, name), err_msg=name)
    assert fast.titles_lower.to_list() == full.titles_lower.to_list()
    assert fast.n_users == 4 and fast.n_items == 8
    assert fast.interactions().equals(ds.interactions)
