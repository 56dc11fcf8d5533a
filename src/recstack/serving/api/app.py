"""The FastAPI application (`create_app`, also the uvicorn factory of ``recstack serve``).

Hooks for later work: ``extra_routers`` (and any ``router`` exported by `recstack.serving.web`,
issue 6) are included after the API routers; ``serving/web/static`` is mounted at ``/static`` when it
exists; ``app.state.batch_provider`` serves ``source=batch`` (issue 7).
"""

from __future__ import annotations

import importlib
import json
import logging
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import APIRouter, FastAPI

from recstack import __version__
from recstack.ops import metrics
from recstack.serving._experiments import OnlineRuntime
from recstack.serving._release import ServingRelease
from recstack.serving._state import ReleaseLoader, ServingState, StateHolder, default_loader
from recstack.serving._target import RunDir
from recstack.serving.api.errors import install_error_handlers
from recstack.serving.api.middleware import RequestContextMiddleware
from recstack.serving.api.openapi import DOCS_STATIC, install_docs, install_openapi
from recstack.serving.api.routers import admin, batch, events, experiments, items, recommend, users
from recstack.serving.pipeline import PipelineConfig
from recstack.serving.settings import ServingSettings, get_serving_settings

__all__ = ["create_app"]

log = logging.getLogger(__name__)

_WEB_DIR = Path(__file__).resolve().parent.parent / "web"


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {
            "ts": round(time.time(), 3),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out)


def configure_json_logging(level: int = logging.INFO) -> None:
    """Structured (one JSON object per line) logs for the server process."""
    handler = logging.StreamHandler()
    handler.setFormatter(_JsonFormatter())
    root = logging.getLogger("recstack")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False


def _web_router() -> APIRouter | None:
    try:
        mod = importlib.import_module("recstack.serving.web")
    except ImportError:
        return None
    router = getattr(mod, "router", None)
    return router if isinstance(router, APIRouter) else None


def create_app(
    settings: ServingSettings | None = None,
    *,
    release: ServingRelease | None = None,
    loader: ReleaseLoader | None = None,
    config: PipelineConfig | None = None,
    extra_routers: Sequence[APIRouter] = (),
) -> FastAPI:
    """Build the API. With ``release`` it serves that release at once; otherwise it loads
    ``settings.release`` / ``settings.channel`` at startup through ``loader`` (default:
    `recstack.release.load` on the settings' releases dir). ``/admin/reload`` uses the same loader.

    Which release is served is the service's target in ``settings.run_dir`` (`recstack.serving._target`;
    a private temporary run dir without one): the app loads it at startup and follows it."""
    settings = settings or get_serving_settings()
    if settings.events_auth and settings.api_key is None:
        from recstack.errors import ConfigError

        raise ConfigError("events_auth needs an api_key (serve --api-key KEY or RECSTACK_SERVE_API_KEY)")
    own_run_dir: Path | None = None
    if settings.run_dir is None:
        import tempfile

        own_run_dir = Path(tempfile.mkdtemp(prefix="recstack-run-"))
    run_dir = RunDir(settings.run_dir or own_run_dir)  # type: ignore[arg-type]
    holder = StateHolder(settings, loader or default_loader(settings), config, run_dir)
    if loader is not None:  # a custom loader serves releases the registry's channels do not name
        holder.follower = None

    def on_converged(state: ServingState | None, err: Exception | None) -> None:
        if state is not None:
            metrics.set_release(state.release_id)
            log.info("serving release %s (loaded in %.2fs)", state.release_id, state.load_seconds)
        metrics.RELOADS.labels(outcome="ok" if err is None else "error").inc()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if holder.current is None:
            import anyio.to_thread

            from recstack.errors import RecstackError

            try:
                state = await anyio.to_thread.run_sync(holder.start)
            except RecstackError as exc:  # one clear line, not a traceback (the supervisor stops)
                log.error("cannot serve: %s", exc.message)
                raise SystemExit(3) from None
            metrics.set_release(state.release_id)
            log.info("serving release %s (loaded in %.2fs)", state.release_id, state.load_seconds)
        if settings.threads is not None:  # after the load: the libraries' pools exist now
            from recstack.serving._threads import limit_rank_slots, limit_threads

            limit_threads(settings.threads)
            limit_rank_slots(settings.rank_slots or settings.threads)
        holder.start_watching(on_converged)
        holder.start_polling()
        online.refresh()  # a running experiment is live from the first request
        online.start()
        try:
            yield
        finally:
            holder.stop_watching()
            online.close()
            holder.close()
            if own_run_dir is not None:
                import shutil

                shutil.rmtree(own_run_dir, ignore_errors=True)

    app = FastAPI(
        title="recstack",
        version=__version__,
        description="Recommendations, items, users, events and operations of one recstack release.",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.holder = holder
    online = OnlineRuntime.from_settings(settings, holder)
    app.state.online = online
    app.state.batch_provider = None
    # issue 7: source=batch and GET /v1/pairs (`recstack serve --batch-sink`, else RECSTACK_BATCH_SINK)
    batch.install(app, batch.BatchSettings(sink=settings.batch_sink) if settings.batch_sink else None)
    if release is not None:
        from recstack.serving._state import build_state

        holder._swap(build_state(release, settings, config, prewarm=True, event_log=holder.event_log))
        metrics.set_release(release.id)
    install_error_handlers(app)
    for r in (recommend.router, items.router, users.router, events.router, admin.router, experiments.router):
        app.include_router(r)
    web = _web_router()
    for r in [*extra_routers, *([web] if web is not None else [])]:
        app.include_router(r)
    if web is not None:
        from recstack.serving.web import not_found_page

        app.state.not_found_page = not_found_page
    static = _WEB_DIR / "static"
    if static.is_dir():
        from starlette.staticfiles import StaticFiles

        app.mount("/static", StaticFiles(directory=static), name="static")
    install_docs(app)
    install_openapi(app)
    _docs_last(app)
    app.add_middleware(RequestContextMiddleware, max_body_bytes=settings.max_body_bytes)
    return app


def _docs_last(app: FastAPI) -> None:
    """Move the OpenAPI / docs routes behind the API: routes are matched in order, and each one
    tried costs every request tens of microseconds (none of their paths overlaps another route)."""
    docs = {app.openapi_url, "/docs", "/redoc", DOCS_STATIC, app.swagger_ui_oauth2_redirect_url} - {None}
    routes = app.router.routes
    front = [r for r in routes if getattr(r, "path", None) not in docs]
    app.router.routes[:] = front + [r for r in routes if getattr(r, "path", None) in docs]


#: seconds a thread may hold the GIL while another waits (CPython's default: 0.005). The request
#: threads rank in Python between numpy / ONNX calls; a shorter interval lets the event loop (which
#: answers /healthz and accepts connections) take the GIL back sooner
SWITCH_INTERVAL = 0.001


def app_from_env() -> FastAPI:
    """uvicorn factory (``recstack.serving.api.app:app_from_env``): settings from the environment."""
    import sys

    sys.setswitchinterval(SWITCH_INTERVAL)
    settings = ServingSettings()
    if settings.log_json:
        configure_json_logging()
    return create_app(settings)
