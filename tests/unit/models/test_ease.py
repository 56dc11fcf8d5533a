"""EASE: the closed form worked out by hand on a 3-item matrix."""

from __future__ import annotations

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
