"""RP3beta: the random-walk weights, the popularity penalty and top-N pruning worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest
import scipy.sparse as sp

from recstack.data.dataset import Dataset
from recstack.models.retrieval import rp3beta
from recstack.models.retrieval.rp3beta import RP3beta, rp3beta_weights

# users x items (binary):    item0 item1 item2     |u|
#   u0                         1     1     0        2
#   u1                         0     1     1        2
#   u2                         1     1     1        3
#   u3                         0     1     1        2
#   |i|                        2     4     3
X = sp.csr_matrix(np.array([[1, 1, 0], [0, 1, 1], [1, 1, 1], [0, 1, 1]], dtype=np.float32))
# alpha 1: W[i, j] = 1/|i| * (sum over common users u of 1/|u|) * |j|^-beta
#   common users: (0, 1): u0, u2 -> 1/2 + 1/3 = 5/6;  (0, 2): u2 -> 1/3;  (1, 2): u1, u2, u3 -> 4/3
# beta 0.5:
#   W[0, 1] = 1/2 * 5/6 / 2     = 5/24          = 0.208333   W[0, 2] = 1/2 * 1/3 / sqrt3 = 0.096225
#   W[1, 0] = 1/4 * 5/6 / sqrt2 = 5/(24 sqrt2)  = 0.147314   W[1, 2] = 1/4 * 4/3 / sqrt3 = 0.192450
#   W[2, 0] = 1/3 * 1/3 / sqrt2 = 1/(9 sqrt2)   = 0.078567   W[2, 1] = 1/3 * 4/3 / 2     = 0.222222
W_BETA05 = np.array(
    [
        [0.0, 5 / 24, 1 / (6 * math.sqrt(3))],
        [5 / (24 * math.sqrt(2)), 0.0, 1 / (3 * math.sqrt(3))],
        [1 / (9 * math.sqrt(2)), 2 / 9, 0.0],
    ]
)


def _dataset() -> Dataset:
    u, i = X.nonzero()
    return Dataset.from_frames("rp3", pl.DataFrame({"user_id": u, "item_id": i}))


def test_weights_by_hand_without_normalisation() -> None:
    W = rp3beta_weights(X, alpha=1.0, beta=0.5, neighbours=10, normalize=False).toarray()
    np.testing.assert_allclose(W, W_BETA05, rtol=1e-6)


def test_beta_zero_is_the_plain_walk_whose_rows_sum_to_one_minus_the_return() -> None:
    # P3alpha (beta 0, alpha 1): row i holds the 3-step walk's probabilities of arriving at j != i; the
    # walk back to i itself is cut: item0 returns with 1/2 * (1/2 + 1/3) = 5/12, so row 0 sums to 7/12
    W = rp3beta_weights(X, alpha=1.0, beta=0.0, neighbours=10, normalize=False).toarray()
    # returns: item0 1/2 * (1/2 + 1/3), item1 1/4 * (1/2 + 1/2 + 1/3 + 1/2), item2 1/3 * (1/2 + 1/3 + 1/2)
    back = np.array([5 / 12, 11 / 24, 4 / 9])
    np.testing.assert_allclose(W.sum(axis=1) + back, 1.0, rtol=1e-6)
    assert W[0, 1] == pytest.approx(5 / 12, rel=1e-6)  # 1/2 * 5/6


def test_alpha_is_applied_to_both_transitions() -> None:
    # alpha 0.5, beta 0: W[0, 1] = 2^-0.5 * (2^-0.5 + 3^-0.5) = 1/2 + 1/sqrt6 = 0.908248
    W = rp3beta_weights(X, alpha=0.5, beta=0.0, neighbours=10, normalize=False).toarray()
    assert W[0, 1] == pytest.approx(0.5 + 1 / math.sqrt(6), rel=1e-6)


def test_normalised_rows_sum_to_one() -> None:
    W = rp3beta_weights(X, alpha=1.0, beta=0.5, neighbours=10, normalize=True).toarray()
    # row 0 = [0, 0.208333, 0.096225] / 0.304558 = [0, 0.684051, 0.315949]
    np.testing.assert_allclose(W[0], [0.0, 0.684051, 0.315949], rtol=1e-5)
    np.testing.assert_allclose(W.sum(axis=1), 1.0, rtol=1e-6)


def test_top1_neighbour_and_scores() -> None:
    # beta 0.5, top 1 per row: row 0 keeps item1 (0.208 > 0.096), row 1 keeps item2 (0.192 > 0.147),
    # row 2 keeps item1 (0.222 > 0.079); normalised, each kept weight is 1
    m = RP3beta(alpha=1.0, beta=0.5, neighbours=1, normalize=True).fit(_dataset())
    expected_w = np.array([[0, 1, 0], [0, 0, 1], [0, 1, 0]], dtype=np.float32)
    np.testing.assert_allclose(m.weights.toarray() if m.weights is not None else None, expected_w)
    hist = sp.csr_matrix(np.array([[1, 0, 0], [0, 1, 1], [0, 0, 0]], dtype=np.float32))
    # history @ W: [row 0] = [0, 1, 0]; [row 1 + row 2] = [0, 1, 1]; empty history -> zeros
    np.testing.assert_allclose(m.score_history(hist), [[0, 1, 0], [0, 1, 1], [0, 0, 0]])


def test_popularity_penalty_changes_the_neighbour() -> None:
    # row 0 (item0), alpha 1: W[0, 1] = 5/12 / 4^beta (item1: 4 users), W[0, 2] = 1/6 / 3^beta
    #   beta 3: 5/768 = 0.006510 > 1/162 = 0.006173          -> item1 stays item0's neighbour
    #   beta 4: 5/3072 = 0.001628 < 1/486 = 0.002058         -> the less popular item2 takes its place
    W3 = rp3beta_weights(X, alpha=1.0, beta=3.0, neighbours=1, normalize=False).toarray()
    W4 = rp3beta_weights(X, alpha=1.0, beta=4.0, neighbours=1, normalize=False).toarray()
    assert np.flatnonzero(W3[0]).tolist() == [1]
    assert np.flatnonzero(W4[0]).tolist() == [2]
    assert W4[0, 2] == pytest.approx(1 / 6 / 81, rel=1e-5)


def test_item_without_interactions_gets_no_weight() -> None:
    Y = sp.hstack([X, sp.csr_matrix((4, 1), dtype=np.float32)]).tocsr()  # item3: nobody
    W = rp3beta_weights(Y, alpha=1.0, beta=0.5, neighbours=10, normalize=True).toarray()
    assert (W[3] == 0).all() and (W[:, 3] == 0).all()
    np.testing.assert_allclose(W[:3, :3], rp3beta_weights(X, 1.0, 0.5, 10, True).toarray(), rtol=1e-6)


def test_blocked_computation_matches_one_block(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(0)
    Y = sp.random(50, 23, density=0.2, format="csr", random_state=rng, dtype=np.float32)
    Y.data[:] = 1.0
    whole = rp3beta_weights(Y, alpha=0.8, beta=0.3, neighbours=5).toarray()
    monkeypatch.setattr(rp3beta, "_BLOCK_ENTRIES", 23 * 4)  # 4 source items per block
    blocked = rp3beta_weights(Y, alpha=0.8, beta=0.3, neighbours=5).toarray()
    np.testing.assert_allclose(blocked, whole, rtol=1e-6)
    assert ((whole > 0).sum(axis=1) <= 5).all()  # at most 5 neighbours per source item
    assert (np.diag(whole) == 0).all()
