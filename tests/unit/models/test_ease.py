"""EASE: the closed form worked out by hand on a 3-item matrix."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest
import scipy.sparse as sp

from recstack.data.dataset import Dataset
from recstack.errors import TooLargeError
from recstack.models.retrieval.ease import EASE, ease_weights

# users x items:   item0 item1 item2
#   u0               1     1     0
#   u1               0     1     1
#   u2               1     1     1
X = sp.csr_matrix(np.array([[1, 1, 0], [0, 1, 1], [1, 1, 1]], dtype=np.float32))
# G = X^T X = [[2,2,1],[2,3,2],[1,2,2]]; with lambda = 1: A = [[3,2,1],[2,4,2],[1,2,3]], det A = 16,
# adj A = [[8,-4,0],[-4,8,-4],[0,-4,8]]  ->  P = A^-1 = [[.5,-.25,0],[-.25,.5,-.25],[0,-.25,.5]]
# B[i, j] = -P[i, j] / P[j, j]: B01 = .25/.5 = .5, B02 = 0, B10 = .5, B12 = .5, B20 = 0, B21 = .5
B_BY_HAND = np.array([[0, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0]])


def _dataset(matrix: sp.csr_matrix) -> Dataset:
    u, i = matrix.nonzero()
    return Dataset.from_frames("ease", pl.DataFrame({"user_id": u, "item_id": i}))


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_weights_by_hand(dtype: type) -> None:
    np.testing.assert_allclose(ease_weights(X, 1.0, dtype=dtype), B_BY_HAND, atol=1e-6)


def test_scores_by_hand() -> None:
    m = EASE(l2=1.0).fit(_dataset(X))
    hist = sp.csr_matrix(np.array([[1, 0, 0], [1, 0, 1]], dtype=np.float32))
    # [1,0,0] @ B = row 0 = [0, .5, 0]; [1,0,1] @ B = rows 0 + 2 = [0, 1, 0]
    np.testing.assert_allclose(m.score_history(hist), [[0, 0.5, 0], [0, 1, 0]], atol=1e-6)
    ids, _ = m.recommend_history(hist[:1], 1)
    assert ids.tolist() == [[1]]


def test_matches_dense_inverse_on_random_data() -> None:
    rng = np.random.default_rng(3)
    Y = (rng.random((40, 15)) < 0.3).astype(np.float64)
    P = np.linalg.inv(Y.T @ Y + 7.0 * np.eye(15))
    B = np.eye(15) - P / np.diag(P)[None, :]
    np.fill_diagonal(B, 0.0)
    np.testing.assert_allclose(ease_weights(sp.csr_matrix(Y), 7.0), B, atol=1e-5)


def test_too_many_items_is_a_clear_error() -> None:
    with pytest.raises(TooLargeError, match=r"3 items, above max_items=2.*max_items") as info:
        EASE(max_items=2).fit(_dataset(X))
    assert info.value.http_status == 422
    EASE(max_items=3).fit(_dataset(X))  # at the limit is fine


def _random_dataset(n_users: int = 60, n_items: int = 20, seed: int = 5) -> tuple[sp.csr_matrix, Dataset]:
    rng = np.random.default_rng(seed)
    # item j is picked with probability decreasing in j: a popularity order to cut the head from
    Y = (rng.random((n_users, n_items)) < np.linspace(0.6, 0.05, n_items)[None, :]).astype(np.float32)
    Y[0, :] = 1.0  # every item has an interaction, so the dataset's item index is the column
    u, i = Y.nonzero()
    ds = Dataset.from_frames("ease", pl.DataFrame({"user_id": u, "item_id": i}))
    # the dataset's own matrix (its vocabulary may order items differently from Y's columns)
    return ds.to_csr("binary"), ds


def test_auto_is_exact_up_to_the_threshold() -> None:
    _, ds = _random_dataset()
    exact = EASE(l2=3.0, mode="exact").fit(ds)
    auto = EASE(l2=3.0, mode="auto", exact_max_items=ds.n_items).fit(ds)
    assert auto.head is None and auto.weights is not None and exact.weights is not None
    np.testing.assert_array_equal(auto.weights, exact.weights)


def test_head_tail_by_its_definition(tmp_path: Path) -> None:
    """Head: exact EASE of the head's sub-matrix; tail item i: ridge regression of column i on its
    ``tail_neighbours`` head items with the largest Gram entries (here all head items)."""
    X, ds = _random_dataset()
    Y = X.toarray().astype(np.float64)
    H, l2 = 8, 3.0
    m = EASE(l2=l2, mode="auto", exact_max_items=H, tail_neighbours=H).fit(ds)
    assert m.weights is None and m.head is not None and m.head_weights is not None
    assert m.tail_weights is not None
    pop = Y.sum(axis=0)
    head = np.sort(np.argsort(-pop, kind="stable")[:H])
    np.testing.assert_array_equal(m.head, head)
    Yh = Y[:, head]
    np.testing.assert_allclose(m.head_weights, ease_weights(sp.csr_matrix(Yh), l2), atol=1e-5)
    tail = np.setdiff1d(np.arange(ds.n_items), head)
    want = np.linalg.solve(Yh.T @ Yh + l2 * np.eye(H), Yh.T @ Y[:, tail])  # [H, n_tail]
    np.testing.assert_allclose(m.tail_weights.toarray()[:, tail], want, atol=1e-5)
    assert m.tail_weights[:, head].nnz == 0
    # scores: head columns from the head block, tail columns from the tail regressions; tail items
    # of the history contribute nothing
    hist = sp.csr_matrix(Y[:3])
    s = m.score_history(hist)
    np.testing.assert_allclose(s[:, head], Yh[:3] @ m.head_weights, atol=1e-5)
    np.testing.assert_allclose(s[:, tail], Yh[:3] @ want, atol=1e-4)
    again = EASE.load(m.save(tmp_path / "m"))
    np.testing.assert_array_equal(again.score_history(hist), s)


def test_head_tail_keeps_the_nearest_head_items() -> None:
    X, ds = _random_dataset()
    m = EASE(l2=3.0, exact_max_items=8, tail_neighbours=3).fit(ds)
    assert m.tail_weights is not None
    n_tail = ds.n_items - 8
    assert m.tail_weights.nnz <= 3 * n_tail
    G = (X.T @ X).toarray()
    assert m.head is not None
    for i in np.setdiff1d(np.arange(ds.n_items), m.head)[:4]:
        rows = m.tail_weights[:, i].nonzero()[0]
        kept = G[m.head[rows], i]
        others = np.delete(G[m.head, i], rows)
        assert kept.min() >= others.max()  # the 3 head items that co-occur most with i


def test_exact_mode_keeps_the_limit_auto_does_not() -> None:
    _, ds = _random_dataset()
    with pytest.raises(TooLargeError, match="mode='auto'"):
        EASE(mode="exact", max_items=10).fit(ds)
    m = EASE(mode="auto", max_items=10, exact_max_items=10).fit(ds)
    assert m.head is not None and len(m.head) == 10


def test_the_in_place_mirror_works_block_by_block(monkeypatch: pytest.MonkeyPatch) -> None:
    from recstack.models.retrieval import ease

    rng = np.random.default_rng(3)
    Y = (rng.random((40, 15)) < 0.3).astype(np.float64)
    P = np.linalg.inv(Y.T @ Y + 7.0 * np.eye(15))
    B = np.eye(15) - P / np.diag(P)[None, :]
    np.fill_diagonal(B, 0.0)
    monkeypatch.setattr(ease, "BLOCK_ENTRIES", 15 * 4)  # blocks of 4 rows: 4 + 4 + 4 + 3
    np.testing.assert_allclose(ease.ease_weights(sp.csr_matrix(Y), 7.0), B, atol=1e-5)
