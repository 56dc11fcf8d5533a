"""`recstack.serving._threads.rank_slot`: a server process ranks at most ``rank_slots`` requests at
once (the others wait in order); without a limit (batch jobs, tests) it does not wait. The pipeline's
rank stage holds a slot while the ranker scores."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import numpy as np
import pytest

from recstack.serving import _threads
from recstack.serving._release import MemoryRelease
from recstack.serving.pipeline import Pipeline, RecRequest


@pytest.fixture
def slots() -> Iterator[None]:
    yield
    _threads.limit_rank_slots(None)


def _peak(n_threads: int) -> int:
    """The most threads inside `rank_slot` at once when ``n_threads`` enter it together."""
    inside, peak = 0, 0
    lock = threading.Lock()
    start = threading.Barrier(n_threads)

    def work() -> None:
        nonlocal inside, peak
        start.wait()
        with _threads.rank_slot():
            with lock:
                inside += 1
                peak = max(peak, inside)
            time.sleep(0.02)
            with lock:
                inside -= 1

    threads = [threading.Thread(target=work) for _ in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return peak


def test_rank_slots_bound_the_requests_ranking_at_once(slots: None) -> None:
    assert _peak(6) > 2  # no limit: all of them
    _threads.limit_rank_slots(2)
    assert _peak(6) == 2
    _threads.limit_rank_slots(1)
    assert _peak(4) == 1
    _threads.limit_rank_slots(None)
    assert _peak(4) > 1


def test_the_rank_stage_holds_a_slot(full_release: MemoryRelease, slots: None) -> None:
    p = Pipeline(full_release)
    held: list[bool] = []
    ranker = p.rankers["pos"]
    score = ranker.score

    def spy(ctx, items):  # type: ignore[no-untyped-def]
        slots_ = _threads._RANK_SLOTS
        held.append(slots_ is not None and not slots_.acquire(blocking=False))
        return score(ctx, items)

    ranker.score = spy  # type: ignore[method-assign]
    _threads.limit_rank_slots(1)
    res = p.recommend(RecRequest(user_id=1, k=3, model="pos"))
    assert held == [True] and len(res.items) == 3 and np.isfinite(res.scores).all()
