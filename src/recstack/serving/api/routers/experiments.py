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
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body
from fastapi import Path as PathParam
from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from recstack.errors import ConfigError, ConflictError, InvalidArgumentError, UnavailableError
from recstack.experiments.config import HOLDOUT_ARM, NAME_PATTERN, ExperimentConfig, ExperimentStore
from recstack.serving.api._json import JSONBody, request_id
from recstack.serving.api._responses import errors
from recstack.serving.api.deps import AdminKey, current_state, holder

__all__ = ["router"]

router = APIRouter(tags=["experiments"])

_ERR = errors(
    404,
    422,
    503,
    e404="no such experiment",
    e422="a name or parameter out of its schema",
    e503="no experiments directory or no event log",
)
_ADMIN_ERR = errors(
    400,
    401,
    403,
    404,
    409,
    413,
    422,
    503,
    e404="no such experiment",
    e409="the name is taken, another experiment is running, or two arms share a name",
    e422="a field out of its schema, or an arm's pipeline that is not a valid PipelineConfig",
    e503="no experiments directory",
)

_cache: dict[tuple[str, str, int, str], dict[str, Any]] = {}

#: an experiment's name in a path: the pattern `ExperimentConfig` enforces, so that the schema and
#: the server agree on what is valid
Name = Annotated[str, PathParam(pattern=NAME_PATTERN, max_length=64, description="experiment name")]
#: an arm's name: the same pattern, ``holdout`` excepted (reserved for the users kept out)
_ARM_PATTERN = rf"^(?!{HOLDOUT_ARM}$){NAME_PATTERN[1:]}"


class ArmIn(BaseModel):
    """One arm of a new experiment (`recstack.experiments.ArmConfig`)."""

    # the name pattern has a look-ahead (not ``holdout``): pydantic-core's Rust engine has none
    model_config = ConfigDict(extra="forbid", regex_engine="python-re")

    name: str = Field(pattern=_ARM_PATTERN, max_length=64)
    share: float = Field(default=1.0, gt=0, le=1e6)
    release: str | None = Field(default=None, max_length=256, description="release id or channel")
    model: str | None = Field(default=None, max_length=128, description="ranker variant or 'recall'")
    pipeline: dict[str, Any] | None = Field(default=None, description="PipelineConfig keys (inline)")


class ExperimentIn(BaseModel):
    """The ``[experiment]`` table of a new experiment, as JSON (`recstack.experiments.ExperimentConfig`;
    its status and timestamps are kept by the server)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=NAME_PATTERN, max_length=64)
    arms: list[ArmIn] = Field(min_length=1, max_length=64)
    salt: str | None = Field(default=None, max_length=256)
    holdout: float = Field(default=0.0, ge=0.0, lt=1.0)
    window_s: float = Field(default=3600.0, gt=0, le=1e9)
    k: int = Field(default=10, ge=1, le=100)
    description: str = Field(default="", max_length=4096)


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
async def get_experiment(request: Request, name: Name) -> Response:
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
    responses={
        **_ERR,
        200: {
            "description": "the report: JSON, or with ``format=html`` the HTML page",
            "content": {"text/html": {"schema": {"type": "string"}}},
        },
    },
    summary="Per-arm users, impressions, CTR, hit-rate@k, mean rating, coverage with CIs and tests",
)
async def experiment_report(
    request: Request, name: Name, format: Literal["json", "html"] = "json"
) -> Response:
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
    responses=_ADMIN_ERR,
    dependencies=[AdminKey],
    summary="Create and start an experiment (the body is the [experiment] table as JSON)",
)
async def create_experiment(request: Request, body: Annotated[ExperimentIn, Body()]) -> Response:
    arms = [a.name for a in body.arms]
    if len(set(arms)) != len(arms):
        raise ConflictError(f"two arms share a name: {arms}")
    try:
        cfg = ExperimentConfig.from_config(body.model_dump(exclude_none=True))
    except ConfigError as exc:
        raise InvalidArgumentError(exc.message) from None
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
    "/admin/experiments/{name}/stop",
    responses=_ADMIN_ERR,
    dependencies=[AdminKey],
    summary="Stop an experiment",
)
async def stop_experiment(request: Request, name: Name) -> Response:
    stored = _store(request).stop(name)
    import anyio.to_thread

    await anyio.to_thread.run_sync(_online(request).refresh)
    return JSONBody({"request_id": request_id(request), **_summary(stored)})


@router.get("/v1/monitoring/drift", tags=["ops"], summary="PSI of live events against the training data")
async def drift(request: Request) -> Response:
    return JSONBody({"request_id": request_id(request), **_online(request).drift_status()})
