"""One intra-op thread per server process: ``recstack serve`` runs one worker per core, so BLAS /
OpenMP / PyTorch / faiss thread pools only add wake-ups and contention (on 2 busy cores a faiss
HNSW query took ~5 ms with its OpenMP pool and ~0.5 ms without it).

For the same reason a server process ranks a bounded number of requests at once (`rank_slot`,
``rank_slots``): the rank stage is CPU work over arrays of every item (62k floats per recall source
at ML-25M size), and dozens of request threads ranking at once on one core only thrash the caches
and the GIL; the others wait their turn, in order, without spending CPU."""

from __future__ import annotations

import contextlib
import sys
import threading
from collections.abc import Iterator

__all__ = ["THREAD_ENV", "limit_rank_slots", "limit_threads", "rank_slot"]

#: the process's rank slots (`limit_rank_slots`); None: unlimited (batch jobs, tests, notebooks)
_RANK_SLOTS: threading.BoundedSemaphore | None = None


def limit_rank_slots(n: int | None) -> None:
    """At most ``n`` requests of this process in their rank stage at once (None: no limit)."""
    global _RANK_SLOTS
    _RANK_SLOTS = threading.BoundedSemaphore(n) if n else None


@contextlib.contextmanager
def rank_slot() -> Iterator[None]:
    """Hold one of the process's rank slots (`limit_rank_slots`) while the block runs."""
    slots = _RANK_SLOTS
    if slots is None:
        yield
        return
    with slots:
        yield


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
