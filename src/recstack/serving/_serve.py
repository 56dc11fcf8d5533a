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
    """Resolve and verify the release to serve now (every file against its sha256 unless
    ``settings.verify`` is off), so that a wrong id or a tampered release fails with one clear line
    before any worker starts."""
    from recstack.release import loader
    from recstack.release.registry import Registry

    rid = Registry(settings.releases_path()).resolve(settings.target())
    loader.load(rid, settings.releases_path(), verify=settings.verify)
    return rid


def uvicorn_options(settings: ServingSettings, log_level: str = "warning") -> dict[str, Any]:
    """uvicorn.Config keywords of a worker: keep-alive and request timeouts, connection limits."""
    from recstack.serving._protocol import configure

    return {
        "factory": True,
        "access_log": False,
        "log_level": log_level,
        "loop": "auto",
        "http": configure(settings.header_timeout, settings.max_connections),
        "timeout_graceful_shutdown": 10,
        "timeout_keep_alive": settings.keep_alive_timeout,
        "limit_concurrency": settings.max_connections,
        "h11_max_incomplete_event_size": 16 * 1024,
    }


def run_server(
    settings: ServingSettings, *, log_level: str = "warning", release_id: str | None = None
) -> None:
    """Serve until interrupted. With ``workers > 1`` on Linux each worker listens on its own socket
    of the port (`recstack.serving._workers`); elsewhere uvicorn's workers share one. Prometheus runs
    in multiprocess mode (a temp ``PROMETHEUS_MULTIPROC_DIR`` unless one is set) so /metrics
    aggregates every worker. Each worker uses ``settings.threads`` intra-op threads (default 1: one
    worker per core).

    The service's target (`recstack.serving._target`) is written into the run directory (a temp one
    unless ``settings.run_dir``) before any worker starts: ``release_id``, else ``settings.target()``
    resolved now, so every worker, and any worker restarted later, serves the same release."""
    import uvicorn

    from recstack.serving._target import RunDir

    if settings.threads is None:
        settings = settings.model_copy(update={"threads": 1})
    own_run: Path | None = None
    if settings.run_dir is None:
        own_run = Path(tempfile.mkdtemp(prefix="recstack-serve-"))
        settings = settings.model_copy(update={"run_dir": own_run})
    assert settings.run_dir is not None
    if release_id is None:
        from recstack.release.registry import Registry

        release_id = Registry(settings.releases_path()).resolve(settings.target())
    RunDir(settings.run_dir).write_target(release_id, settings.target())
    os.environ.update(settings_env(settings))
    for var in THREAD_ENV:  # read when the worker loads numpy / torch / faiss
        os.environ.setdefault(var, str(settings.threads))
    tmp: Path | None = None
    if settings.workers > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        tmp = Path(tempfile.mkdtemp(prefix="recstack-prom-"))
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(tmp)
    options = uvicorn_options(settings, log_level)
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
        if own_run is not None:
            shutil.rmtree(own_run, ignore_errors=True)
