"""`recstack serve`: run the API under uvicorn (one process, or N workers through the app factory)."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from recstack.serving._threads import THREAD_ENV
from recstack.serving._workers import reuse_port_available, supervise
from recstack.serving.settings import ServingSettings

__all__ = ["run_server", "settings_env"]

FACTORY = "recstack.serving.api.app:app_from_env"


def settings_env(settings: ServingSettings) -> dict[str, str]:
    """``RECSTACK_SERVE_*`` variables that reproduce ``settings`` in a worker process."""
    env: dict[str, str] = {}
    for name, value in settings.model_dump().items():
        if value is None:
            continue
        env[f"RECSTACK_SERVE_{name.upper()}"] = str(value)
    env["RECSTACK_SERVE_RELEASES_DIR"] = str(settings.releases_path().resolve())
    return env


def check_release(settings: ServingSettings) -> str:
    """Resolve the release to serve now, so that a wrong id fails before any worker starts."""
    from recstack.release.registry import Registry

    return Registry(settings.releases_path()).resolve(settings.target())


def run_server(settings: ServingSettings, *, log_level: str = "warning") -> None:
    """Serve until interrupted. With ``workers > 1`` on Linux each worker listens on its own socket
    of the port (`recstack.serving._workers`); elsewhere uvicorn's workers share one. Prometheus runs
    in multiprocess mode (a temp ``PROMETHEUS_MULTIPROC_DIR`` unless one is set) so /metrics
    aggregates every worker. Each worker uses ``settings.threads`` intra-op threads (default 1: one
    worker per core)."""
    import uvicorn

    if settings.threads is None:
        settings = settings.model_copy(update={"threads": 1})
    os.environ.update(settings_env(settings))
    for var in THREAD_ENV:  # read when the worker loads numpy / torch / faiss
        os.environ.setdefault(var, str(settings.threads))
    tmp: Path | None = None
    if settings.workers > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        tmp = Path(tempfile.mkdtemp(prefix="recstack-prom-"))
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(tmp)
    options: dict[str, Any] = {
        "factory": True,
        "access_log": False,
        "log_level": log_level,
        "loop": "auto",
        "http": "auto",
        "timeout_graceful_shutdown": 10,
    }
    try:
        if settings.workers > 1 and reuse_port_available():
            # one socket per worker: the kernel spreads connections evenly (see `_workers`)
            code = supervise(FACTORY, settings.host, settings.port, settings.workers, options)
            if code:
                raise SystemExit(code)
        else:
            uvicorn.run(FACTORY, host=settings.host, port=settings.port, workers=settings.workers, **options)
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
