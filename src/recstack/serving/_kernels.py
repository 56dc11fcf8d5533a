"""Per-release scoring kernels for one user's history, without scipy's per-call overhead.

`history_scorer` looks at a fitted retriever once (at load) and returns a function
``scores(items[m]) -> scores[n_items]`` (float32) equal to ``retriever.score_history`` of the binary
history row holding ``items``:

- a sparse item-item model (``similarity`` CSR [n_items, n_items] of item-kNN, or sparse ``weights``
  of RP3beta): the sum of the rows
  of the user's items, gathered from the CSR arrays and summed with one ``np.bincount`` (densified
  when the catalogue has at most `DENSE_MAX_ITEMS` items);
- a dense item-item model (``weights`` [n_items, n_items], EASE): the sum of the user's rows;
- a sequential model (SASRec: it has ``sequence_model() -> (ONNX bytes, max_len)``): its ONNX graph
  run by ONNX Runtime on the items in time order (the history comes most recent first), where order
  matters (the other kinds see a set);
- anything else: ``score_history`` on a one-row CSR (exact, slower); its per-history-item
  contributions (the explanation) come from the retriever's ``item_contributions(history, candidates)``
  when it has one (the content models: the text-embedding cosines).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp

from recstack.models.base import Retriever

__all__ = ["DENSE_MAX_ITEMS", "HistoryScorer", "SequenceScorer", "history_scorer", "item_item_kernel"]

#: sparse item-item models of catalogues up to this size are densified (3000^2 float32 = 36 MB)
DENSE_MAX_ITEMS = 3000

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float32]
ScoreFn = Callable[[IntArray], FloatArray]
ContribFn = Callable[[IntArray, IntArray], FloatArray]


class HistoryScorer:
    """``scorer(items[m]) -> scores[n_items]`` (the history's score of every item) and
    ``scorer.contributions(history[m], candidates[c]) -> [m, c]``: what each history item adds to each
    candidate's score (item-item models: the matrix entries; None for other models). The explanation
    of a recommendation ("because you liked ...") is the history item with the largest one."""

    __slots__ = ("_contrib", "_fn")

    def __init__(self, fn: ScoreFn, contrib: ContribFn | None = None) -> None:
        self._fn = fn
        self._contrib = contrib

    def __call__(self, items: IntArray) -> FloatArray:
        return self._fn(items)

    def contributions(self, history: IntArray, candidates: IntArray) -> FloatArray | None:
        if self._contrib is None:
            return None
        return self._contrib(history, candidates)


def _sparse_rows_sum(S: sp.csr_matrix) -> ScoreFn:
    indptr = S.indptr.astype(np.int64)
    indices = S.indices.astype(np.int64)
    data = S.data.astype(np.float64)
    n = int(S.shape[1])

    def scores(items: IntArray) -> FloatArray:
        starts = indptr[items]
        lens = indptr[items + 1] - starts
        total = int(lens.sum())
        if total == 0:
            return np.zeros(n, dtype=np.float32)
        pos = np.repeat(starts - np.cumsum(lens) + lens, lens) + np.arange(total)
        return np.bincount(indices[pos], weights=data[pos], minlength=n).astype(np.float32)

    return scores


def _dense_rows_sum(B: npt.NDArray[Any]) -> ScoreFn:
    W = np.ascontiguousarray(B, dtype=np.float32)

    def scores(items: IntArray) -> FloatArray:
        out: FloatArray = W[items].sum(axis=0, dtype=np.float32)
        return out

    return scores


def _generic(retriever: Retriever, n_items: int) -> ScoreFn:
    def scores(items: IntArray) -> FloatArray:
        m = len(items)
        row = sp.csr_matrix(
            (np.ones(m, dtype=np.float32), np.sort(items), np.array([0, m])), shape=(1, n_items)
        )
        return np.asarray(retriever.score_history(row)[0], dtype=np.float32)

    return scores


class SequenceScorer(HistoryScorer):
    """A sequential model's ONNX graph (input ``seq`` [B, max_len] int64: item index + 1, oldest
    first, left-padded with 0 -> ``scores`` [B, n_items]) run by ONNX Runtime. Called with one user's
    items (most recent first) it is a `HistoryScorer` (no per-item contributions: attention mixes the
    history); `batch` scores many users at once."""

    __slots__ = ("max_len", "session")

    def __init__(self, model: bytes, max_len: int) -> None:
        from recstack.serving._ranker import session

        self.session = session(model)
        self.max_len = max_len
        super().__init__(self._one)

    def _one(self, items: IntArray) -> FloatArray:
        tail = np.asarray(items, dtype=np.int64)[: self.max_len][::-1]  # the latest, oldest first
        seq = np.zeros((1, self.max_len), dtype=np.int64)
        seq[0, self.max_len - len(tail) :] = tail + 1
        out: FloatArray = self._run(seq)[0]
        return out

    def batch(self, recent: IntArray) -> FloatArray:
        """Scores [B, n_items] of ``recent`` [B, w] (item index + 1, most recent first, 0 = padding)."""
        R = np.asarray(recent, dtype=np.int64)[:, : self.max_len]
        seq = np.zeros((R.shape[0], self.max_len), dtype=np.int64)
        lens = np.count_nonzero(R, axis=1)
        rows = np.repeat(np.arange(R.shape[0]), lens)
        within = np.arange(int(lens.sum())) - np.repeat(np.cumsum(lens) - lens, lens)
        # the p-th most recent item goes to column max_len - 1 - p
        seq[rows, self.max_len - 1 - within] = R[rows, within]
        return self._run(seq)

    def _run(self, seq: IntArray) -> FloatArray:
        out: FloatArray = np.asarray(self.session.run(["scores"], {"seq": seq})[0], dtype=np.float32)
        return out


KernelKind = Literal["dense", "sparse", "generic"]


def item_item_kernel(retriever: Retriever, n_items: int) -> tuple[KernelKind, Any, bool]:
    """How ``retriever``'s history scores are computed fastest and exactly, chosen once per release
    (serving's `history_scorer` and the batch scorer make the same choice from here):
    ``("dense", W float32 [n, n])`` (EASE's dense ``weights``, or a sparse item-item matrix densified
    up to `DENSE_MAX_ITEMS` items), ``("sparse", S CSR [n, n])`` or ``("generic", None)``; and whether
    a zero score means "not related" (sparse item-item models, ``similarity`` as item-kNN's or sparse
    ``weights`` as RP3beta's: such items are not recalled)."""
    for attr in ("similarity", "weights"):
        m = getattr(retriever, attr, None)
        if isinstance(m, sp.spmatrix | sp.sparray) and m.shape == (n_items, n_items):
            if n_items <= DENSE_MAX_ITEMS:  # small catalogue: a dense copy sums rows faster
                return "dense", np.ascontiguousarray(sp.csr_matrix(m).toarray(), dtype=np.float32), True
            return "sparse", sp.csr_matrix(m), True
    w = getattr(retriever, "weights", None)
    if isinstance(w, np.ndarray) and w.shape == (n_items, n_items):
        return "dense", np.ascontiguousarray(w, dtype=np.float32), False
    return "generic", None, False


def history_scorer(retriever: Retriever, n_items: int) -> tuple[HistoryScorer, bool]:
    """The fastest exact scorer of ``retriever`` (`item_item_kernel`) and whether a zero score means
    "not related" (sparse models: such items are not recalled). ``items`` come most recent first."""
    sequence_model = getattr(retriever, "sequence_model", None)
    if callable(sequence_model):
        model, max_len = sequence_model()
        return SequenceScorer(model, int(max_len)), False
    kind, m, sparse = item_item_kernel(retriever, n_items)
    if kind == "dense":
        W = np.ascontiguousarray(m, dtype=np.float32)

        def dense_contrib(hist: IntArray, cands: IntArray) -> FloatArray:
            out: FloatArray = W[np.ix_(hist, cands)]
            return out

        return HistoryScorer(_dense_rows_sum(W), dense_contrib), sparse
    if kind == "sparse":
        S = sp.csr_matrix(m)

        def sparse_contrib(hist: IntArray, cands: IntArray) -> FloatArray:
            return np.asarray(S[hist][:, cands].toarray(), dtype=np.float32)

        return HistoryScorer(_sparse_rows_sum(S), sparse_contrib), sparse
    contrib = getattr(retriever, "item_contributions", None)
    return HistoryScorer(_generic(retriever, n_items), contrib if callable(contrib) else None), sparse
