"""EASE (Steck, 2019): a closed-form item-item linear autoencoder.

``P = (X^T X + lambda I)^-1`` and ``B = I - P / diag(P)`` (column j divided by ``P[j, j]``), i.e.
``B[i, j] = -P[i, j] / P[j, j]`` off the diagonal and ``B[j, j] = 0``. A user's scores are
``history @ B``. ``B`` is a dense ``n_items x n_items`` matrix: memory and time grow with the square
and cube of the item count, so fitting refuses catalogues above ``max_items``.
"""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path
from typing import Any, ClassVar

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
from recstack.models.retrieval._arrays import load_array, row_blocks

__all__ = ["EASE", "EASEConfig", "TimeEASE", "TimeEASEConfig", "ease_weights"]

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
    P = np.triu(P) + np.triu(P, 1).T  # potri fills the upper triangle only
    B = P / (-np.diag(P))[None, :]
    B[np.diag_indices(n)] = 0.0
    return np.ascontiguousarray(B, dtype=np.float32)


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
        self.weights: FloatArray | None = None

    def _fit(self, dataset: Dataset) -> None:
        n = dataset.n_items
        if n > self.config.max_items:
            gb = 8 * n * n / 1e9 if n <= _FLOAT64_MAX_ITEMS else 4 * n * n / 1e9
            raise TooLargeError(
                f"EASE: the dataset has {n} items, above max_items={self.config.max_items}; EASE needs a "
                f"dense {n} x {n} matrix (about {gb:.1f} GB and O(n^3) time). Raise the limit with "
                f"EASE(max_items={n}) (config key 'max_items') if the machine has the memory, filter rare "
                "items first, or use itemknn / als instead."
            )
        dtype = np.float64 if n <= _FLOAT64_MAX_ITEMS else np.float32
        limits = (
            threadpool_limits(self.config.num_threads, "blas") if self.config.num_threads else nullcontext()
        )
        X = dataset.to_csr("binary")
        with limits:
            self.weights = ease_weights(X, self.config.l2, dtype=dtype, gram=self._gram(dataset, X, dtype))

    def _gram(self, dataset: Dataset, X: sp.csr_matrix, dtype: npt.DTypeLike) -> FloatArray:
        """The Gram matrix EASE inverts (before the penalty): ``X^T X`` of the binary ``X``."""
        return np.asarray((X.T @ X).toarray(), dtype=dtype)

    def _weights(self) -> FloatArray:
        self._require_fitted()
        if self.weights is None:
            raise NotFittedError("ease: call fit() or load() first")
        return self.weights

    def score_history(self, history: sp.csr_matrix) -> FloatArray:
        """Scores [n, n_items] float32: ``history @ B``."""
        B = self._weights()
        return np.asarray(sp.csr_matrix(history, dtype=np.float32) @ B, dtype=np.float32)

    def _save(self, directory: Path) -> None:
        np.save(directory / "weights.npy", self._weights(), allow_pickle=False)

    def _load(self, directory: Path) -> None:
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
