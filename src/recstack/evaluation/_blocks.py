"""Scoring the evaluated users block by block, on threads or on Ray, with bounded memory.

`evaluate_retriever` cuts its users into blocks (`EvalBlock`: sorted user indices, their training rows
to remove and their test pairs for the FactorizedTopK accuracy) and hands them to a `BlockScorer`:

- `ThreadScorer`: a pool of ``workers`` threads (the matrix products, ``argpartition`` and the
  models' BLAS / ONNX Runtime / torch kernels release the GIL), at most ``2 * workers`` blocks in flight;
- `RayScorer`: Ray tasks on a local instance or a cluster (`recstack.batch.runners.ray_init`); the
  fitted model is saved once (`Retriever.save`, no pickle) into ``scratch`` — a directory every node
  reaches — and each worker process loads it once. At most ``max_in_flight`` blocks are in flight.

Each block yields its top-K ids, its count of flat-score users (popularity fallback) and its accuracy
hits (`eval_block`); the driver keeps only the [n_users, K] ids, so memory is bounded by the blocks in
flight (``block x n_items`` float32 scores each) plus the ids.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import uuid
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp

from recstack.evaluation.metrics import factorized_topk_accuracy
from recstack.models.base import Retriever, top_k

__all__ = ["BlockScorer", "EvalBlock", "EvalBlockResult", "RayScorer", "ThreadScorer", "eval_block"]

log = logging.getLogger(__name__)

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float32]


@dataclass(frozen=True)
class EvalBlock:
    """One block of evaluated users: ``start`` (row of its first user in the result), ``users`` [b]
    sorted, ``exclude`` CSR [b, n_items] of items to remove (None: nothing removed), and the test
    pairs of these users for the accuracy: ``pair_rows`` [p] (row in the block), ``pair_items`` [p]."""

    start: int
    users: IntArray
    exclude: sp.csr_matrix | None
    pair_rows: IntArray
    pair_items: IntArray


@dataclass
class EvalBlockResult:
    """``ids`` [b, kmax] top items (-1 padded), ``n_fallback`` users with flat scores, ``hits`` per
    accuracy cut-off: float64 [p] (one per test pair)."""

    start: int
    ids: IntArray
    n_fallback: int
    hits: dict[int, npt.NDArray[np.float64]] = field(default_factory=dict)


def eval_block(
    model: Retriever, block: EvalBlock, pop_scores: FloatArray, kmax: int, acc_ks: tuple[int, ...]
) -> EvalBlockResult:
    """Score one block: the model's scores (users with flat scores get ``pop_scores``), the accuracy
    on all items, then the top ``kmax`` with ``block.exclude`` removed."""
    scores = np.array(model.score_users(block.users), dtype=np.float32, copy=True)
    flat = scores.max(axis=1) == scores.min(axis=1)  # no information (an empty history)
    if flat.any():
        scores[flat] = pop_scores
    hits: dict[int, npt.NDArray[np.float64]] = {}
    if acc_ks and block.pair_rows.size:
        hits = factorized_topk_accuracy(scores, block.pair_rows, block.pair_items, acc_ks)
    if block.exclude is not None:
        ex = block.exclude.tocoo()
        scores[ex.row, ex.col] = -np.inf
    return EvalBlockResult(block.start, top_k(scores, kmax)[0], int(flat.sum()), hits)


class BlockScorer(ABC):
    """Where `eval_block` runs."""

    name: str

    @abstractmethod
    def map(
        self,
        model: Retriever,
        blocks: Iterable[EvalBlock],
        pop_scores: FloatArray,
        kmax: int,
        acc_ks: tuple[int, ...],
    ) -> Iterator[EvalBlockResult]:
        """`eval_block` of every block, in completion order."""

    def close(self) -> None:  # noqa: B027 - optional
        """Release the scorer's resources."""


