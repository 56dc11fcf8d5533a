"""Time-proximity co-occurrence of items: how often two items were rated close together in time.

Each user's interactions are ordered by (timestamp, item). Two of them ``d`` positions apart
(``1 <= d <= window``) add ``1 / d`` to ``C[i, j]`` and to ``C[j, i]``. Without timestamps (all equal)
there is no order, and every pair of a user's items counts 1: plain co-occurrence ``X^T X``.

On randomly split data what a user rated shortly before or after an item says more than what anyone
rated at any time: MovieLens users rate in sessions, through pages of the same kind of films.
`recstack.models.retrieval.itemknn.SequenceKNN` ranks by C alone; `recstack.models.retrieval.ease.TimeEASE`
adds it to EASE's Gram matrix.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from recstack.data.dataset import Dataset

__all__ = ["TimeProximity"]


class TimeProximity:
    """C (see the module docstring) of a dataset, row block by row block (`block`), so that memory
    stays bounded by the block for any catalogue."""

    def __init__(self, dataset: Dataset, window: int) -> None:
        inter = dataset.interactions.select("user", "item", "timestamp").sort(["user", "timestamp", "item"])
        self.n_items = dataset.n_items
        self.window = window
        self.user = inter["user"].to_numpy().astype(np.int64)
        self.item = inter["item"].to_numpy().astype(np.int64)
        stamp = inter["timestamp"].to_numpy()
        #: False when every timestamp is equal: C is then plain co-occurrence
        self.timed = bool(len(stamp) and stamp.min() != stamp.max())
        #: interaction positions grouped by item (item 0's first); item i's are by_item[ptr[i]:ptr[i + 1]]
        self.by_item = np.argsort(self.item, kind="stable")
        self.ptr = np.searchsorted(self.item[self.by_item], np.arange(self.n_items + 1))
        #: interactions per item
        self.counts = np.diff(self.ptr).astype(np.float64)
        #: the most one interaction adds to its item's row of C (2 (1 + 1/2 + ... + 1/window)): with
        #: this much per interaction on the diagonal, ``C + dominance * diag(counts)`` is a sum over
        #: users of ``A^T K A`` with K diagonally dominant, so positive semi-definite (C alone is not)
        self.dominance = 2.0 * sum(1.0 / d for d in range(1, window + 1)) if self.timed else 0.0

    def block(self, start: int, stop: int) -> npt.NDArray[np.float64]:
        """Rows ``start .. stop - 1`` of C: [stop - start, n_items] float64."""
        return self.rows(np.arange(start, stop, dtype=np.int64))

    def rows(self, items: npt.NDArray[np.int64]) -> npt.NDArray[np.float64]:
        """Rows ``items`` (distinct item indices, any order) of C: [len(items), n_items] float64."""
        items = np.asarray(items, dtype=np.int64)
        b, m = len(items), self.n_items
        row_of = np.full(m, -1, dtype=np.int64)
        row_of[items] = np.arange(b)
        starts = self.ptr[items]
        lens = self.ptr[items + 1] - starts
        total = int(lens.sum())
        pos = self.by_item[np.repeat(starts - np.cumsum(lens) + lens, lens) + np.arange(total)]
        n = len(self.item)
        keys: list[npt.NDArray[np.int64]] = []
        weights: list[npt.NDArray[np.float64]] = []
        for d in range(1, self.window + 1) if self.timed else ():
            for nb in (pos + d, pos - d):
                ok = (nb >= 0) & (nb < n)
                p, q = pos[ok], nb[ok]
                same = self.user[p] == self.user[q]
                p, q = p[same], q[same]
                keys.append(row_of[self.item[p]] * m + self.item[q])
                weights.append(np.full(len(p), 1.0 / d))
        if not self.timed:
            # every pair of a user's items: the users of each row item, then their items
            rws, cols = _pairs_by_user(self.user, self.item, pos)
            keys.append(row_of[rws] * m + cols)
            weights.append(np.ones(len(rws)))
        if not keys:
            return np.zeros((b, m))
        flat = np.bincount(np.concatenate(keys), np.concatenate(weights), minlength=b * m)
        return np.asarray(flat, dtype=np.float64).reshape(b, m)


def _pairs_by_user(
    user: npt.NDArray[np.int64], item: npt.NDArray[np.int64], pos: npt.NDArray[np.int64]
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """(item[p], item[q]) for every p in ``pos`` and every q of the same user (``user`` sorted)."""
    starts = np.searchsorted(user, user[pos], side="left")
    stops = np.searchsorted(user, user[pos], side="right")
    lens = stops - starts
    rows = np.repeat(item[pos], lens)
    offsets = np.arange(lens.sum()) - np.repeat(np.cumsum(lens) - lens, lens)
    cols = item[np.repeat(starts, lens) + offsets]
    return rows, cols
