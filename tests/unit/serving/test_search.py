"""``GET /v1/search``: text-embedding similarity mixed with title match (`recstack.serving._search`)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from movies_data import MOVIES, WordEncoder, movie_dataset
from recstack.errors import NotFoundError
from recstack.models.retrieval.content import Content
from recstack.serving._catalog import build_catalog
from recstack.serving._release import MemoryRelease, ServingRelease
from recstack.serving._search import TextSearch
from recstack.serving.api.app import create_app
from recstack.serving.settings import ServingSettings


def test_text_search_mixes_meaning_words_and_title() -> None:
    ds = movie_dataset()
    cat = build_catalog(ds)
    enc = WordEncoder()
    item_vecs = enc.encode([f"{m[1]} {' '.join(m[4])} {'droids' if m[0] == 1 else ''}" for m in MOVIES])
    search = TextSearch(cat, item_vecs, enc)
    # meaning and tags: "robots in space" shares no title word with Star Wars
    hit = search.search("robots in space", 3)
    assert hit.mode == "semantic" and cat.item_ids[int(hit.items[0])] == 1
    # "Notting Hill" has no vocabulary word: its title wins; scores are best first
    hit = search.search("Notting Hill", 2)
    assert cat.item_ids[int(hit.items[0])] == 2
    hit = search.search("romance love story", 6)
    assert len(hit.items) >= 2 and bool(np.all(np.diff(hit.scores) <= 0))
    # the signals: cosine, BM25 over title + genres + every tag (stemmed: "pigs" finds the tag
    # "pig"), title match, log popularity
    sig = search.signals("pigs on a farm")
    assert set(sig) == {"embed", "lexical", "title", "pop"}
    assert int(np.argmax(sig["lexical"])) == 4 and np.count_nonzero(sig["lexical"]) == 1
    assert sig["pop"].max() == pytest.approx(1.0) and sig["pop"].min() >= 0
    # without an encoder: words and titles only, matching items only
    plain = TextSearch(cat, None, None)
    hit = plain.search("story", 5)
    assert hit.mode == "lexical" and [cat.item_ids[i] for i in hit.items] == [3, 2]  # title, then tag
    assert [cat.item_ids[i] for i in plain.search("love", 5).items] == [2]  # its tag "love story"
    assert len(plain.search("zzz", 5).items) == 0
    # without bm25s: titles only
    plain._has_lexical = False
    hit = plain.search("story", 5)
    assert hit.mode == "title" and [cat.item_ids[i] for i in hit.items] == [3]
    assert len(plain.search("love", 5).items) == 0


def test_exact_title_comes_first_and_popularity_orders_the_rest() -> None:
    from recstack.serving._search import SearchWeights, fuse, rank, title_keys

    assert title_keys("Matrix, The") == {"the matrix", "matrix"}
    assert "amelie" in title_keys("Amelie (Fabuleux destin d'Amélie Poulain, Le)")
    assert title_keys("The  Matrix!") == {"the matrix", "matrix"}
    # the popularity prior: item 0 matches the words a bit better, item 1 is far more popular;
    # item 2 matches nothing and stays out whatever its popularity
    sig = {
        "lexical": np.array([2.0, 1.9, 0.0], np.float32),
        "title": np.zeros(3, np.float32),
        "pop": np.array([0.1, 1.0, 1.0], np.float32),
    }
    for fusion in ("rrf", "weighted"):
        flat = fuse(sig, SearchWeights(fusion=fusion, pop=0.0))
        prior = fuse(sig, SearchWeights(fusion=fusion, pop=1.0))
        assert rank(flat).tolist() == [0, 1] and rank(prior).tolist() == [1, 0], fusion
    # an exact title comes first whatever the rest says
    assert rank(prior, np.array([0])).tolist() == [0, 1]
    ds = movie_dataset()
    cat = build_catalog(ds)
    search = TextSearch(cat, None, None)
    assert [cat.item_ids[i] for i in search.search("godfather", 1).items] == [4]
    assert [cat.item_ids[i] for i in search.search("The Godfather!", 1).items] == [4]


def _client(release: ServingRelease) -> TestClient:
    def load(target: str) -> ServingRelease:
        if target not in ("production", release.id):
            raise NotFoundError(f"no release {target!r}")
        return release

    return TestClient(create_app(ServingSettings(), loader=load))


def test_search_api_title_mode_without_content_model(tiny_release: MemoryRelease) -> None:
    with _client(tiny_release) as client:
        body = client.get("/v1/search", params={"q": "movie 1", "k": 3}).json()
        assert body["mode"] == "lexical" and body["release_id"] == "tiny-a"
        # "movie 1" is a substring of Movie 1, 10, 11; every title shares the word "movie"
        assert [it["item_id"] for it in body["items"]][:1] == [101]
        assert {it["item_id"] for it in body["items"]} <= {101, 110, 111}
        assert client.get("/v1/search", params={"q": ""}).status_code == 422
        assert client.get("/v1/search", params={"q": "x", "k": 0}).status_code == 422


@pytest.fixture(scope="module")
def content_release(text_cache_dir: str) -> MemoryRelease:
    ds = movie_dataset()
    model = Content(cache_dir=text_cache_dir).fit(ds)  # with the ONNX query encoder
    return MemoryRelease(id="movies-1", dataset=ds, retrievers={"content": model})


@pytest.fixture
def content_client(content_release: MemoryRelease) -> Iterator[TestClient]:
    with _client(content_release) as c:
        yield c


def _titles(body: dict[str, Any]) -> list[str]:
    return [it["title"] for it in body["items"]]


@pytest.mark.slow  # the first run exports MiniLM to ONNX (~10 s; then cached)
def test_semantic_search_finds_star_wars(content_client: TestClient) -> None:
    body = content_client.get("/v1/search", params={"q": "space opera with robots", "k": 3}).json()
    assert body["mode"] == "semantic"
    assert _titles(body)[0].startswith("Star Wars")
    # the two romances by meaning (the popularity prior may put the most popular film among them)
    body = content_client.get("/v1/search", params={"q": "romantic love", "k": 3}).json()
    assert {"Notting Hill", "Sleepless in Seattle"} <= set(_titles(body))
    # a title still wins by its name
    body = content_client.get("/v1/search", params={"q": "babe", "k": 1}).json()
    assert _titles(body) == ["Babe"]


@pytest.mark.slow  # a build with the text encoder (the ONNX export is cached between runs)
def test_release_with_content_serves_semantic_search(text_cache_dir: str, tmp_path: Path) -> None:
    from recstack.release import BuildConfig, build, load

    data = movie_dataset().save(tmp_path / "movies")
    cfg = BuildConfig.from_config(
        {
            "dataset": {"source": str(data)},
            "evaluation": {"enabled": False},
            "features": {"enabled": False},
            "checks": {"enabled": False},
            "models": [{"name": "pop"}, {"name": "content", "params": {"cache_dir": text_cache_dir}}],
            "index": {"backend": "exact", "source": "content"},
        }
    )
    root = tmp_path / "releases"
    m = build(cfg, root)
    # the release holds the item text embeddings (indexed) and the ONNX query encoder
    assert m.artifacts.index is not None and m.artifacts.index.source == "content"
    files = {f.path for f in m.files}
    assert {"models/content/encoder/model.onnx", "models/content/encoder/tokenizer.json"} <= files
    rel = load(m.id, root)
    assert rel.item_embeddings is not None and rel.item_embeddings.shape == (6, 384)
    with _client(rel) as client:
        body = client.get("/v1/search", params={"q": "space opera with robots", "k": 1}).json()
        assert body["mode"] == "semantic" and _titles(body)[0].startswith("Star Wars")
        sim = client.get("/v1/items/2/similar", params={"k": 1, "model": "content"}).json()
        assert _titles(sim) == ["Sleepless in Seattle"]


@pytest.mark.slow  # the content_release fixture exports MiniLM to ONNX (cached)
def test_search_uses_the_content_model_that_has_an_encoder(content_release: MemoryRelease) -> None:
    from recstack.serving._search import open_text_search

    ds = content_release.dataset
    no_encoder = Content(cache=False, export_onnx=False).fit(ds)
    # content_userknn (no encoder) listed first: the search still comes from `content`
    rel = MemoryRelease(
        id="movies-2",
        dataset=ds,
        retrievers={"content_userknn": no_encoder, "content": content_release.retriever("content")},
    )
    assert open_text_search(rel, build_catalog(ds)).semantic
    only = MemoryRelease(id="movies-3", dataset=ds, retrievers={"content": no_encoder})
    assert not open_text_search(only, build_catalog(ds)).semantic


def test_an_item_nobody_has_seen_gets_the_median_prior() -> None:
    from recstack.serving._catalog import extend_catalog

    cat = build_catalog(movie_dataset())
    search = TextSearch(cat, None, None)
    before = search.signals("x")["pop"]
    # popularity (distinct users): Toy Story 2, the others 1: log-scaled 1.0 and log(2) / log(3)
    assert before[2] == pytest.approx(1.0) and before[0] == pytest.approx(np.log(2) / np.log(3))
    row = {"item_id": 7, "title": "Robot Wars", "year": 2024, "genres": ["Sci-Fi"], "text": "Droids."}
    search.add(None, extend_catalog(cat, [row]))
    after = search.signals("x")["pop"]
    assert len(after) == 7 and after[6] == pytest.approx(float(np.median(before)))
    assert np.array_equal(after[:6], before)
