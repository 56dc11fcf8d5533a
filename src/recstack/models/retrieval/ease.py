"""EASE (Steck, 2019): a closed-form item-item linear autoencoder.

``P = (X^T X + lambda I)^-1`` and ``B = I - P / diag(P)`` (column j divided by ``P[j, j]``), i.e.
``B[i, j] = -P[i, j] / P[j, j]`` off the diagonal and ``B[j, j] = 0``. A user's scores are
``history @ B``. ``B`` is a dense ``n_items x n_items`` matrix: memory and time grow with the square
and cube of the item count, so ``mode="exact"`` refuses catalogues above ``max_items``.

``mode="auto"`` (the default) is exact up to ``exact_max_items`` items (ML-100K, ml-latest-small: the
same weights as ``"exact"``). Above it, the head-tail approximation (`head_tail_weights`):

- head: the ``exact_max_items`` most popular items (interactions per item) get exact EASE among
  themselves, a dense inverse of their ``H x H`` Gram block;
- tail: every other item i gets EASE's column regression restricted to its ``tail_neighbours``
  nearest head items K (largest Gram entries ``G[K, i]``): ``B[K, i] = (G[K, K] + lambda I)^-1 G[K, i]``,
  the item-kNN neighbourhood solved like EASE, so tail scores are on the head's scale;
- tail items are not regressors (their rows of ``B`` are 0): by construction each is in few histories.

Cost: memory ``8 H^2`` bytes for the head inverse (float32 above 10k items: ``4 H^2``) plus ``H x
block`` Gram rows and the sparse tail columns (``tail_neighbours`` per tail item); time ``H^3 / 3``
for the inverse, ``n_tail * tail_neighbours^3 / 3`` for the tail solves and one pass over the Gram
rows (``X^T X`` block by block). On a 62K-item catalogue with ``H = 10,000``: about 0.45 GB of weights
(0.4 GB head, 42 MB tail) and a 0.8 GB float64 head inverse during the fit, instead of 15.6 GB.

Quality against exact EASE with the head forced small (``benchmarks/bench_ease_scale.py``; NDCG@10
ratio head-tail / exact, head = 25% / 50% of the items): ML-100K ``stratified`` (943 users) ease
0.983 / 0.996, time_ease 0.975 / 0.999; ``temporal`` (warm users: ML-100K 90, ml-latest-small 27,
noisy) ML-100K ease 1.069 / 1.029, time_ease 1.052 / 1.037, ml-latest-small ease 1.001 / 0.999,
time_ease 0.999 / 1.001 (fit 7-24 s instead of 60-72 s).

Why this and not the ``sansa`` package (sparse approximate inverse): ``pip install sansa`` builds
scikit-sparse from source against SuiteSparse's CHOLMOD headers (a system package), so it does not
install from PyPI alone; the head-tail variant needs numpy / scipy only.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import nullcontext
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import numpy.typing as npt
import scipy.linalg
import scipy.sparse as sp
from pydantic import Field
from threadpoolctl import threadpool_limits

from recstack.config import ComponentConfig
from recstack.data.dataset import Dataset
from recstack.errors import NotFittedError, TooLargeError
from recstack.models.base import FloatArray, Retriever
from recstack.models.retrieval._arrays import BLOCK_ENTRIES, load_array, load_sparse, row_blocks

__all__ = ["EASE", "EASEConfig", "TimeEASE", "TimeEASEConfig", "ease_weights", "head_tail_weights"]

#: above this many items the Gram matrix is inverted in float32 (half the memory) instead of float64
_FLOAT64_MAX_ITEMS = 10_000


class EASEConfig(ComponentConfig):
    """``l2``: the L2 penalty lambda added to the Gram diagonal. ``max_items``: largest catalogue
    EASE agrees to fit (it needs about ``8 * n_items^2`` bytes). ``num_threads``: BLAS threads for
    the inversion, 0 = the BLAS default (all cores). It is 1 by default because OpenBLAS threads
    busy-wait and collapse on a shared machine (ML-100K: 1.3 s with 1 thread, 6-7 s with 2 under
    load); raise it on a dedicated machine and for large catalogues."""

    l2: float = Field(default=500.0, gt=0.0)
    max_items: int = Field(default=20_000, ge=1)
    num_threads: int = Field(default=1, ge=0)
    #: ``exact``: the dense inverse of the whole catalogue (refused above ``max_items``); ``auto``:
    #: exact up to ``exact_max_items`` items, the head-tail approximation above (module docstring)
    mode: Literal["exact", "auto"] = "auto"
    #: the catalogue size up to which ``auto`` is exact, and the head size above it
    exact_max_items: int = Field(default=10_000, ge=1)
    #: head items each tail item's regression uses
    tail_neighbours: int = Field(default=100, ge=1)


def ease_weights(
    X: sp.csr_matrix, l2: float, *, dtype: npt.DTypeLike = np.float64, gram: FloatArray | None = None
) -> FloatArray:
    """EASE weights ``B`` [n_items, n_items] float32 for the user x item matrix ``X``.

    Inverts ``G + l2 I`` with a Cholesky factorisation (LAPACK potrf + potri) in ``dtype``, where
    ``G`` is ``gram`` when given (symmetric, positive semi-definite; it is overwritten), else
    ``X^T X``.
    """
    G = np.asarray((X.T @ X).toarray(), dtype=dtype) if gram is None else np.asarray(gram, dtype=dtype)
    n = G.shape[0]
    G[np.diag_indices(n)] += l2
    potrf, potri = scipy.linalg.lapack.get_lapack_funcs(("potrf", "potri"), (G,))
    c, info = potrf(G, lower=False, overwrite_a=True, clean=False)
    if info != 0:
        raise np.linalg.LinAlgError(f"EASE: Cholesky failed (info={info}); increase l2")
    P, info = potri(c, lower=False, overwrite_c=True)
    if info != 0:  # pragma: no cover
        raise np.linalg.LinAlgError(f"EASE: inversion failed (info={info}); increase l2")
    # potri fills the upper triangle only: mirror it into the lower one in place, block by block
    # (no full-size temporaries: the peak stays one n x n matrix of ``dtype`` plus the float32 result)
    step = max(1, BLOCK_ENTRIES // max(n, 1))
    for a in range(0, n, step):
        b = min(a + step, n)
        P[a:b, :a] = P[:a, a:b].T
        D = P[a:b, a:b]
        P[a:b, a:b] = np.triu(D) + np.triu(D, 1).T
    P /= (-np.diag(P))[None, :]
    P[np.diag_indices(n)] = 0.0
    return np.ascontiguousarray(P, dtype=np.float32)


#: a function returning Gram rows: item indices [b] -> ``G[items, :]`` [b, n_items] float64
GramRows = Callable[[npt.NDArray[np.int64]], npt.NDArray[np.float64]]


def _chunks(n: int, size: int) -> Iterator[tuple[int, int]]:
    for start in range(0, n, max(1, size)):
        yield start, min(start + max(1, size), n)


def head_tail_weights(
    X: sp.csr_matrix,
    gram_rows: GramRows,
    popularity: npt.ArrayLike,
    head_size: int,
    l2: float,
    tail_neighbours: int,
    *,
    dtype: npt.DTypeLike = np.float64,
) -> tuple[npt.NDArray[np.int64], FloatArray, sp.csr_matrix]:
    """The head-tail approximation of EASE (module docstring) for the user x item matrix ``X``
    whose Gram rows ``gram_rows`` gives (before the penalty).

    Returns ``(head [H] int64 sorted item indices, B_head [H, H] float32, B_tail CSR [H, n_items]
    float32)``: a user's scores are ``h[:, head] @ B_head`` on the head columns and ``h[:, head] @
    B_tail`` on the others (``B_tail`` has no head columns). Memory: ``H^2`` of ``dtype`` plus Gram row
    blocks of `BLOCK_ENTRIES` entries.
    """
    n_items = X.shape[1]
    pop = np.asarray(popularity, dtype=np.float64).ravel()
    H = min(head_size, n_items)
    head = np.sort(np.argsort(-pop, kind="stable")[:H]).astype(np.int64)
    tail = np.setdiff1d(np.arange(n_items, dtype=np.int64), head)
    rows_per_block = max(1, BLOCK_ENTRIES // max(n_items, 1))
    G_hh = np.empty((H, H), dtype=dtype)
    for a, b in _chunks(H, rows_per_block):
        G_hh[a:b] = gram_rows(head[a:b])[:, head]
    k = min(tail_neighbours, H)
    nbr = np.empty((len(tail), k), dtype=np.int64)  # positions in head
    rhs = np.empty((len(tail), k), dtype=np.float64)
    for a, b in _chunks(len(tail), rows_per_block):
        g = gram_rows(tail[a:b])[:, head]  # [b, H]: G[i, K] = G[K, i] (symmetric)
        part = np.argpartition(-g, k - 1, axis=1)[:, :k] if k < H else np.tile(np.arange(H), (b - a, 1))
        nbr[a:b] = part
        rhs[a:b] = np.take_along_axis(g, part, axis=1)
    coef = np.empty_like(rhs)
    for a, b in _chunks(len(tail), BLOCK_ENTRIES // max(k * k, 1) // 8):
        K = nbr[a:b]
        A = np.asarray(G_hh[K[:, :, None], K[:, None, :]], dtype=np.float64)  # [c, k, k]
        A[:, np.arange(k), np.arange(k)] += l2
        coef[a:b] = np.linalg.solve(A, rhs[a:b, :, None])[..., 0]
    B_tail = sp.csr_matrix(
        (coef.ravel().astype(np.float32), (nbr.ravel(), np.repeat(tail, k))), shape=(H, n_items)
    )
    B_tail.sort_indices()
    B_head = ease_weights(X, l2, dtype=dtype, gram=G_hh)
    return head, B_head, B_tail


class EASE(Retriever):
    """Embarrassingly Shallow Autoencoder (see the module docstring)."""

    name: ClassVar[str] = "ease"
    Config: ClassVar[type[ComponentConfig]] = EASEConfig
    tuning_grid: ClassVar[tuple[dict[str, Any], ...]] = tuple(
        {"l2": v} for v in (100.0, 200.0, 300.0, 500.0, 800.0, 1200.0, 2000.0)
    )

    config: EASEConfig

    def __init__(self, config: ComponentConfig | None = None, **overrides: Any) -> None:
        super().__init__(config, **overrides)
        #: exact EASE's ``B`` [n_items, n_items] (None in head-tail mode)
        self.weights: FloatArray | None = None
        #: head-tail mode (`head_tail_weights`): head items [H], ``B_head`` [H, H], ``B_tail`` [H, n_items]
        self.head: npt.NDArray[np.int64] | None = None
        self.head_weights: FloatArray | None = None
        self.tail_weights: sp.csr_matrix | None = None

    def uses_head_tail(self, n_items: int) -> bool:
        """Whether a catalogue of ``n_items`` items gets the head-tail approximation."""
        return self.config.mode == "auto" and n_items > self.config.exact_max_items

    def _fit(self, dataset: Dataset) -> None:
        n = dataset.n_items
        self.weights = self.head = self.head_weights = self.tail_weights = None
        head_tail = self.uses_head_tail(n)
        if not head_tail and n > self.config.max_items:
            gb = 8 * n * n / 1e9 if n <= _FLOAT64_MAX_ITEMS else 4 * n * n / 1e9
            raise TooLargeError(
                f"EASE: the dataset has {n} items, above max_items={self.config.max_items}; EASE needs a "
                f"dense {n} x {n} matrix (about {gb:.1f} GB and O(n^3) time). Raise the limit with "
                f"EASE(max_items={n}) (config key 'max_items') if the machine has the memory, use "
                "mode='auto' (exact EASE on the head of the catalogue, a neighbourhood regression for the "
                "tail), filter rare items first, or use itemknn / als instead."
            )
        size = min(n, self.config.exact_max_items) if head_tail else n
        dtype = np.float64 if size <= _FLOAT64_MAX_ITEMS else np.float32
        limits = (
            threadpool_limits(self.config.num_threads, "blas") if self.config.num_threads else nullcontext()
        )
        X = dataset.to_csr("binary")
        with limits:
            if head_tail:
                pop = np.diff(X.tocsc().indptr)
                self.head, self.head_weights, self.tail_weights = head_tail_weights(
                    X,
                    self._gram_rows(dataset, X),
                    pop,
                    self.config.exact_max_items,
                    self.config.l2,
                    self.config.tail_neighbours,
                    dtype=dtype,
                )
            else:
                self.weights = ease_weights(
                    X, self.config.l2, dtype=dtype, gram=self._gram(dataset, X, dtype)
                )

    def _gram(self, dataset: Dataset, X: sp.csr_matrix, dtype: npt.DTypeLike) -> FloatArray:
        """The Gram matrix EASE inverts (before the penalty): ``X^T X`` of the binary ``X``."""
        return np.asarray((X.T @ X).toarray(), dtype=dtype)

    def _gram_rows(self, dataset: Dataset, X: sp.csr_matrix) -> GramRows:
        """Rows of `_gram` without building it: items [b] -> [b, n_items] float64."""
        Xc = X.tocsc()

        def rows(items: npt.NDArray[np.int64]) -> npt.NDArray[np.float64]:
            return np.asarray((Xc[:, items].T @ X).toarray(), dtype=np.float64)

        return rows

    def _weights(self) -> FloatArray:
        self._check_fitted()
        if self.weights is None:
            raise NotFittedError("ease: call fit() or load() first")
        return self.weights

    def score_history(self, history: sp.csr_matrix) -> FloatArray:
        """Scores [n, n_items] float32: ``history @ B`` (head-tail mode: `head_tail_weights`)."""
        self._check_fitted()
        h = sp.csr_matrix(history, dtype=np.float32)
        if self.head is not None and self.head_weights is not None and self.tail_weights is not None:
            h_head = h[:, self.head]
            out = np.asarray((h_head @ self.tail_weights).toarray(), dtype=np.float32)
            out[:, self.head] = np.asarray(h_head @ self.head_weights, dtype=np.float32)
            return out
        return np.asarray(h @ self._weights(), dtype=np.float32)

    def _save(self, directory: Path) -> None:
        if self.head is not None and self.head_weights is not None and self.tail_weights is not None:
            np.save(directory / "head.npy", self.head, allow_pickle=False)
            np.save(directory / "head_weights.npy", self.head_weights, allow_pickle=False)
            sp.save_npz(directory / "tail_weights.npz", self.tail_weights, compressed=False)
            return
        np.save(directory / "weights.npy", self._weights(), allow_pickle=False)

    def _load(self, directory: Path) -> None:
        if (directory / "head.npy").exists():
            self.head = np.asarray(load_array(directory / "head.npy", (None,)), dtype=np.int64)
            h = len(self.head)
            self.head_weights = load_array(directory / "head_weights.npy", (h, h))
            self.tail_weights = load_sparse(directory / "tail_weights.npz", (h, self.n_items))
            return
        self.weights = load_array(directory / "weights.npy", (self.n_items, self.n_items))


class TimeEASEConfig(EASEConfig):
    """EASE over ``X^T X + weight * (C + dominance * diag(counts))``: C is the time-proximity
    co-occurrence of `recstack.models.retrieval._proximity` (items rated within ``window`` positions
    of each other in a user's history ordered by time, weight 1 / distance), and the diagonal term
    (`TimeProximity.dominance` per interaction of the item) makes the added matrix positive
    semi-definite, so any ``l2 > 0`` inverts. Stratified validation NDCG@10 (ML-100K), against plain
    EASE's 0.2558 (l2 500, chosen on the same split): this point (window 10, l2 200, weight 1.5)
    0.2664; l2 100 / 300 0.2656 / 0.2650; weight 1 / 2 0.2648 / 0.2654; window 5 / 20 0.2643 /
    0.2643; without the diagonal term (not positive definite at small l2) at best 0.2644."""

    l2: float = Field(default=200.0, gt=0.0)
    window: int = Field(default=10, ge=1)
    weight: float = Field(default=1.5, ge=0.0)


class TimeEASE(EASE):
    """EASE whose item-item regression also sees which items users rate close together in time
    (`TimeEASEConfig`). Users rate in sessions: on randomly split data (``stratified``) the items a
    user rated right before and after a held-out one predict it better than co-occurrence at any
    time. Without timestamps it is EASE with penalty ``l2 / (1 + weight)``."""

    name: ClassVar[str] = "time_ease"
    Config: ClassVar[type[ComponentConfig]] = TimeEASEConfig
    tuning_grid: ClassVar[tuple[dict[str, Any], ...]] = tuple(
        {"l2": v, "weight": w, "window": n}
        for v in (100.0, 200.0, 400.0)
        for w in (1.0, 1.5, 2.0)
        for n in (5, 10, 20)
    )

    config: TimeEASEConfig

    def _gram(self, dataset: Dataset, X: sp.csr_matrix, dtype: npt.DTypeLike) -> FloatArray:
        from recstack.models.retrieval._proximity import TimeProximity

        G = super()._gram(dataset, X, dtype)
        prox = TimeProximity(dataset, self.config.window)
        w = self.config.weight
        for start, stop in row_blocks(dataset.n_items):
            G[start:stop] += w * prox.block(start, stop)
        G[np.diag_indices(dataset.n_items)] += w * prox.dominance * prox.counts
        return G

    def _gram_rows(self, dataset: Dataset, X: sp.csr_matrix) -> GramRows:
        from recstack.models.retrieval._proximity import TimeProximity

        base = super()._gram_rows(dataset, X)
        prox = TimeProximity(dataset, self.config.window)
        w = self.config.weight

        def rows(items: npt.NDArray[np.int64]) -> npt.NDArray[np.float64]:
            G = base(items)
            G += w * prox.rows(items)
            G[np.arange(len(items)), items] += w * prox.dominance * prox.counts[items]
            return G

        return rows
