"""Time-proximity co-occurrence (`TimeProximity`) and the two models over it, SequenceKNN and
TimeEASE, worked out by hand."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
import scipy.sparse as sp

from recstack.data.dataset import Dataset
from recstack.models.retrieval._proximity import TimeProximity
from recstack.models.retrieval.ease import EASE, TimeEASE, ease_weights
from recstack.models.retrieval.itemknn import SequenceKNN, sequence_topn

# user 0 rates items 0, 1, 2, 3 at times 10, 20, 30, 40; user 1 rates 3 (t 5), then 0 and 2 in the
# same second (t 7: ordered by item) -> user 1's order is 3, 0, 2
ROWS = [(0, 0, 10), (0, 1, 20), (0, 2, 30), (0, 3, 40), (1, 3, 5), (1, 0, 7), (1, 2, 7)]


def _dataset(rows: list[tuple[int, int, int]] = ROWS) -> Dataset:
    u, i, t = zip(*rows, strict=True)
    return Dataset.from_frames(
        "prox", pl.DataFrame({"user_id": list(u), "item_id": list(i), "timestamp": list(t)})
    )


def _by_hand(window: int) -> np.ndarray:
    """C for ROWS: user 0's sequence 0 1 2 3, user 1's 3 0 2; pairs d apart add 1 / d."""
    C = np.zeros((4, 4))
    for seq in ([0, 1, 2, 3], [3, 0, 2]):
        for a in range(len(seq)):
            for b in range(a + 1, min(a + window, len(seq) - 1) + 1):
                C[seq[a], seq[b]] += 1.0 / (b - a)
                C[seq[b], seq[a]] += 1.0 / (b - a)
    return C


@pytest.mark.parametrize("window", [1, 2, 5])
def test_counts_pairs_by_distance(window: int) -> None:
    prox = TimeProximity(_dataset(), window)
    assert prox.timed
    np.testing.assert_allclose(prox.block(0, 4), _by_hand(window))
    # window 1: neighbours only. user 0: 0-1, 1-2, 2-3; user 1: 3-0, 0-2
    if window == 1:
        assert prox.block(0, 4)[0].tolist() == [0.0, 1.0, 1.0, 1.0]


def test_blocks_stack_to_the_whole() -> None:
    prox = TimeProximity(_dataset(), 3)
    whole = prox.block(0, 4)
    np.testing.assert_allclose(np.vstack([prox.block(0, 1), prox.block(1, 3), prox.block(3, 4)]), whole)
    np.testing.assert_allclose(whole, whole.T)


def test_without_timestamps_every_pair_counts() -> None:
    untimed = [(u, i, 0) for u, i, _ in ROWS]
    prox = TimeProximity(_dataset(untimed), 1)
    assert not prox.timed
    X = _dataset(untimed).to_csr("binary").toarray()
    np.testing.assert_allclose(prox.block(0, 4), X.T @ X)  # plain co-occurrence, the diagonal too


def test_sequence_knn_damps_popularity_and_prunes() -> None:
    ds = _dataset()
    C = _by_hand(2)
    pop = np.array([2.0, 1.0, 2.0, 2.0])
    sim = C / np.sqrt(np.outer(pop, pop))
    np.fill_diagonal(sim, 0.0)
    np.testing.assert_allclose(sequence_topn(ds, 2, 0.5, 10).toarray(), sim, rtol=1e-6)
    # one neighbour per target item (column): the largest of each column
    top1 = sequence_topn(ds, 2, 0.5, 1).toarray()
    assert ((top1 > 0).sum(axis=0) == 1).all()
    np.testing.assert_allclose(top1.max(axis=0), sim.max(axis=0), rtol=1e-6)
    m = SequenceKNN(window=2, alpha=0.5, neighbours=10).fit(ds)
    hist = sp.csr_matrix(np.array([[0, 1, 0, 0]], dtype=np.float32))
    np.testing.assert_allclose(m.score_history(hist)[0], sim[1], rtol=1e-6)


def test_time_ease_adds_proximity_to_the_gram_matrix() -> None:
    ds = _dataset()
    X = ds.to_csr("binary").toarray().astype(np.float64)
    m = TimeEASE(l2=3.0, window=2, weight=0.5).fit(ds)
    counts = np.array([2.0, 1.0, 2.0, 2.0])  # interactions per item
    # window 2: dominance = 2 (1 + 1/2) = 3 per interaction on the diagonal
    P = np.linalg.inv(X.T @ X + 0.5 * (_by_hand(2) + 3.0 * np.diag(counts)) + 3.0 * np.eye(4))
    B = -P / np.diag(P)[None, :]
    np.fill_diagonal(B, 0.0)
    np.testing.assert_allclose(m.weights, B, atol=1e-6)
    # weight 0 is EASE
    np.testing.assert_allclose(
        TimeEASE(l2=3.0, weight=0.0).fit(ds).weights, EASE(l2=3.0).fit(ds).weights, atol=1e-6
    )


def test_time_ease_without_timestamps_is_ease_with_a_smaller_penalty() -> None:
    ds = _dataset([(u, i, 0) for u, i, _ in ROWS])
    np.testing.assert_allclose(
        TimeEASE(l2=3.0, weight=0.5).fit(ds).weights, EASE(l2=2.0).fit(ds).weights, atol=1e-6
    )


def test_time_ease_inverts_at_any_penalty() -> None:
    # C alone is not positive semi-definite (user 0's path 0-1-2-3 at window 1 has eigenvalues below
    # 0): with a small l2 and a large weight, X^T X + weight C + l2 I would not invert
    ds = _dataset()
    prox = TimeProximity(ds, 1)
    assert np.linalg.eigvalsh(prox.block(0, 4)).min() < -0.5
    shifted = prox.block(0, 4) + prox.dominance * np.diag(prox.counts)
    assert np.linalg.eigvalsh(shifted).min() >= -1e-9
    m = TimeEASE(l2=1e-3, window=1, weight=100.0).fit(ds)
    assert np.isfinite(m.weights).all()


def test_rows_in_any_order_equal_the_blocks() -> None:
    rng = np.random.default_rng(0)
    n = 300
    frame = pl.DataFrame(
        {
            "user_id": rng.integers(0, 20, n),
            "item_id": rng.integers(0, 30, n),
            "timestamp": rng.integers(0, 50, n),
        }
    ).unique(["user_id", "item_id"])
    untimed = frame.with_columns(timestamp=pl.lit(0))
    for ds in (Dataset.from_frames("p", frame), Dataset.from_frames("p", untimed)):
        prox = TimeProximity(ds, 3)
        full = prox.block(0, ds.n_items)
        items = np.array([7, 2, 19, 0], dtype=np.int64)
        np.testing.assert_array_equal(prox.rows(items), full[items])
        # time_ease's head-tail mode regresses on the same Gram matrix as the exact mode: the head
        # block is the exact inverse of the Gram's head block, a tail column the ridge solution
        m = TimeEASE(l2=5.0, window=3, exact_max_items=12, tail_neighbours=12).fit(ds)
        X = ds.to_csr("binary")
        G = m._gram(ds, X, np.float64)
        assert m.head is not None and m.head_weights is not None and m.tail_weights is not None
        h = m.head
        Ghh = G[np.ix_(h, h)].copy()
        np.testing.assert_allclose(m.head_weights, ease_weights(X, 5.0, gram=Ghh.copy()), atol=1e-5)
        tail = np.setdiff1d(np.arange(ds.n_items), h)
        want = np.linalg.solve(Ghh + 5.0 * np.eye(len(h)), G[np.ix_(h, tail)])
        np.testing.assert_allclose(m.tail_weights.toarray()[:, tail], want, atol=1e-5)
