"""Issue 23, serving at scale: a worker whose feature store holds the release's histories (Redis,
or the embedded store) keeps no copy of them. The catalogue holds per-item arrays only, the
release's interactions frame is dropped once the state is built (read again from the release's
files on demand), and every reader of a user's history goes through the pipeline's history backend:
the answers are those of the embedded store and of the in-process history (`MemoryHistory`)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
import scipy.sparse as sp
from fastapi.testclient import TestClient

from recstack.data.dataset import Dataset
from recstack.release import load
from recstack.serving._history import MemoryHistory, StoreHistory
from recstack.serving._state import build_state
from recstack.serving.api.app import create_app
from recstack.serving.pipeline import Pipeline, RecRequest
from recstack.serving.settings import ServingSettings
from recstack.store.redis import RedisFeatureStore
from recstack.testing import build_release

pytestmark = [pytest.mark.redis]

USERS = list(range(1, 21))


@pytest.fixture(scope="module")
def disk_release(tiny_dataset: Dataset, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny dataset built into a release on disk (pop, itemknn, ease), promoted to production."""
    root = tmp_path_factory.mktemp("store-memory")
    data = tiny_dataset.save(root / "data")
    toml = f'[dataset]\nsource = "{data}"\n[evaluation]\nenabled = false\nreport = false\n'
    toml += "".join(f'[[models]]\nname = "{m}"\n' for m in ("pop", "itemknn", "ease"))
    toml += '[index]\nbackend = "none"\n'
    build_release(root / "releases", toml)
    return root / "releases"


def _settings(root: Path, store: str, redis_url: str = "", prefix: str = "") -> ServingSettings:
    kw: dict[str, Any] = {"redis_url": redis_url, "redis_prefix": prefix} if store == "redis" else {}
    return ServingSettings(releases_dir=root, store=store, **kw)  # type: ignore[arg-type]


def _per_interaction_arrays(catalog: Any, n_interactions: int) -> list[str]:
    """Catalogue fields holding an array (or sparse matrix) with a stored entry per interaction."""
    out = []
    for f in dataclasses.fields(catalog):
        v = getattr(catalog, f.name)
        size = (
            v.nnz if isinstance(v, sp.spmatrix | sp.sparray) else v.size if isinstance(v, np.ndarray) else 0
        )
        if size >= n_interactions:
            out.append(f.name)
    return out


@pytest.mark.parametrize("store", ["redis", "embedded"])
def test_worker_with_a_store_holds_no_interaction_history(
    disk_release: Path,
    tiny_dataset: Dataset,
    store: str,
    redis_url: str,
    redis_client: Any,
    redis_prefix: str,
) -> None:
    release = load("production", disk_release)
    n_inter = release.dataset.n_interactions
    state = build_state(release, _settings(disk_release, store, redis_url, redis_prefix))
    cat = state.pipeline.catalog
    # nothing per interaction in the catalogue (before: hist_items / hist_ratings / hist_times)
    assert _per_interaction_arrays(cat, n_inter) == []
    assert cat.n_users == 20 and cat.n_items == 12
    # the interactions frame is dropped: neither the catalogue nor the release holds it
    assert cat.dataset.interactions.height == 0
    assert not cat.release_interactions.held
    assert "dataset" not in release.__dict__
    # the histories are the store's: a Redis worker holds none of them
    assert isinstance(state.pipeline.history, StoreHistory)
    if store == "redis":
        assert isinstance(state.pipeline.history.store, RedisFeatureStore)
    # still readable from the release's files, for the rare whole-release reader (drift reference)
    assert (
        cat.interactions()
        .sort(["user", "timestamp"])
        .equals(tiny_dataset.interactions.sort(["user", "timestamp"]))
    )
    assert not cat.release_interactions.held


def test_redis_answers_equal_embedded_and_in_process(
    disk_release: Path, redis_url: str, redis_client: Any, redis_prefix: str
) -> None:
    """Recommendations, user pages (history) and item pages (rating statistics) of every user and
    item: the same through a Redis worker, an embedded-store worker and the in-process history."""
    answers: dict[str, list[Any]] = {}
    for store in ("redis", "embedded"):
        app = create_app(_settings(disk_release, store, redis_url, redis_prefix))
        with TestClient(app) as c:
            got: list[Any] = []
            for u in USERS:
                rec = c.get(f"/v1/users/{u}/recommendations", params={"k": 5})
                assert rec.status_code == 200, rec.text
                assert rec.json()["degraded"] == []
                got.append([it["item_id"] for it in rec.json()["items"]])
                user = c.get(f"/v1/users/{u}").json()
                got.append([(h["item_id"], h["rating"], h["timestamp"]) for h in user["history"]])
                got.append(user["stats"])
            for i in range(100, 112):
                item = c.get(f"/v1/items/{i}").json()
                got.append(
                    {k: item[k] for k in ("rating_count", "rater_count", "viewer_count", "average_rating")}
                )
            answers[store] = got
            # after answering, still nothing read the whole release back into the worker
            state = app.state.holder.current
            assert not state.pipeline.catalog.release_interactions.held
            assert "dataset" not in state.release.__dict__
    assert answers["redis"] == answers["embedded"]

    # the in-process history (no store; what a Pipeline over a release builds by default)
    release = load("production", disk_release)
    memory = Pipeline(release)
    assert isinstance(memory.history, MemoryHistory)
    ids = memory.catalog.item_ids
    want = [[ids[int(i)] for i in memory.recommend(RecRequest(user_id=u, k=5)).items] for u in USERS]
    assert [answers["redis"][3 * j] for j in range(len(USERS))] == want


def test_item_statistics_match_the_interactions(tiny_dataset: Dataset) -> None:
    """The item page's statistics are the catalogue's per-item arrays (the frame is not kept)."""
    from recstack.serving._catalog import build_catalog

    inter = tiny_dataset.interactions.with_columns(
        pl.when(pl.col("user") % 4 == 0).then(None).otherwise(pl.col("rating")).alias("rating")
    )
    cat = build_catalog(tiny_dataset.with_interactions(inter))
    for i in range(cat.n_items):
        rows = inter.filter(pl.col("item") == i)
        rated = rows.filter(pl.col("rating").is_not_null())
        assert cat.rating_count[i] == rated.height
        assert cat.rater_count[i] == rated["user"].n_unique()
        assert cat.popularity[i] == rows["user"].n_unique()
        mean = rated["rating"].mean() if rated.height else None
        assert np.isnan(cat.rating_mean[i]) if mean is None else cat.rating_mean[i] == pytest.approx(mean)
