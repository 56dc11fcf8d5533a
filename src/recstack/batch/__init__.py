"""Batch precomputation: top k for every known user and for every pair of popular items, with the
online pipeline's code run as batched matrix work, into versioned SQLite / PostgreSQL tables that are
published atomically (see `recstack.batch.sinks` for the table layout), on local threads or Ray.

Serving reads the current tables through `BatchReader` (``GET /v1/users/{id}/recommendations?source=batch``
and ``GET /v1/pairs?a=&b=``).
"""

from recstack.batch.jobs import (
    Block,
    BlockResult,
    JobReport,
    JobSpec,
    compute_block,
    get_scorer,
    plan,
    register_release,
    run_job,
)
from recstack.batch.runners import LocalRunner, RayRunner, Runner, make_runner
from recstack.batch.sinks import (
    DEFAULT_SINK,
    BatchReader,
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
    "BatchReader",
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
