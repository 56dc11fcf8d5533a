"""The memo of known users' recall-source scores in `TwoStageRanker`: scores with the memo equal the
scores without it (also after events), it holds at most its budget of users, and 0 turns it off."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest

from recstack.data.dataset import Dataset
from recstack.features.tables import build_features
from recstack.models.ranking.two_stage import TwoStage
from recstack.serving._ranker import RankContext, TwoStageRanker, load_ranker
from recstack.serving._release import MemoryRelease


def _dataset(n_users: int = 60, n_items: int = 40) -> Dataset:
    """Users prefer one of 4 item blocks (item % 4): 10 items from it plus 2 at random."""
    rng = np.random.default_rng(0)
    rows = []
    for u in range(n_users):
        block = np.flatnonzero(np.arange(n_items) % 4 == u % 4)
        its = np.concatenate([rng.choice(block, 10, replace=False), rng.choice(n_items, 2, replace=False)])
        for t, it in enumerate(np.unique(its)):
            rows.append((u + 1, int(it) + 100, float(1 + (u + it) % 5), 1000 * u + t))
    inter = pl.DataFrame(rows, schema=["user_id", "item_id", "rating", "timestamp"], orient="row")
    items = pl.DataFrame(
        {
            "item_id": [100 + i for i in range(n_items)],
            "title": [f"Movie {i}" for i in range(n_items)],
            "year": [1990 + i % 10 for i in range(n_items)],
            "genres": [[("Action", "Comedy", "Drama")[i % 3]] for i in range(n_items)],
        }
    )
    return Dataset.from_frames("blocks", inter, None, items)


@pytest.fixture(scope="module")
def release(tmp_path_factory: pytest.TempPathFactory) -> tuple[MemoryRelease, TwoStage, Path]:
    ds = _dataset()
    ts = TwoStage(
        ranker="ncf",
        sources=("itemknn", "pop"),
        per_source=8,
        random_negatives=4,
        ranker_grid=({},),
        ranker_params={"epochs": 1, "num_threads": 1},
    ).fit(ds)
    assert ts.ranker is not None
    path = ts.ranker.export_onnx(tmp_path_factory.mktemp("memo") / "ranker.onnx")
    rel = MemoryRelease(
        id="memo-0001",
        dataset=ds,
        retrievers={"itemknn": ts.sources["itemknn"], "pop": ts.sources["pop"], "ranker": ts},
        features=build_features(ds),
        ranker_paths={"ncf": path},
    )
    return rel, ts, path


def _rankers(rel: MemoryRelease, path: Path) -> tuple[TwoStageRanker, TwoStageRanker]:
    a = load_ranker("ncf", path, rel, rel.features)
    b = load_ranker("ncf", path, rel, rel.features)
    assert isinstance(a, TwoStageRanker) and isinstance(b, TwoStageRanker)
    assert b.set_memo(0) == 0
    return a, b


def test_memo_scores_equal_unmemoised_scores(release: tuple[MemoryRelease, TwoStage, Path]) -> None:
    rel, ts, path = release
    memo, plain = _rankers(rel, path)
    train = ts.train_matrix()
    items = np.arange(train.shape[1], dtype=np.int64)
    rng = np.random.default_rng(3)
    for rep in range(2):  # the second pass is served from the memo
        for u in range(0, 60, 5):
            recent = np.asarray(train[u].indices, dtype=np.int64)
            if rep == 1 and u % 2:  # events since the fit: they only change the history row
                recent = np.concatenate([rng.choice(train.shape[1], 2, replace=False), recent])
            ctx = RankContext(u, np.zeros(4, np.int64), recent)
            assert np.array_equal(memo.score(ctx, items), plain.score(ctx, items))
    # the memo holds one row per user asked (12 users), for every source; the plain one nothing
    assert {len(m._rows) for m in memo.memo.values()} == {12}
    assert {len(m._rows) for m in plain.memo.values()} == {0}
    # the memoised rows are never written to (the featurizer masks its own copy)
    row = memo.memo["itemknn"]._rows[0]
    assert not row.flags.writeable
    assert np.array_equal(row, ts.sources["itemknn"].score_users([0]))


def test_memo_budget_evicts_least_recently_used(release: tuple[MemoryRelease, TwoStage, Path]) -> None:
    rel, ts, path = release
    r, _ = _rankers(rel, path)
    n_items = ts.train_matrix().shape[1]
    # 3 users: 3 * 4 bytes * 40 items * 2 sources = 960 bytes
    assert r.set_memo(960 / 2**20) == 3
    items = np.arange(n_items, dtype=np.int64)
    for u in (1, 2, 3, 1, 4):  # 1 is used again before 4 arrives: 2 is the one evicted
        r.score(RankContext(u, np.zeros(4, np.int64), np.zeros(0, np.int64) + u % n_items), items)
    assert list(r.memo["pop"]._rows) == [3, 1, 4]
