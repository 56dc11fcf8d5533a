"""ALS / BPR through implicit: fold-in equations, BLAS threads, scoring from factors."""

from __future__ import annotations

import warnings

import numpy as np
import polars as pl
import scipy.sparse as sp

from recstack.data.dataset import Dataset
from recstack.models.retrieval.mf import ALS, BPR


def _dataset(seed: int = 0) -> Dataset:
    rng = np.random.default_rng(seed)
    Y = sp.random(30, 20, density=0.25, format="csr", random_state=rng, dtype=np.float32)
    u, i = Y.nonzero()
    return Dataset.from_frames("mf", pl.DataFrame({"user_id": u, "item_id": i}))


def test_als_fit_emits_no_blas_thread_warning() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # implicit warns when OpenBLAS uses > 1 thread
        ALS(factors=4, iterations=2).fit(_dataset())


def test_als_scores_are_factor_products() -> None:
    m = ALS(factors=4, iterations=3, num_threads=1).fit(_dataset())
    assert m.user_factors is not None and m.item_factors is not None
    assert m.user_factors.shape == (_dataset().n_users, 4)
    np.testing.assert_allclose(m.score_users([2, 5]), m.user_factors[[2, 5]] @ m.item_factors.T, rtol=1e-6)


def test_als_fold_in_solves_the_weighted_normal_equations() -> None:
    # ALS user step: (V^T C_u V + reg I) x = V^T C_u p_u, p_u = (h > 0), with implicit's confidences
    # C_u = alpha * h on observed entries and 1 elsewhere
    m = ALS(factors=4, iterations=5, alpha=3.0, regularization=0.5, num_threads=1).fit(_dataset())
    assert m.item_factors is not None
    V = m.item_factors.astype(np.float64)
    h = np.zeros(20)
    h[[1, 4, 7]] = 1.0
    x = m.fold_in(sp.csr_matrix(h[None, :].astype(np.float32)))[0].astype(np.float64)
    C = np.where(h > 0, 3.0 * h, 1.0)
    lhs = V.T @ (C[:, None] * V) + 0.5 * np.eye(4)
    rhs = V.T @ (C * (h > 0))
    np.testing.assert_allclose(lhs @ x, rhs, rtol=1e-3, atol=1e-4)


def test_bpr_fold_in_is_mean_item_vector_with_bias() -> None:
    m = BPR(factors=4, iterations=5, num_threads=1).fit(_dataset())
    assert m.item_factors is not None
    V = m.item_factors
    assert V.shape == (20, 5)  # implicit appends an item-bias column
    x = m.fold_in(sp.csr_matrix(([1.0, 1.0], ([0, 0], [3, 8])), shape=(1, 20), dtype=np.float32))
    np.testing.assert_allclose(x[0, :4], (V[3, :4] + V[8, :4]) / 2, rtol=1e-5)
    assert x[0, 4] == 1.0
    # scores = x @ V^T: the mean dot product plus each item's bias
    hist = sp.csr_matrix(([1.0], ([0], [3])), shape=(1, 20), dtype=np.float32)
    np.testing.assert_allclose(m.score_history(hist)[0], V[:, :4] @ V[3, :4] + V[:, 4], rtol=1e-5, atol=1e-6)


def test_similar_items_is_item_factor_cosine() -> None:
    m = ALS(factors=4, iterations=3, num_threads=1).fit(_dataset())
    assert m.item_factors is not None
    V = m.item_factors / np.linalg.norm(m.item_factors, axis=1, keepdims=True)
    ids, scores = m.similar_items([0], 3)
    cos = V @ V[0]
    cos[0] = -np.inf
    assert ids[0].tolist() == np.argsort(-cos)[:3].tolist()
    np.testing.assert_allclose(scores[0], np.sort(cos)[::-1][:3], rtol=1e-5)
