"""The batch-served endpoints: ``GET /v1/users/{id}/recommendations?source=batch`` and
``GET /v1/pairs?a=&b=`` answer from the current batch tables, with the batch release id, and follow
a version flip."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from recstack.batch import JobSpec, get_scorer, run_job
from recstack.serving._release import MemoryRelease
from recstack.serving.api.app import create_app
from recstack.serving.settings import ServingSettings


@pytest.fixture(scope="module")
def batch_db(built_release: tuple[Path, str], tmp_path_factory: pytest.TempPathFactory) -> str:
    root, rid = built_release
    url = f"sqlite:///{tmp_path_factory.mktemp('api') / 'b.db'}"
    run_job(JobSpec(kind="users", release=rid, releases_dir=str(root), k=20), url)
    run_job(JobSpec(kind="pairs", release=rid, releases_dir=str(root), k=5, top=8), url)
    return url


@pytest.fixture
def client(
    batch_db: str, mem_release: MemoryRelease, monkeypatch: pytest.MonkeyPatch
) -> Iterator[TestClient]:
    monkeypatch.setenv("RECSTACK_BATCH_SINK", batch_db)
    monkeypatch.setenv("RECSTACK_BATCH_POINTER_TTL", "0")
    app = create_app(ServingSettings(), release=mem_release)
    with TestClient(app) as c:
        yield c


def test_user_batch_recommendations(client: TestClient, built_release: tuple[Path, str]) -> None:
    root, rid = built_release
    scorer = get_scorer(JobSpec(kind="users", release=rid, releases_dir=str(root), k=20))
    user = scorer.cat.dataset.user_vocab.external([3])[0]
    ids, _ = scorer.recommend(scorer.user_profiles([3]), 20)
    r = client.get(f"/v1/users/{user}/recommendations", params={"source": "batch", "k": 6})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["release_id"] == rid and body["source"] == "batch" and body["k"] == 6
    # the first 6 of the stored top 20, as computed by the batch scorer, with catalogue metadata
    assert [it["item_id"] for it in body["items"]] == scorer.cat.dataset.item_vocab.external(ids[0][:6])
    assert all("title" in it and "score" in it for it in body["items"])


def test_user_batch_errors(client: TestClient) -> None:
    r = client.get("/v1/users/no-such-user/recommendations", params={"source": "batch"})
    assert r.status_code == 404 and "source=online" in r.json()["error"]["message"]
    r = client.get("/v1/users/1/recommendations", params={"source": "batch", "model": "recall"})
    assert r.status_code == 404 and "default model" in r.json()["error"]["message"]


def test_user_batch_filters_apply_to_the_stored_list(client: TestClient) -> None:
    """Filters of source=batch drop items from the stored list (it may then hold fewer than k)."""
    full = client.get("/v1/users/1/recommendations", params={"source": "batch", "k": 20}).json()["items"]
    first = full[0]["item_id"]
    genre = full[0]["genres"][0]
    r = client.get(
        "/v1/users/1/recommendations", params={"source": "batch", "k": 20, "exclude": str(first)}
    ).json()["items"]
    assert [it["item_id"] for it in r] == [it["item_id"] for it in full[1:]]
    only = client.get(
        "/v1/users/1/recommendations", params={"source": "batch", "k": 20, "genres": genre}
    ).json()["items"]
    assert only == [it for it in full if genre in it["genres"]]
    none = client.get(
        "/v1/users/1/recommendations", params={"source": "batch", "k": 20, "exclude_genres": genre}
    ).json()["items"]
    assert none == [it for it in full if genre not in it["genres"]]


def test_pairs_endpoint(client: TestClient, built_release: tuple[Path, str]) -> None:
    root, rid = built_release
    scorer = get_scorer(JobSpec(kind="pairs", release=rid, releases_dir=str(root), top=8))
    a, b = scorer.cat.dataset.item_vocab.external(scorer.cat.pop_order[:2])
    r1 = client.get("/v1/pairs", params={"a": a, "b": b})
    r2 = client.get("/v1/pairs", params={"a": b, "b": a, "k": 3})
    assert r1.status_code == 200, r1.text
    assert r1.json()["release_id"] == rid and r1.json()["k"] == 5
    items = [it["item_id"] for it in r1.json()["items"]]
    assert [it["item_id"] for it in r2.json()["items"]] == items[:3]  # (a, b) == (b, a)
    assert a not in items and b not in items
    assert client.get("/v1/pairs", params={"a": a, "b": a}).status_code == 404  # a pair is two items
    last = scorer.cat.dataset.item_vocab.external(scorer.cat.pop_order[-1:])[0]
    assert client.get("/v1/pairs", params={"a": a, "b": last}).status_code == 404


def test_flip_is_seen_by_serving(client: TestClient, built_release: tuple[Path, str], batch_db: str) -> None:
    root, rid = built_release
    rep = run_job(JobSpec(kind="pairs", release=rid, releases_dir=str(root), k=2, top=8), batch_db)
    scorer = get_scorer(JobSpec(kind="pairs", release=rid, releases_dir=str(root), top=8))
    a, b = scorer.cat.dataset.item_vocab.external(scorer.cat.pop_order[:2])
    body = client.get("/v1/pairs", params={"a": a, "b": b}).json()
    assert body["batch_version"] == rep.version and body["k"] == 2
