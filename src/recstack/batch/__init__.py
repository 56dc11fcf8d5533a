"""Batch precomputation: top k for every known user and for every pair of popular items, with the
online pipeline's code run as batched matrix work, into versioned SQLite / PostgreSQL tables that are
published atomically, on local threads or Ray.

One direction, no cycle: `tasks` (what one block computes) <- `runners` (where blocks run) <- `jobs`
(the driver: plan, run, write, publish). The tables themselves (layout, writers, and the reader that
serving uses for ``?source=batch`` and ``/v1/pairs``) live with the stores, in `recstack.store.tables`.
"""

from recstack.batch.jobs import JobReport, run_job
from recstack.batch.runners import LocalRunner, RayRunner, Runner, make_runner
from recstack.batch.tasks import (
    Block,
    BlockResult,
    JobSpec,
    compute_block,
    get_scorer,
    plan,
    register_release,
)
from recstack.store.tables import (
    DEFAULT_SINK,
    PostgresSink,
    Sink,
    SQLiteSink,
    VersionInfo,
    make_version,
    open_sink,
    table_name,
)

__all__ = [
    "DEFAULT_SINK",
    "Block",
    "BlockResult",
    "JobReport",
    "JobSpec",
    "LocalRunner",
    "PostgresSink",
    "RayRunner",
    "Runner",
    "SQLiteSink",
    "Sink",
    "VersionInfo",
    "compute_block",
    "get_scorer",
    "make_runner",
    "make_version",
    "open_sink",
    "plan",
    "register_release",
    "run_job",
    "table_name",
]
