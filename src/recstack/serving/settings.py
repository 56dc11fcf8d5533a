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

__all__ = ["ServingSettings", "get_serving_settings"]


class ServingSettings(BaseSettings):
    """What to serve and how. ``release`` (an id or unique prefix) wins over ``channel``."""

    model_config = SettingsConfigDict(env_prefix="RECSTACK_SERVE_", extra="ignore")

    release: str | None = None
    channel: str = "production"
    releases_dir: Path | None = Field(default=None, description="default: the Settings' releases dir")
    store: Literal["embedded", "redis"] = "embedded"
    redis_url: str = "redis://127.0.0.1:6379/0"
    index: Literal["faiss", "exact", "milvus"] | None = Field(
        default=None, description="ANN backend; default: the index stored in the release"
    )
    pipeline: Path | None = Field(default=None, description="pipeline TOML (PipelineConfig)")
    api_key: str | None = Field(default=None, description="X-API-Key of /admin/*; None disables them")
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
    log_json: bool = True
    event_log: str | None = Field(
        default=None,
        description="where accepted events are logged before 201 (recstack.events.open_log URL: "
        "sqlite:///path, redis://..., postgresql://...); None or 'off': no log. `recstack serve` "
        "defaults to events/events.db beside the releases dir (Redis Streams with --store redis)",
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
        "~1,200 users); an LRU smaller than the set of active users misses on every request of a "
        "cyclic workload",
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


@lru_cache(maxsize=1)
def get_serving_settings() -> ServingSettings:
    return ServingSettings()
