"""Settings of the serving API (env prefix ``RECSTACK_SERVE_``), e.g. ``RECSTACK_SERVE_API_KEY``.

``recstack serve`` turns its options into these variables so that every uvicorn worker (an app
factory per process) reads the same settings.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from recstack.config import get_settings
from recstack.store.base import EventLimits

__all__ = ["ServingSettings", "get_serving_settings"]


class ServingSettings(BaseSettings):
    """What to serve and how. ``release`` (an id or unique prefix) wins over ``channel``."""

    model_config = SettingsConfigDict(env_prefix="RECSTACK_SERVE_", extra="ignore")

    release: str | None = None
    channel: str = "production"
    releases_dir: Path | None = Field(default=None, description="default: the Settings' releases dir")
    store: Literal["embedded", "redis"] = "embedded"
    redis_url: str = "redis://127.0.0.1:6379/0"
    redis_prefix: str = Field(default="recstack", description="key prefix of the release in Redis")
    index: Literal["faiss", "exact", "milvus"] | None = Field(
        default=None, description="ANN backend; default: the index stored in the release"
    )
    pipeline: Path | None = Field(default=None, description="pipeline TOML (PipelineConfig)")
    api_key: str | None = Field(default=None, description="X-API-Key of /admin/*; None disables them")
    events_auth: bool = Field(
        default=False,
        description="POST /v1/events needs the X-API-Key header too (api_key must be set); off by "
        "default because the web UI records clicks from the browser",
    )
    run_dir: Path | None = Field(
        default=None,
        description="the server's run directory: the service's desired release (target.json) and "
        "each worker's status; recstack serve makes a temporary one",
    )
    batch_sink: str | None = Field(
        default=None,
        description="the batch tables (`recstack batch ... --sink`) that source=batch and /v1/pairs "
        "read: sqlite:///path or postgresql://...; default: RECSTACK_BATCH_SINK, else "
        "sqlite:///recstack_batch.db",
    )
    max_body_bytes: int = Field(
        default=256 * 1024, ge=1024, description="largest request body accepted (413 above it)"
    )
    blocking_threads: int = Field(
        default=64,
        ge=1,
        description="per process: worker threads for the blocking part of requests (ranking, store "
        "calls); more requests wait for a free thread, off the event loop",
    )
    header_timeout: float = Field(
        default=10.0,
        gt=0,
        description="seconds a client has to send a whole request (head and body) once it started, or "
        "once it connected; past it the connection is closed (no half-open connections kept)",
    )
    keep_alive_timeout: int = Field(default=5, ge=1, description="idle seconds before a keep-alive closes")
    max_connections: int = Field(
        default=1000,
        ge=1,
        description="per process: open connections; more are closed at once, and requests beyond it "
        "in flight are answered 503",
    )
    redis_timeout: float = Field(
        default=0.5, gt=0, description="seconds per Redis reply (and to connect) before a call fails"
    )
    redis_retries: int = Field(default=1, ge=0, description="retries of a failed Redis call (with backoff)")
    max_online_users: int = Field(
        default=100_000,
        ge=1,
        description="distinct users whose online events are held (per process for the embedded store, "
        "per release in Redis); past it the least recently active user's events go",
    )
    max_user_events: int = Field(default=1000, ge=1, description="online events kept per user")
    online_events_ttl_days: float = Field(
        default=30.0, gt=0, description="Redis: a user's online events expire this long after the last"
    )
    verify: bool = Field(default=True, description="check every release file's sha256 on load")
    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = Field(default=1, ge=1)
    threads: int | None = Field(
        default=None,
        ge=1,
        description="intra-op threads (BLAS, OpenMP, PyTorch, faiss) per server process once the "
        "release is loaded; None leaves the libraries' defaults (recstack serve uses 1)",
    )
    index_timeout: float = Field(
        default=0.25,
        gt=0,
        description="seconds an ANN query to an index server (Milvus) may take in a request; a query "
        "that fails or times out skips the ANN source for that request (fallbacks: ann_unavailable), "
        "and 3 in a row skip it for 1 s (a circuit breaker) instead of every request waiting",
    )
    rank_slots: int | None = Field(
        default=None,
        ge=1,
        description="requests of one server process in their rank stage at once (the others wait in "
        "order without spending CPU); None: recstack serve uses the intra-op threads' number (1)",
    )
    log_json: bool = True
    event_log: str | None = Field(
        default=None,
        description="where accepted events are logged before 201 (recstack.events.open_log URL: "
        "sqlite:///path, redis://..., postgresql://...); None or 'off': no log. `recstack serve` "
        "defaults to events/events.db beside the releases dir (Redis Streams with --store redis)",
    )
    follow_channel: bool = Field(
        default=True,
        description="a server of a channel (no --release) rolls out the channel's new release by itself "
        "when it moves (promote, retrain, rollback), on every worker (the service target)",
    )
    event_poll_s: float = Field(
        default=0.5,
        gt=0,
        description="seconds between two reads of the event log for the events other workers appended",
    )
    experiments_dir: Path | None = Field(
        default=None,
        description="where experiments are declared (recstack.experiments); default: experiments/ beside "
        "the releases dir",
    )
    experiments_poll_s: float = Field(
        default=1.0, gt=0, description="seconds between two looks at the experiments and the drift window"
    )
    impressions: Literal["all", "experiments", "off"] = Field(
        default="all",
        description="which answers are logged as impression events (needs an event log): every answer "
        "to a user id, only those of a running experiment, or none",
    )
    drift_window: int = Field(default=5000, ge=10, description="live events in the drift window")
    drift_min_events: int = Field(default=200, ge=1, description="events before drift is computed")
    drift_threshold: float = Field(default=0.25, gt=0, description="PSI above which a feature has drifted")
    ranker_memo_mb: float = Field(
        default=256.0,
        ge=0,
        description="memory (MB per process) of a two-stage ranker's memo of known users' ranking state "
        "(source scores, z-score stats, and the user's feature rows of every item; 0: off). About "
        "(4 * n_sources + 4) * n_items * 4 bytes per user (ML-100K, 7 sources: 215 KB, so 256 MB holds "
        "~1,200 users; at 62k items 6 MB, so 256 MB holds ~40). A user enters it at its second "
        "request (a doorkeeper); a first request builds only its candidates' rows. An LRU smaller than "
        "the set of active users misses on every request of a cyclic workload",
    )
    ranker_prewarm: bool = Field(
        default=True,
        description="fill the ranker memo in the background after a release loads, most active users "
        "first, so that first requests do not pay for scoring every recall source",
    )

    def releases_path(self) -> Path:
        return self.releases_dir or get_settings().releases_path()

    def target(self) -> str:
        return self.release or self.channel

    def event_limits(self) -> EventLimits:
        return EventLimits(
            max_users=self.max_online_users,
            max_events=self.max_user_events,
            ttl_seconds=max(1, int(self.online_events_ttl_days * 86_400)),
        )


@lru_cache(maxsize=1)
def get_serving_settings() -> ServingSettings:
    return ServingSettings()