class ThreadScorer(BlockScorer):
    """``workers`` threads (0 = all cores); 1 runs the blocks inline."""

    name = "threads"

    def __init__(self, workers: int = 1) -> None:
        self.workers = max(1, workers or os.cpu_count() or 1)

    def map(
        self,
        model: Retriever,
        blocks: Iterable[EvalBlock],
        pop_scores: FloatArray,
        kmax: int,
        acc_ks: tuple[int, ...],
    ) -> Iterator[EvalBlockResult]:
        if self.workers == 1:
            for b in blocks:
                yield eval_block(model, b, pop_scores, kmax, acc_ks)
            return
        pending: set[Future[EvalBlockResult]] = set()
        todo = iter(blocks)
        with ThreadPoolExecutor(self.workers, thread_name_prefix="recstack-eval") as pool:
            try:
                for b in todo:
                    pending.add(pool.submit(eval_block, model, b, pop_scores, kmax, acc_ks))
                    if len(pending) >= 2 * self.workers:
                        break
                while pending:
                    done, pending = wait(pending, return_when=FIRST_COMPLETED)
                    for f in done:
                        nxt = next(todo, None)
                        if nxt is not None:
                            pending.add(pool.submit(eval_block, model, nxt, pop_scores, kmax, acc_ks))
                        yield f.result()
            finally:
                for f in pending:
                    f.cancel()


#: models loaded by this (Ray worker) process, by directory
_LOADED: dict[str, Retriever] = {}


def _ray_eval(
    model_dir: str,
    model_name: str,
    block: EvalBlock,
    pop_scores: FloatArray,
    kmax: int,
    acc_ks: tuple[int, ...],
) -> tuple[Any, ...]:
    """The Ray task: load the model once per worker process, score the block; arrays only back."""
    model = _LOADED.get(model_dir)
    if model is None:
        from recstack.models.registry import get_class

        _LOADED.clear()  # one model at a time per worker: bounded memory
        model = get_class(model_name).load(model_dir)
        _LOADED[model_dir] = model
    import ray

    res = eval_block(model, block, pop_scores, kmax, acc_ks)
    return res.start, res.ids, res.n_fallback, res.hits, ray.get_runtime_context().get_node_id()


class RayScorer(BlockScorer):
    """Blocks as Ray tasks (see the module docstring). ``address``: a running cluster (``host:port``,
    ``auto``, ``ray://...``), None = a local instance with ``num_cpus`` CPUs, shut down by `close`.
    ``scratch``: where the model is saved for the workers (default: a new temporary directory, which
    a multi-machine cluster must share, e.g. under the releases dir)."""

    name = "ray"

    def __init__(
        self,
        address: str | None = None,
        num_cpus: int | None = 2,
        scratch: str | Path | None = None,
        max_in_flight: int = 8,
    ) -> None:
        from recstack.batch.runners import ray_init

        self._started = ray_init(address, num_cpus)
        self.max_in_flight = max_in_flight
        self._own_scratch = scratch is None
        self.scratch = (
            Path(scratch) if scratch is not None else Path(tempfile.mkdtemp(prefix="recstack-eval-"))
        )
        self._remote: Any = None
        #: ids of the Ray nodes that ran at least one block
        self.nodes: set[str] = set()

    def map(
        self,
        model: Retriever,
        blocks: Iterable[EvalBlock],
        pop_scores: FloatArray,
        kmax: int,
        acc_ks: tuple[int, ...],
    ) -> Iterator[EvalBlockResult]:
        import ray

        if self._remote is None:
            self._remote = ray.remote(num_cpus=1)(_ray_eval)
        model_dir = self.scratch / f"{model.name}-{uuid.uuid4().hex[:8]}"
        model.save(model_dir)
        try:
            pop_ref = ray.put(pop_scores)
            args = (str(model_dir), model.name)
            in_flight: set[Any] = set()
            todo = iter(blocks)
            for b in todo:
                in_flight.add(self._remote.remote(*args, b, pop_ref, kmax, acc_ks))
                if len(in_flight) >= self.max_in_flight:
                    break
            while in_flight:
                done, _ = ray.wait(list(in_flight), num_returns=1)
                for ref in done:
                    in_flight.discard(ref)
                    nxt = next(todo, None)
                    if nxt is not None:
                        in_flight.add(self._remote.remote(*args, nxt, pop_ref, kmax, acc_ks))
                    start, ids, n_fallback, hits, node = ray.get(ref)
                    self.nodes.add(str(node))
                    yield EvalBlockResult(int(start), ids, int(n_fallback), dict(hits))
        finally:
            shutil.rmtree(model_dir, ignore_errors=True)

    def close(self) -> None:
        import ray

        if self._started and ray.is_initialized():
            ray.shutdown()
        self._started = False
        if self._own_scratch:
            shutil.rmtree(self.scratch, ignore_errors=True)
