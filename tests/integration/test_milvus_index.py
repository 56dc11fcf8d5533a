"""ANN backends on item vectors from MovieLens 100K (truncated SVD of the rating matrix)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.sparse.linalg as spla

from recstack.data import load_movielens
from recstack.index import MilvusIndex, create_index, load_index

pytestmark = [pytest.mark.slow, pytest.mark.ml100k]


@pytest.fixture(scope="module")
def vectors() -> tuple[np.ndarray, np.ndarray]:
    ds = load_movielens("ml-100k")
    m = ds.to_csr("rating").astype(np.float64)
    u, s, vt = spla.svds(m, k=32, random_state=0)
    users = (u * np.sqrt(s)).astype(np.float32)
    items = (vt.T * np.sqrt(s)).astype(np.float32)
    return users, items


def _recall(got: np.ndarray, want: np.ndarray) -> float:
    return float(
        np.mean(
            [len(set(a) & set(b)) / want.shape[1] for a, b in zip(got.tolist(), want.tolist(), strict=True)]
        )
    )


@pytest.mark.milvus
def test_milvus_lite_and_faiss_match_exact_on_ml100k(
    vectors: tuple[np.ndarray, np.ndarray], tmp_path: Path
) -> None:
    users, items = vectors
    ids = np.arange(len(items), dtype=np.int64)
    exact = create_index("exact", 32, "ip")
    exact.add(ids, items)
    users = users[:300]  # 300 of the 943 users as queries keeps the test fast
    _, want = exact.search(users, 10)
    faiss_idx = create_index("faiss", 32, "ip", ef_search=128)
    faiss_idx.add(ids, items)
    _, got_f = faiss_idx.search(users, 10)
    mv = create_index("milvus", 32, "ip", uri=str(tmp_path / "ml.db"), collection="ml100k_items")
    assert isinstance(mv, MilvusIndex) and mv.collection == "ml100k_items"
    mv.add(ids, items)
    assert len(mv) == 1682
    _, got_m = mv.search(users, 10)
    assert _recall(got_f, want) >= 0.95
    assert _recall(got_m, want) >= 0.95
    # save exports the vectors; a fresh process would re-attach to the same collection
    saved = mv.save(tmp_path / "saved")
    again = load_index(saved)
    assert isinstance(again, MilvusIndex) and len(again) == 1682
    np.testing.assert_array_equal(again.search(users[:50], 10)[1], got_m[:50])
    again.drop()
    assert len(again) == 0 and again.search(users[:1], 3)[1].tolist() == [[-1, -1, -1]]


def test_cosine_item_is_its_own_nearest_neighbour(vectors: tuple[np.ndarray, np.ndarray]) -> None:
    _, items = vectors
    keep = np.linalg.norm(items, axis=1) > 1e-6  # items nobody rated have a zero vector
    ids = np.flatnonzero(keep).astype(np.int64)
    idx = create_index("faiss", 32, "cosine", ef_search=64)
    idx.add(ids, items[keep])
    scores, got = idx.search(items[keep][:300], 5)
    assert np.mean(got[:, 0] == ids[:300]) >= 0.99
    np.testing.assert_allclose(scores[:, 0], 1.0, atol=1e-4)
