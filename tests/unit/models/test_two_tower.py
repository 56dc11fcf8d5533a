"""Two-tower retriever on two planted taste clusters: learns them, serves unseen users from features,
ONNX user tower == PyTorch, save/load round-trip."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import polars as pl
import pytest
import scipy.sparse as sp

from recstack.data.dataset import Dataset
from recstack.models.registry import create
from recstack.models.retrieval.two_tower import TwoTower

N_USERS, N_ITEMS, HALF = 80, 40, 20


def _clusters(seed: int = 3) -> Dataset:
    """Users 0..39 (gender F) like items 0..19 (genre Drama); users 40..79 (gender M) like items 20..39
    (genre Action). Each user has 8 items of their cluster."""
    rng = np.random.default_rng(seed)
    rows = []
    t = 0
    for u in range(N_USERS):
        own = 0 if u < N_USERS // 2 else HALF
        for i in rng.choice(HALF, size=8, replace=False) + own:
            t += 1
            rows.append((u, int(i), 4.0, t))
    inter = pl.DataFrame(rows, schema=["user_id", "item_id", "rating", "timestamp"], orient="row")
    users = pl.DataFrame(
        {
            "user_id": list(range(N_USERS)),
            "gender": ["F" if u < N_USERS // 2 else "M" for u in range(N_USERS)],
        }
    )
    items = pl.DataFrame(
        {
            "item_id": list(range(N_ITEMS)),
            "title": [f"Movie {i} (1990)" for i in range(N_ITEMS)],
            "year": [1990] * N_ITEMS,
            "genres": [["Drama"] if i < HALF else ["Action"] for i in range(N_ITEMS)],
        }
    )
    return Dataset.from_frames("clusters", inter, users, items)


PARAMS = {"dim": 16, "hidden": 32, "id_dim": 16, "feat_dim": 8, "epochs": 25, "batch_size": 64,
          "lr": 1e-2, "temperature": 0.1, "val_fraction": 0.0, "max_history": 16}  # fmt: skip


@pytest.fixture(scope="module")
def model() -> TwoTower:
    m = create("two_tower", **PARAMS)
    assert isinstance(m, TwoTower)
    return m.fit(_clusters())


def _own_share(ids: np.ndarray, users: np.ndarray) -> float:
    own_low = users < N_USERS // 2
    in_low = ids < HALF
    return float((in_low == own_low[:, None]).mean())


def test_learns_clusters(model: TwoTower) -> None:
    ds = _clusters()
    users = np.arange(N_USERS)
    ids, scores = model.recommend(users, 5, exclude=ds.to_csr())
    assert ids.shape == (N_USERS, 5) and scores.dtype == np.float32
    # a random recommender puts half of the top 5 into the user's own cluster
    assert _own_share(ids, users) > 0.9


def test_unseen_users_from_history_and_profile(model: TwoTower) -> None:
    # an anonymous user with two Drama items gets Drama items
    hist = sp.csr_matrix((np.ones(2, np.float32), ([0, 0], [1, 2])), shape=(1, N_ITEMS))
    ids, _ = model.recommend_history(hist, 5)
    assert (ids < HALF).all()
    # no history at all, only a profile: gender M -> mostly Action items
    feats = model.features
    assert feats is not None
    empty = sp.csr_matrix((2, N_ITEMS), dtype=np.float32)
    ucat = np.stack([feats.encode_profile({"gender": "F"}), feats.encode_profile({"gender": "M"})])
    s = model.score_history_profile(empty, ucat)
    assert s[0, :HALF].mean() > s[0, HALF:].mean()
    assert s[1, HALF:].mean() > s[1, :HALF].mean()


def test_onnx_user_tower_matches_torch(model: TwoTower, tmp_path: Path) -> None:
    path = model.export_onnx(tmp_path / "user_tower.onnx")
    assert model.histories is not None and model.features is not None
    users = np.arange(N_USERS)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    out = sess.run(
        ["user_emb"],
        {"uid": users + 1, "ucat": model.features.users_cat[users], "hist": model.histories[users]},
    )[0]
    np.testing.assert_allclose(out, model.user_embeddings(users), atol=1e-5)
    emb_path = model.export_item_embeddings(tmp_path / "items.npy")
    items = np.load(emb_path, allow_pickle=False)
    assert items.shape == (N_ITEMS, 16)
    np.testing.assert_allclose(out @ items.T, model.score_users(users), atol=1e-3)


def test_save_load_round_trip(model: TwoTower, tmp_path: Path) -> None:
    model.save(tmp_path / "tt")
    assert not list(tmp_path.rglob("*.pkl"))
    back = TwoTower.load(tmp_path / "tt")
    np.testing.assert_array_equal(back.score_users([0, 41]), model.score_users([0, 41]))
    assert back.config == model.config


def test_deterministic() -> None:
    ds = _clusters()
    a = TwoTower(**{**PARAMS, "epochs": 2}).fit(ds).score_users([0, 1])
    b = TwoTower(**{**PARAMS, "epochs": 2}).fit(ds).score_users([0, 1])
    np.testing.assert_array_equal(a, b)
