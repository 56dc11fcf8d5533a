"""The contract every `Retriever` must pass.

To put a new model under contract add ONE line to `MODELS`: its registry name, small fast
hyperparameters, and whether it personalises (learns user tastes; MostPopular does not).
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
import scipy.sparse as sp

from recstack.data.dataset import Dataset
from recstack.errors import InvalidArgumentError, NotFittedError
from recstack.models import create
from recstack.models.base import Retriever

# (registry name, hyperparameters small enough for the tiny data below, personalised? True: learns
# tastes, False: the same list for everyone, None: neither, e.g. personalised by time)
# fmt: off
MODELS: list[Any] = [
    pytest.param("pop", {}, False, id="pop"),
    pytest.param("recent_pop", {"window_days": 365.0}, False, id="recent_pop"),
    pytest.param("window_pop", {"margin_bins": 1}, None, id="window_pop"),
    pytest.param("trending", {"half_life_days": 30.0}, False, id="trending"),
    pytest.param("genre_trending", {"half_life_days": 30.0}, None, id="genre_trending"),
    pytest.param("itemknn", {"neighbours": 10, "shrink": 1.0}, True, id="itemknn"),
    pytest.param("seqknn", {"window": 3, "neighbours": 10}, True, id="seqknn"),
    pytest.param("rp3beta", {"alpha": 1.0, "beta": 0.3, "neighbours": 10}, True, id="rp3beta"),
    pytest.param("ease", {"l2": 5.0}, True, id="ease"),
    pytest.param("time_ease", {"l2": 5.0, "window": 3}, True, id="time_ease"),
    pytest.param("als", {"factors": 4, "iterations": 15, "regularization": 0.1, "alpha": 5.0, "num_threads": 1}, True, id="als"),  # noqa: E501
    pytest.param("bpr", {"factors": 8, "iterations": 60, "learning_rate": 0.05, "num_threads": 1}, True, id="bpr"),  # noqa: E501
    pytest.param("two_tower", {"dim": 16, "hidden": 32, "id_dim": 16, "feat_dim": 4, "epochs": 60, "batch_size": 32, "lr": 0.01, "val_fraction": 0.0, "temperature": 0.2}, True, id="two_tower"),  # noqa: E501
    pytest.param("content", {"cache": False, "export_onnx": False}, True, id="content"),
    pytest.param("content_userknn", {"cache": False, "export_onnx": False, "neighbours": 5, "min_candidates": 10}, True, id="content_userknn"),  # noqa: E501
    # sasrec: on this data each user's latest item is the one of the other cluster; a sequential model
    # trained to convergence follows it (20 epochs: 15% own-cluster picks), 5 epochs with dropout 0.5
    # learn the clusters first (100%). Learning the order is tested in test_sasrec.py
    pytest.param("sasrec", {"dim": 16, "heads": 1, "blocks": 1, "max_len": 10, "epochs": 5, "batch_size": 16, "lr": 0.02, "dropout": 0.5, "val_fraction": 0.0, "num_threads": 1}, True, id="sasrec"),  # noqa: E501
]
# fmt: on

N_USERS, N_ITEMS, CLUSTER_ITEMS = 60, 40, 20


def _synthetic(seed: int = 7) -> Dataset:
    """Two taste clusters: users u0..u29 like items 0..19, users u30..u59 like items 20..39; each
    item's ``text`` names its cluster's theme (space opera / romantic comedy).

    Each user has 8 items of their own cluster and 1 of the other; item i's chance within its cluster
    falls with i (a popularity slope), so popularity and taste both carry signal. External ids are
    strings for users (``u07``) and ints (100 + index) for items, timestamps increase per event.
    """
    rng = np.random.default_rng(seed)
    rows: list[tuple[str, int, float, int]] = []
    weights = 1.0 / np.arange(1, CLUSTER_ITEMS + 1)
    weights /= weights.sum()
    t = 1_000_000
    for u in range(N_USERS):
        own = 0 if u < N_USERS // 2 else CLUSTER_ITEMS
        other = CLUSTER_ITEMS - own
        items = rng.choice(CLUSTER_ITEMS, size=8, replace=False, p=weights) + own
        extra = rng.integers(CLUSTER_ITEMS) + other
        for i in [*items.tolist(), int(extra)]:
            t += 60
            rows.append((f"u{u:02d}", 100 + int(i), float(rng.integers(1, 6)), t))
    frame = pl.DataFrame(rows, schema=["user_id", "item_id", "rating", "timestamp"], orient="row")
    # every item in the vocabulary even if never sampled; a text per item that names its cluster's
    # theme (the content models read it; the others ignore it)
    themes = ("a space opera with robots and starships, part", "a romantic comedy about a wedding, part")
    items = pl.DataFrame(
        {
            "item_id": [100 + i for i in range(N_ITEMS)],
            "text": [f"{themes[i // CLUSTER_ITEMS]} {i % CLUSTER_ITEMS + 1}" for i in range(N_ITEMS)],
        }
    )
    return Dataset.from_frames("synthetic", frame, items=items)


@pytest.fixture(scope="module")
def data() -> Dataset:
    ds = _synthetic()
    assert ds.n_users == N_USERS and ds.n_items == N_ITEMS
    return ds


_FITTED: dict[str, Retriever] = {}


def _fitted(name: str, params: dict[str, Any], data: Dataset) -> Retriever:
    """One fitted model per name for the read-only tests (fitting is the slow part)."""
    if name not in _FITTED:
        _FITTED[name] = create(name, **params).fit(data)
    return _FITTED[name]


@pytest.mark.parametrize(("name", "params", "personalised"), MODELS)
class TestRetrieverContract:
    def test_recommend_shapes_dtypes_order(
        self, name: str, params: dict[str, Any], personalised: bool | None, data: Dataset
    ) -> None:
        m = _fitted(name, params, data)
        users = np.array([0, 5, 59])
        ids, scores = m.recommend(users, 7)
        assert ids.shape == (3, 7) and scores.shape == (3, 7)
        assert ids.dtype == np.int64 and scores.dtype == np.float32
        assert ((ids >= 0) & (ids < N_ITEMS)).all()
        assert np.isfinite(scores).all()
        assert (np.diff(scores, axis=1) <= 0).all(), "best first"
        for row in ids:
            assert len(set(row.tolist())) == 7, "no item twice in one list"
        # the scores returned are the model's scores of those items
        full = m.score_users(users)
        np.testing.assert_allclose(np.take_along_axis(full, ids, axis=1), scores, rtol=1e-6)

    def test_padding_when_k_exceeds_candidates(
        self, name: str, params: dict[str, Any], personalised: bool | None, data: Dataset
    ) -> None:
        m = _fitted(name, params, data)
        # exclude all but items 3, 4 and 5 for user 0: 3 real results, then 2 pads; k > n_items pads too
        keep = {3, 4, 5}
        ex = sp.csr_matrix(np.array([[0 if j in keep else 1 for j in range(N_ITEMS)]], dtype=np.float32))
        ids, scores = m.recommend([0], 5, exclude=ex)
        assert set(ids[0, :3].tolist()) == keep
        assert ids[0, 3:].tolist() == [-1, -1]
        assert np.isneginf(scores[0, 3:]).all()
        ids, scores = m.recommend([1], N_ITEMS + 3)
        assert ids.shape == (1, N_ITEMS + 3)
        assert sorted(ids[0, :N_ITEMS].tolist()) == list(range(N_ITEMS))
        assert ids[0, N_ITEMS:].tolist() == [-1, -1, -1]

    def test_exclusion_respected(
        self, name: str, params: dict[str, Any], personalised: bool | None, data: Dataset
    ) -> None:
        m = _fitted(name, params, data)
        X = data.to_csr("binary")
        users = np.arange(N_USERS)
        ids, _ = m.recommend(users, 10, exclude=X, batch_size=7)  # batches that do not divide n
        for u in users:
            seen = set(X[u].indices.tolist())
            assert not seen & set(ids[u].tolist()), f"user {u} got a training item back"

    def test_learns_tastes(
        self, name: str, params: dict[str, Any], personalised: bool | None, data: Dataset
    ) -> None:
        m = _fitted(name, params, data)
        X = data.to_csr("binary")
        if personalised is None:  # personalised by something other than taste (window_pop: time)
            return
        if not personalised:  # the same list for everyone
            ids, _ = m.recommend(np.arange(N_USERS), 5)
            assert (ids == ids[0]).all()
            return
        ids, _ = m.recommend(np.arange(N_USERS), 5, exclude=X)
        own_cluster = (ids < CLUSTER_ITEMS) == (np.arange(N_USERS) < N_USERS // 2)[:, None]
        # a model that ignored the user would get ~50% here (the clusters are the same size)
        assert own_cluster.mean() >= 0.8, own_cluster.mean()

    def test_deterministic_with_seed(
        self, name: str, params: dict[str, Any], personalised: bool | None, data: Dataset
    ) -> None:
        a = create(name, **params).fit(data).score_users(np.arange(N_USERS))
        b = create(name, **params).fit(data).score_users(np.arange(N_USERS))
        np.testing.assert_array_equal(a, b)

    def test_save_load_round_trip(
        self, name: str, params: dict[str, Any], personalised: bool | None, data: Dataset, tmp_path: Path
    ) -> None:
        m = _fitted(name, params, data)
        m.save(tmp_path / "m")
        m2 = type(m).load(tmp_path / "m")
        assert m2.config == m.config and m2.n_items == m.n_items
        users = np.arange(N_USERS)
        np.testing.assert_array_equal(m2.score_users(users), m.score_users(users))
        hist = sp.csr_matrix(([1.0, 1.0], ([0, 0], [2, 30])), shape=(1, N_ITEMS), dtype=np.float32)
        np.testing.assert_allclose(m2.score_history(hist), m.score_history(hist), rtol=1e-6, atol=1e-7)
        for a, b in zip(m2.similar_items([0, 39], 5), m.similar_items([0, 39], 5), strict=True):
            np.testing.assert_array_equal(a, b)
        # the registry's generic path loads it too
        from recstack.models.registry import get_class

        assert isinstance(get_class(name).load(tmp_path / "m"), type(m))

    def test_load_never_unpickles(
        self,
        name: str,
        params: dict[str, Any],
        personalised: bool | None,
        data: Dataset,
        tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        m = _fitted(name, params, data)
        d = m.save(tmp_path / "m")
        files = [f for f in d.rglob("*") if f.is_file()]
        for f in files:
            assert f.suffix in {".json", ".npy", ".npz", ".safetensors", ".onnx", ".parquet"}, f
        real_load = np.load
        calls: list[Any] = []

        def guarded_load(*args: Any, **kwargs: Any) -> Any:
            assert not kwargs.get("allow_pickle", False), "np.load with allow_pickle=True"
            calls.append(args[0])
            return real_load(*args, **kwargs)

        def no_pickle(*args: Any, **kwargs: Any) -> Any:
            raise AssertionError("a model artifact was unpickled")

        monkeypatch.setattr(np, "load", guarded_load)
        monkeypatch.setattr(pickle, "load", no_pickle)
        monkeypatch.setattr(pickle, "loads", no_pickle)
        import torch

        monkeypatch.setattr(torch, "load", no_pickle)  # torch.load unpickles
        loaded = type(m).load(d)
        if not any(f.suffix == ".safetensors" for f in files):
            assert calls, "load() read its arrays through np.load"
        loaded.score_users([0])

    def test_unfitted_raises(
        self, name: str, params: dict[str, Any], personalised: bool | None, tmp_path: Path
    ) -> None:
        m = create(name, **params)
        hist = sp.csr_matrix((1, N_ITEMS), dtype=np.float32)
        with pytest.raises(NotFittedError):
            m.recommend([0], 5)
        with pytest.raises(NotFittedError):
            m.score_history(hist)
        with pytest.raises(NotFittedError):
            m.similar_items([0], 5)
        with pytest.raises(NotFittedError):
            m.save(tmp_path / "m")

    @pytest.mark.parametrize("k", [0, -3])
    def test_non_positive_k_raises(
        self, name: str, params: dict[str, Any], personalised: bool | None, data: Dataset, k: int
    ) -> None:
        m = _fitted(name, params, data)
        with pytest.raises(InvalidArgumentError, match="k must be a positive integer"):
            m.recommend([0], k)
        with pytest.raises(InvalidArgumentError, match="k must be a positive integer"):
            m.similar_items([0], k)
        hist = sp.csr_matrix((1, N_ITEMS), dtype=np.float32)
        with pytest.raises(InvalidArgumentError, match="k must be a positive integer"):
            m.recommend_history(hist, k)

    def test_similar_items_excludes_itself(
        self, name: str, params: dict[str, Any], personalised: bool | None, data: Dataset
    ) -> None:
        m = _fitted(name, params, data)
        items = np.arange(N_ITEMS)
        ids, scores = m.similar_items(items, 5)
        assert ids.shape == (N_ITEMS, 5) and ids.dtype == np.int64 and scores.dtype == np.float32
        for i in items:
            assert i not in ids[i].tolist()
        valid = ids >= 0
        assert valid[:, 0].all(), "every item has at least one similar item on this data"
        if personalised:
            # the most similar item lies in the same taste cluster for most items
            same = (ids[:, 0] < CLUSTER_ITEMS) == (items < CLUSTER_ITEMS)
            assert same.mean() >= 0.8, same.mean()

    def test_score_history_for_unseen_user(
        self, name: str, params: dict[str, Any], personalised: bool | None, data: Dataset
    ) -> None:
        m = _fitted(name, params, data)
        # a new user who liked three items of the second cluster (and one empty history)
        hist = sp.csr_matrix(
            ([1.0, 1.0, 1.0], ([0, 0, 0], [21, 22, 25])), shape=(2, N_ITEMS), dtype=np.float32
        )
        scores = m.score_history(hist)
        assert scores.shape == (2, N_ITEMS) and scores.dtype == np.float32
        assert np.isfinite(scores).all()
        ids, _ = m.recommend_history(hist, 5)
        assert not {21, 22, 25} & set(ids[0].tolist())
        assert (ids[1] >= 0).all()
        if personalised:
            assert (ids[0] >= CLUSTER_ITEMS).mean() >= 0.8, ids[0]

    def test_config_round_trip(self, name: str, params: dict[str, Any], personalised: bool | None) -> None:
        m = create(name, **params)
        cfg = m.config
        Cfg = type(cfg)
        assert Cfg(**cfg.dump_config()) == cfg
        assert Cfg.model_validate(json.loads(json.dumps(cfg.dump_config()))) == cfg
        assert type(m)(cfg).config == cfg
        assert m.params() == cfg.dump_config()
        for key, value in params.items():
            assert cfg.dump_config()[key] == value
        with pytest.raises(InvalidArgumentError):
            create(name, no_such_option=1)

    def test_tuning_grid_is_valid(self, name: str, params: dict[str, Any], personalised: bool | None) -> None:
        grid = create(name).tuning_grid
        assert isinstance(grid, tuple) and len(grid) >= 1
        for point in grid:
            create(name, **point)  # every candidate is a valid configuration
        assert len({json.dumps(p, sort_keys=True) for p in grid}) == len(grid), "no duplicates"
