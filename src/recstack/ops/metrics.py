"""Prometheus metrics of the serving API.

Request counts and latency histograms per endpoint (route template) and per pipeline stage,
fallback counts, cold-start counts and the current release.

Several workers: when the environment variable ``PROMETHEUS_MULTIPROC_DIR`` names a writable
directory *before* the workers start (``recstack serve --workers N`` creates one), every worker
writes its samples there and ``/metrics`` aggregates all workers (prometheus_client's multiprocess
mode). Without it each worker reports its own counts (whichever worker answers the scrape).
"""

from __future__ import annotations

import contextlib
import os
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

__all__ = [
    "COLD_STARTS",
    "CONTENT_TYPE_LATEST",
    "FALLBACKS",
    "RANKER_MEMO",
    "RELEASE_INFO",
    "RELOADS",
    "REQUESTS",
    "REQUEST_LATENCY",
    "STAGE_LATENCY",
    "child",
    "multiprocess_enabled",
    "observe_stages",
    "render",
    "set_release",
]

#: seconds; dense around the 15 ms p99 target
LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.002,
    0.003,
    0.005,
    0.0075,
    0.01,
    0.015,
    0.02,
    0.03,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
)


def multiprocess_enabled() -> bool:
    d = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    return bool(d) and os.path.isdir(str(d))


REQUESTS = Counter(
    "recstack_http_requests_total",
    "HTTP requests by endpoint, method and status.",
    ["endpoint", "method", "status"],
)
REQUEST_LATENCY = Histogram(
    "recstack_http_request_duration_seconds",
    "HTTP request latency by endpoint (seconds).",
    ["endpoint"],
    buckets=LATENCY_BUCKETS,
)
STAGE_LATENCY = Histogram(
    "recstack_pipeline_stage_duration_seconds",
    "Recommendation pipeline latency by stage (seconds).",
    ["stage"],
    buckets=LATENCY_BUCKETS,
)
FALLBACKS = Counter("recstack_fallbacks_total", "Pipeline fallbacks by kind.", ["kind"])
COLD_STARTS = Counter("recstack_cold_start_total", "Recommendations for users unknown to the release.")
RANKER_MEMO = Counter(
    "recstack_ranker_memo_lookups_total",
    "Two-stage ranker memo lookups of known users by outcome: hit, grown (events since: partly "
    "rebuilt) or miss (built; many misses: raise ranker_memo_mb).",
    ["outcome"],
)
RELOADS = Counter("recstack_release_reloads_total", "Release reloads by outcome.", ["outcome"])
EVENTS_LOGGED = Counter(
    "recstack_events_logged_total", "Events appended to the event log, by outcome (ok / error).", ["outcome"]
)
EVENT_LOG_COMMITS = Counter(
    "recstack_event_log_commits_total", "Appends (transactions, one fsync each) to the event log."
)
EVENTS_REPLAYED = Counter(
    "recstack_events_replayed_total",
    "Logged events fed to the histories (replay after a load, then the tail of other workers' "
    "events; a worker's own events are skipped there by offset).",
)
RELEASE_INFO = Gauge(
    "recstack_release_info",
    "The release being served (value 1; labels say which).",
    ["release_id"],
    multiprocess_mode="liveall",
)

_current_release: str | None = None


def set_release(release_id: str) -> None:
    """Mark ``release_id`` as the served release (the previous one's series is removed)."""
    global _current_release
    if _current_release is not None and _current_release != release_id:
        with contextlib.suppress(KeyError):
            RELEASE_INFO.remove(_current_release)
    RELEASE_INFO.labels(release_id=release_id).set(1)
    _current_release = release_id


_children: dict[tuple[int, tuple[str, ...]], Any] = {}


def child(metric: Any, *labels: str) -> Any:
    """``metric.labels(*labels)``, memoised: ``labels()`` validates and locks on every call (a few
    microseconds each, several per request). Label values here come from bounded sets (route
    templates, status codes, stage and fallback names), so the memo stays small."""
    key = (id(metric), labels)
    c = _children.get(key)
    if c is None:
        c = _children[key] = metric.labels(*labels)
    return c


def observe_stages(timings: dict[str, float], fallbacks: list[str], cold_start: bool) -> None:
    """Record one pipeline run: ``timings`` stage -> seconds."""
    for stage, seconds in timings.items():
        child(STAGE_LATENCY, stage).observe(seconds)
    for kind in fallbacks:
        child(FALLBACKS, kind).inc()
    if cold_start:
        COLD_STARTS.inc()


def render() -> tuple[bytes, str]:
    """The exposition text of every metric (aggregated over workers in multiprocess mode)."""
    if multiprocess_enabled():
        from prometheus_client import multiprocess

        registry: Any = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry), CONTENT_TYPE_LATEST
    from prometheus_client import REGISTRY

    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
