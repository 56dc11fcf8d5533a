"""`recstack.models.base.top_k`: best first, ties by the lower item index, also at the cut."""

from __future__ import annotations

import numpy as np
import pytest

from recstack.models.base import top_k


def _reference(scores: np.ndarray, k: int) -> np.ndarray:
    """Full sort by (-score, item index): the contract top_k states."""
    m = scores.shape[1]
    order = np.lexsort((np.broadcast_to(np.arange(m), scores.shape), -scores), axis=1)[:, :k]
    return np.where(np.isneginf(np.take_along_axis(scores, order, axis=1)), -1, order)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_ties_at_the_cut_go_to_the_lower_index_for_every_k(dtype: type) -> None:
    # recent popularity has long runs of equal scores: the first k items must not depend on k
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 4, size=(50, 2000)).astype(dtype)
    scores[rng.random(scores.shape) < 0.1] = -np.inf
    for k in (1, 5, 10, 20, 50, 100, 999):
        ids, sc = top_k(scores, k)
        np.testing.assert_array_equal(ids, _reference(scores, k))
        assert sc.dtype == np.float32
        j = min(k, 5)
        np.testing.assert_array_equal(ids[:, :j], top_k(scores, 5)[0][:, :j])


def test_pads_short_rows_and_marks_minus_inf() -> None:
    s = np.array([[2.0, -np.inf, 2.0]])
    ids, sc = top_k(s, 5)
    np.testing.assert_array_equal(ids, [[0, 2, -1, -1, -1]])
    assert np.isneginf(sc[0, 2:]).all()
