"""Where the blocks of a batch job run: local threads, or Ray tasks (local or a cluster).

Both runners call the same `recstack.batch.tasks.compute_block(spec, block)` and yield `BlockResult`s
as they complete; the driver (`run_job`) writes them. Threads work because the heavy parts (sparse
and dense matrix products, argpartition, ONNX Runtime) release the GIL.
"""

from __future__ import annotations

import logging
import os
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any

from recstack.batch.tasks import Block, BlockResult, JobSpec, compute_block
from recstack.errors import InvalidArgumentError

__all__ = ["LocalRunner", "RayRunner", "Runner", "make_runner", "ray_init"]

log = logging.getLogger(__name__)


class Runner(ABC):
    name: str

    @abstractmethod
    def map(self, spec: JobSpec, blocks: Sequence[Block]) -> Iterator[BlockResult]:
        """Results of ``compute_block(spec, b)`` for every block, in completion order."""

    def close(self) -> None:  # noqa: B027 - optional
        """Release the runner's resources."""


class LocalRunner(Runner):
    """A thread pool of ``workers`` (default: all cores) with at most ``2 * workers`` blocks in
    flight, so that memory stays bounded while the driver writes."""

    name = "local"

    def __init__(self, workers: int | None = None) -> None:
        self.workers = max(1, workers or os.cpu_count() or 1)

    def map(self, spec: JobSpec, blocks: Sequence[Block]) -> Iterator[BlockResult]:
        if self.workers == 1:
            for b in blocks:
                yield compute_block(spec, b)
            return
        pending: set[Future[BlockResult]] = set()
        todo = iter(blocks)
        with ThreadPoolExecutor(self.workers, thread_name_prefix="recstack-batch") as pool:
            try:
                for b in todo:
                    pending.add(pool.submit(compute_block, spec, b))
                    if len(pending) >= 2 * self.workers:
                        break
                while pending:
                    done, pending = wait(pending, return_when=FIRST_COMPLETED)
                    for f in done:
                        nxt = next(todo, None)
                        if nxt is not None:
                            pending.add(pool.submit(compute_block, spec, nxt))
                        yield f.result()
            finally:
                for f in pending:
                    f.cancel()


def _ray_compute(spec: JobSpec, block: Block) -> tuple[Any, ...]:
    """The Ray task: arrays only (keys, items, scores) plus timing."""
    res = compute_block(spec, block)
    return res.keys, res.items, res.scores, res.seconds


def _start_local(num_cpus: int | None, attempts: int) -> None:
    """``ray.init`` of a local instance, retried when its node does not come up in Ray's fixed wait."""
    import ray

    for attempt in range(1, max(1, attempts) + 1):
        try:
            ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False)
            return
        except Exception as exc:  # Ray raises a bare Exception for this
            if "timed out during startup" not in str(exc) or attempt >= attempts:
                raise
            log.warning("local Ray did not start in time (attempt %d of %d); retrying", attempt, attempts)
            ray.shutdown()
            time.sleep(2.0 * attempt)


def ray_init(address: str | None = None, num_cpus: int | None = 2, start_attempts: int = 3) -> bool:
    """Connect this process to Ray once (the one Ray start-up of recstack: batch jobs and evaluation
    blocks). ``address``: a running cluster (``host:port``, ``auto``, ``ray://...``); None starts a
    local instance with ``num_cpus`` CPUs and no dashboard (retried, see `RayRunner`). Returns whether
    this call started or connected Ray (the caller then shuts it down); False when already connected."""
    import ray

    if ray.is_initialized():
        return False
    if address:
        ray.init(address=address, include_dashboard=False, log_to_driver=False)
    else:
        # a local head on a busy small machine can take longer than Ray's default 30 s to
        # bind its GCS port (seen on 2 cores under load); the user's own setting wins
        os.environ.setdefault("RAY_gcs_server_port_wait_time_s", "120")
        _start_local(num_cpus, start_attempts)
    return True


class RayRunner(Runner):
    """Blocks as Ray remote tasks returning numpy arrays; the driver writes them to the sink.

    ``address``: a running cluster (``ray://...`` or ``host:port``, ``auto``); None starts a local
    instance with ``num_cpus`` CPUs and no dashboard, shut down by `close`. Every worker process
    loads the release once (by id from ``releases_dir``, which must be reachable from every node).

    Starting a local instance on a small busy machine can exceed Ray's fixed 30 s wait for its raylet
    ("The current node timed out during startup"; seen on 2 loaded cores while the same start takes
    8 s alone): such a start is retried, after a clean shutdown, up to ``start_attempts`` times.
    """

    name = "ray"

    def __init__(
        self,
        address: str | None = None,
        num_cpus: int | None = 2,
        max_in_flight: int = 8,
        start_attempts: int = 3,
    ) -> None:
        import ray

        self.address = address
        self._started = ray_init(address, num_cpus, start_attempts)
        self._remote = ray.remote(num_cpus=1)(_ray_compute)
        self.max_in_flight = max_in_flight

    def map(self, spec: JobSpec, blocks: Sequence[Block]) -> Iterator[BlockResult]:
        import ray

        if spec.release.startswith("mem:"):
            raise InvalidArgumentError("the Ray runner needs a release on disk (an id or channel), not mem:")
        spec_ref = ray.put(spec)
        by_ref: dict[Any, Block] = {}
        todo = iter(blocks)
        for b in todo:
            by_ref[self._remote.remote(spec_ref, b)] = b
            if len(by_ref) >= self.max_in_flight:
                break
        while by_ref:
            done, _ = ray.wait(list(by_ref), num_returns=1)
            for ref in done:
                b = by_ref.pop(ref)
                nxt = next(todo, None)
                if nxt is not None:
                    by_ref[self._remote.remote(spec_ref, nxt)] = nxt
                keys, items, scores, secs = ray.get(ref)
                yield BlockResult(b, keys, items, scores, float(secs))

    def close(self) -> None:
        import ray

        if self._started and ray.is_initialized():
            ray.shutdown()
        self._started = False


def make_runner(name: str, address: str | None = None, workers: int | None = None) -> Runner:
    if name == "local":
        return LocalRunner(workers)
    if name == "ray":
        return RayRunner(address, num_cpus=workers or 2)
    raise InvalidArgumentError(f"--runner must be local or ray, got {name!r}")
