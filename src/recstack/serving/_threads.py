"""One intra-op thread per server process: ``recstack serve`` runs one worker per core, so BLAS /
OpenMP / PyTorch / faiss thread pools only add wake-ups and contention (on 2 busy cores a faiss
HNSW query took ~5 ms with its OpenMP pool and ~0.5 ms without it)."""

from __future__ import annotations

import sys

__all__ = ["THREAD_ENV", "limit_threads"]

#: environment variables read by the thread pools when their library loads
THREAD_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS")


def limit_threads(n: int) -> None:
    """Cap the thread pools of every library loaded in this process at ``n`` threads."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=n)
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(n)
    faiss = sys.modules.get("faiss")
    if faiss is not None:
        faiss.omp_set_num_threads(n)
