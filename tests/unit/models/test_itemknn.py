"""ItemKNN: shrunk cosine and top-N pruning worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest
import scipy.sparse as sp

from recstack.data.dataset import Dataset
from recstack.models.retrieval import itemknn
from recstack.models.retrieval.itemknn import ItemKNN, cosine_topn

# users x items (binary):    item0 item1 item2
#   u0                         1     1     0
#   u1                         0     1     1
#   u2                         1     1     1
#   u3                         0     1     1
X = sp.csr_matrix(np.array([[1, 1, 0], [0, 1, 1], [1, 1, 1], [0, 1, 1]], dtype=np.float32))
# |x0| = sqrt(2), |x1| = 2, |x2| = sqrt(3); dot01 = 2 (u0, u2), dot02 = 1 (u2), dot12 = 3 (u1, u2, u3)
# shrink 1: sim01 = 2 / (2 sqrt2 + 1) = 0.52241, sim02 = 1 / (sqrt6 + 1) = 0.28990,
#           sim12 = 3 / (2 sqrt3 + 1) = 0.67203
SIM01 = 2 / (2 * math.sqrt(2) + 1)
SIM02 = 1 / (math.sqrt(6) + 1)
SIM12 = 3 / (2 * math.sqrt(3) + 1)


def _dataset() -> Dataset:
    u, i = X.nonzero()
    return Dataset.from_frames("knn", pl.DataFrame({"user_id": u, "item_id": i}))


def test_shrunk_cosine_all_neighbours() -> None:
    S = cosine_topn(X, neighbours=10, shrink=1.0).toarray()
    expected = np.array([[0, SIM01, SIM02], [SIM01, 0, SIM12], [SIM02, SIM12, 0]])
    np.testing.assert_allclose(S, expected, rtol=1e-6)


def test_plain_cosine_without_shrink() -> None:
    S = cosine_topn(X, neighbours=10, shrink=0.0).toarray()
    # sim01 = 2 / (sqrt2 * 2) = 0.70711, sim12 = 3 / (2 sqrt3) = 0.86603
    assert S[0, 1] == pytest.approx(1 / math.sqrt(2), rel=1e-6)
    assert S[1, 2] == pytest.approx(math.sqrt(3) / 2, rel=1e-6)


def test_top1_neighbour_per_target_item() -> None:
    # item0's best neighbour is item1 (0.522 > 0.290); item1's is item2 (0.672 > 0.522); item2's is item1
    # S[j, i] = sim(j, i) for j the neighbour of target i
    S = cosine_topn(X, neighbours=1, shrink=1.0).toarray()
    expected = np.zeros((3, 3))
    expected[1, 0] = SIM01
    expected[2, 1] = SIM12
    expected[1, 2] = SIM12
    np.testing.assert_allclose(S, expected, rtol=1e-6)


def test_scores_are_history_times_similarity() -> None:
    m = ItemKNN(neighbours=1, shrink=1.0).fit(_dataset())
    hist = sp.csr_matrix(np.array([[0, 1, 0], [1, 0, 1], [1, 0, 0]], dtype=np.float32))
    # row 1 of S = [SIM01, 0, SIM12]; rows 0 + 2 = [0, SIM12, 0]; row 0 = nothing (item0 is nobody's
    # top neighbour)
    expected = np.array([[SIM01, 0, SIM12], [0, SIM12, 0], [0, 0, 0]])
    np.testing.assert_allclose(m.score_history(hist), expected, rtol=1e-6)


def test_similar_items_uses_own_neighbour_list() -> None:
    m = ItemKNN(neighbours=1, shrink=1.0).fit(_dataset())
    ids, scores = m.similar_items([0, 1, 2], 2)
    assert ids.tolist() == [[1, -1], [2, -1], [1, -1]]  # one neighbour each, then padding
    assert scores[0, 0] == pytest.approx(SIM01, rel=1e-6)
    assert np.isneginf(scores[:, 1]).all()


def test_blocked_computation_matches_one_block(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(0)
    Y = sp.random(50, 23, density=0.2, format="csr", random_state=rng, dtype=np.float32)
    Y.data[:] = 1.0
    whole = cosine_topn(Y, neighbours=5, shrink=2.0).toarray()
    monkeypatch.setattr(itemknn, "_BLOCK_ENTRIES", 23 * 4)  # 4 target items per block
    blocked = cosine_topn(Y, neighbours=5, shrink=2.0).toarray()
    np.testing.assert_allclose(blocked, whole, rtol=1e-6)
    assert ((whole > 0).sum(axis=0) <= 5).all()  # at most 5 neighbours per target item
    assert (np.diag(whole) == 0).all()
