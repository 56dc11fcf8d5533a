"""Cold start in serving: a profile is used only when the release's cold-users validation found it
beats popular (otherwise the answer is popular and says so), and a visitor's liked items explain the
recommendations they lead to, whatever history source recalled them (`tests/cold_users_data.py`)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import scipy.sparse as sp
from fastapi.testclient import TestClient

from cold_users_data import make_taste_dataset
from recstack.data.dataset import Dataset
from recstack.evaluation.cold_users import choose_profile_model
from recstack.models.registry import create
from recstack.serving._release import MemoryRelease
from recstack.serving.api.app import create_app
from recstack.serving.pipeline import Pipeline, PipelineConfig, RecRequest, SourceConfig
from recstack.serving.settings import ServingSettings

WOMAN = {"age": 20, "gender": "F", "occupation": "student"}  # ages of women: 20, 40; of men: 30, 50
MAN = {"age": 30, "gender": "M", "occupation": "student"}


def _release(ds: Dataset, policy: dict[str, Any] | None, rid: str = "cold") -> MemoryRelease:
    return MemoryRelease(
        id=rid, dataset=ds, retrievers={"itemknn": create("itemknn").fit(ds)}, cold_start=policy
    )


@pytest.fixture(scope="module")
def taste() -> Dataset:
    return make_taste_dataset()


@pytest.fixture(scope="module")
def noise() -> Dataset:
    return make_taste_dataset(gender_matters=False)


def _top_ids(pipe: Pipeline, profile: dict[str, Any], k: int = 10) -> list[int]:
    res = pipe.recommend(RecRequest(profile=profile, k=k, model="recall"))
    return [pipe.catalog.item_ids[i] for i in res.items.tolist()]


def test_personal_profile_gets_its_segment(taste: Dataset) -> None:
    policy = choose_profile_model(taste)
    assert policy["personal"]
    pipe = Pipeline(_release(taste, policy))
    woman, man = _top_ids(pipe, WOMAN), _top_ids(pipe, MAN)
    # women like films 0..19, men 20..39: each profile's top 10 is its own group's
    assert all(1000 <= i < 1020 for i in woman) and all(1020 <= i < 1040 for i in man)
    res = pipe.recommend(RecRequest(profile=WOMAN, k=5))
    assert "demographic" in res.fallbacks and res.user_kind == "profile"


def test_profile_that_does_not_beat_popular_is_not_claimed(noise: Dataset) -> None:
    policy = choose_profile_model(noise)
    assert not policy["personal"]
    pipe = Pipeline(_release(noise, policy))
    anonymous = pipe.recommend(RecRequest(k=10, model="recall")).items.tolist()
    for profile in (WOMAN, MAN):
        res = pipe.recommend(RecRequest(profile=profile, k=10, model="recall"))
        # exactly what a visitor who said nothing gets (popular, through the same genre cap)
        assert "demographic" not in res.fallbacks and res.items.tolist() == anonymous
    # a release built before the verdict existed: the same (never "demographic")
    old = Pipeline(_release(noise, None))
    assert "demographic" not in old.recommend(RecRequest(profile=WOMAN, k=5)).fallbacks
    assert not old.cold_start["personal"]


class _TextLike:
    """A content-style retriever: unit item vectors (films 0..19 along e0, 20..39 along e1, a small
    per-item offset), score = cosine of the mean liked vector; per-item contributions = cosines."""

    name = "content"

    def __init__(self, n: int) -> None:
        rng = np.random.default_rng(0)
        emb = np.zeros((n, 8), np.float32)
        emb[:20, 0] = 1.0
        emb[20:, 1] = 1.0
        emb[:, 2:] = 0.1 * rng.standard_normal((n, 6))
        self.emb = emb / np.linalg.norm(emb, axis=1, keepdims=True)

    def score_history(self, history: sp.csr_matrix) -> np.ndarray:
        prof = np.asarray(history @ self.emb)
        prof /= np.maximum(np.linalg.norm(prof, axis=1, keepdims=True), 1e-9)
        return (prof @ self.emb.T).astype(np.float32)

    def item_contributions(self, history: np.ndarray, candidates: np.ndarray) -> np.ndarray:
        return (self.emb[history] @ self.emb[candidates].T).astype(np.float32)


class _Opaque(_TextLike):
    """The same scores without per-item contributions (cannot explain)."""

    name = "opaque"
    item_contributions = None  # type: ignore[assignment]


def test_reasons_name_the_liked_item_of_a_content_source(taste: Dataset) -> None:
    rel = MemoryRelease(id="text", dataset=taste, retrievers={"content": _TextLike(taste.n_items)})
    cfg = PipelineConfig(
        sources=(SourceConfig(name="content", kind="history"), SourceConfig(name="popular", kind="popular"))
    )
    pipe = Pipeline(rel, cfg)
    res = pipe.recommend(RecRequest(liked_items=[1003, 1025], k=10, explain=True, model="recall"))
    assert res.explain is not None
    named = 0
    for item, e in zip(res.items.tolist(), res.explain, strict=True):
        if "content" in e["sources"]:
            # the liked film of the same group (same direction) is the one named
            want = 1003 if item < 20 else 1025
            assert e["because"] == {"item_id": want, "title": f"Film {want - 1000}", "source": "content"}
            named += 1
    assert named >= 8


def test_reasons_fall_through_to_a_source_that_can_explain(taste: Dataset) -> None:
    rel = MemoryRelease(
        id="mix",
        dataset=taste,
        retrievers={"opaque": _Opaque(taste.n_items), "itemknn": create("itemknn").fit(taste)},
    )
    cfg = PipelineConfig(
        sources=(SourceConfig(name="opaque", kind="history"), SourceConfig(name="itemknn", kind="history"))
    )
    pipe = Pipeline(rel, cfg)
    res = pipe.recommend(RecRequest(liked_items=[1000, 1004], k=10, explain=True, model="recall"))
    assert res.explain is not None
    both = [e for e in res.explain if e["sources"][:2] == ["opaque", "itemknn"]]
    assert both, "some items are recalled by both sources"
    for e in both:
        assert e["because"] is not None and e["because"]["source"] == "itemknn"
        assert e["because"]["item_id"] in (1000, 1004)


# ------------------------------------------------------------------------------------------- API
def _client(ds: Dataset) -> TestClient:
    rel = _release(ds, choose_profile_model(ds), ds.name)
    return TestClient(create_app(ServingSettings(), loader=lambda target: rel))


def test_api_says_popular_when_the_profile_is_not_personal(noise: Dataset) -> None:
    with _client(noise) as client:
        rel = client.get("/v1/release").json()
        assert rel["cold_start"]["personal"] is False and "does not beat" in rel["cold_start"]["reason"]
        assert rel["demographics"]["gender"] == ["F", "M"]  # the data has them, the form must not ask
        body = client.post("/v1/recommendations", json={"profile": WOMAN, "k": 6, "explain": True}).json()
        assert body["user_kind"] == "profile" and "demographic" not in body["fallbacks"]
        assert "profile_unused" in body["fallbacks"]
        assert all(it["sources"] == ["popular"] for it in body["items"])
        # the web form asks for a profile only when the release says personal
        js = client.get("/static/app.js").text
        assert "r.cold_start && r.cold_start.personal" in js


def test_api_uses_a_personal_profile(taste: Dataset) -> None:
    with _client(taste) as client:
        assert client.get("/v1/release").json()["cold_start"]["personal"] is True
        woman = client.post("/v1/recommendations", json={"profile": WOMAN, "k": 6, "model": "recall"}).json()
        man = client.post("/v1/recommendations", json={"profile": MAN, "k": 6, "model": "recall"}).json()
        assert "demographic" in woman["fallbacks"] and "profile_unused" not in woman["fallbacks"]
        assert all(it["item_id"] < 1020 for it in woman["items"])
        assert all(it["item_id"] >= 1020 for it in man["items"])
