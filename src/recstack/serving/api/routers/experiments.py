"""Experiments and monitoring over HTTP.

- ``GET /v1/experiments``                    every experiment, the running one and whether it is live
- ``GET /v1/experiments/{name}``             one experiment's declaration
- ``GET /v1/experiments/{name}/report``      the report (JSON; ``?format=html``: the HTML page)
- ``POST /admin/experiments``                create (and start) an experiment (X-API-Key, 201)
- ``POST /admin/experiments/{name}/stop``    stop it (X-API-Key)
- ``GET /v1/monitoring/drift``               the drift window's PSI per feature

The report reads the event log (impressions and outcomes, `recstack.experiments.analyse`); it is
cached per experiment until the log grows.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from recstack.errors import ConfigError, InvalidArgumentError, UnavailableError
from recstack.experiments.config import ExperimentConfig, ExperimentStore
from recstack.serving.api._json import JSONBody, request_id
from recstack.serving.api.deps import AdminKey, current_state, holder
from recstack.serving.api.schemas import ErrorResponse

__all__ = ["router"]

router = APIRouter(tags=["experiments"])

_ERR: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorResponse, "description": "missing or wrong X-API-Key header"},
    403: {"model": ErrorResponse, "description": "admin endpoints are disabled (no API key set)"},
    404: {"model": ErrorResponse, "description": "no such experiment"},
    422: {"model": ErrorResponse, "description": "invalid experiment (shares, names, a second running one)"},
    503: {"model": ErrorResponse, "description": "no experiments directory or no event log"},
}

_cache: dict[tuple[str, str, int, str], dict[str, Any]] = {}


def _online(request: Request) -> Any:
    return request.app.state.online


def _store(request: Request) -> ExperimentStore:
    store = _online(request).store
    if store is None:
        raise UnavailableError("this server has no experiments directory (serve --releases-dir ...)")
    assert isinstance(store, ExperimentStore)
    return store


def _summary(cfg: ExperimentConfig) -> dict[str, Any]:
    return {
        "name": cfg.name,
        "status": cfg.status,
        "created_at": cfg.created_at,
        "stopped_at": cfg.stopped_at,
        "description": cfg.description,
        "arms": [a.dump_config() for a in cfg.arms],
        "holdout": cfg.holdout,
        "shares": cfg.shares(),
        "salt": cfg.salt_value,
        "window_s": cfg.window_s,
        "k": cfg.k,
    }


@router.get("/v1/experiments", summary="Every experiment; the running one and whether it is live here")
async def list_experiments(request: Request) -> Response:
    online = _online(request)
    store = online.store
    exps = store.list() if store is not None else []
    act = online.active
    return JSONBody(
        {
            "request_id": request_id(request),
            "experiments": [_summary(e) for e in reversed(exps)],
            "running": next((e.name for e in exps if e.status == "running"), None),
            "live": act.config.name if act is not None else None,
            "error": online.error,
            "event_log": holder(request).event_log is not None,
        }
    )


@router.get("/v1/experiments/{name}", responses=_ERR, summary="One experiment's declaration")
async def get_experiment(request: Request, name: str) -> Response:
    cfg = _store(request).get(name)
    return JSONBody({"request_id": request_id(request), **_summary(cfg)})


def _report(request: Request, cfg: ExperimentConfig) -> dict[str, Any]:
    from recstack.experiments.analysis import analyse

    ev_log = holder(request).event_log
    if ev_log is None:
        raise UnavailableError("this server keeps no event log: no impressions to report on")
    state = current_state(request)
    key = (cfg.name, f"{cfg.status}{cfg.created_at}", ev_log.last_offset(), state.release_id)
    hit = _cache.get(key)
    if hit is not None:
        return hit
    events = ev_log.to_frame()
    if cfg.created_at:
        import polars as pl

        start = datetime.fromisoformat(cfg.created_at).timestamp() - 1.0
        events = events.filter(pl.col("received") >= start)
    rep = analyse(events, cfg, catalog_size=state.pipeline.catalog.n_items)
    _cache.clear()
    _cache[key] = rep
    return rep


@router.get(
    "/v1/experiments/{name}/report",
    responses=_ERR,
    summary="Per-arm users, impressions, CTR, hit-rate@k, mean rating, coverage with CIs and tests",
)
async def experiment_report(request: Request, name: str, format: str = "json") -> Response:
    if format not in ("json", "html"):
        raise InvalidArgumentError(f"format must be json or html, got {format!r}")
    cfg = _store(request).get(name)
    import anyio.to_thread

    rep = await anyio.to_thread.run_sync(_report, request, cfg)
    if format == "html":
        from recstack.experiments.report import render_html

        return HTMLResponse(render_html(rep))
    from recstack.evaluation.report import to_jsonable
    from recstack.experiments.report import verdict

    return JSONBody({"request_id": request_id(request), **to_jsonable(rep), "verdict": verdict(rep)})


@router.post(
    "/admin/experiments",
    status_code=201,
    responses=_ERR,
    dependencies=[AdminKey],
    summary="Create and start an experiment (the body is the [experiment] table as JSON)",
)
async def create_experiment(request: Request) -> Response:
    try:
        body = await request.json()
    except ValueError as exc:
        raise InvalidArgumentError(f"the body must be a JSON object: {exc}") from None
    if not isinstance(body, dict):
        raise InvalidArgumentError("the body must be a JSON object (the [experiment] table)")
    for key in ("status", "created_at", "stopped_at"):
        if key in body:
            raise InvalidArgumentError(f"{key!r} is kept by the server; leave it out")
    try:
        cfg = ExperimentConfig.from_config(body)
    except ConfigError as exc:
        raise InvalidArgumentError(exc.message) from None
    if any(isinstance(a.pipeline, str) for a in cfg.arms):
        raise InvalidArgumentError("over HTTP an arm's pipeline is an inline table, not a file path")
    online = _online(request)
    stored = _store(request).create(cfg)
    import anyio.to_thread

    await anyio.to_thread.run_sync(online.refresh)
    return JSONBody(
        {
            "request_id": request_id(request),
            **_summary(stored),
            "live": online.active is not None,
            "error": online.error,
        },
        status_code=201,
    )


@router.post(
    "/admin/experiments/{name}/stop", responses=_ERR, dependencies=[AdminKey], summary="Stop an experiment"
)
async def stop_experiment(request: Request, name: str) -> Response:
    stored = _store(request).stop(name)
    import anyio.to_thread

    await anyio.to_thread.run_sync(_online(request).refresh)
    return JSONBody({"request_id": request_id(request), **_summary(stored)})


@router.get("/v1/monitoring/drift", tags=["ops"], summary="PSI of live events against the training data")
async def drift(request: Request) -> Response:
    return JSONBody({"request_id": request_id(request), **_online(request).drift_status()})
