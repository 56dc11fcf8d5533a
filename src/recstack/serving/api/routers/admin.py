"""Operations: ``GET /v1/release``, ``/healthz``, ``/readyz``, ``/metrics`` and ``POST /admin/reload``
(X-API-Key): loads a release in the background and swaps it in atomically."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Query
from starlette.requests import Request
from starlette.responses import Response

from recstack.errors import RecstackError
from recstack.ops import metrics
from recstack.serving._state import ServingState
from recstack.serving.api._json import JSONBody, request_id
from recstack.serving.api.deps import AdminKey, current_state, holder
from recstack.serving.api.schemas import ErrorResponse, ReloadRequest

__all__ = ["release_info", "router"]

router = APIRouter()


class ConflictError(RecstackError):
    http_status = 409
    grpc_code = "ABORTED"
    code = "reload_in_progress"


def release_info(state: ServingState) -> dict[str, Any]:
    rel = state.release
    p = state.pipeline
    manifest = getattr(rel, "manifest", None)
    created = getattr(manifest, "created_at", None)
    if created is None and isinstance(manifest, dict):
        created = manifest.get("created_at")
    return {
        "release_id": rel.id,
        "created_at": str(created) if created is not None else None,
        "loaded_at": state.loaded_at,
        "load_seconds": round(state.load_seconds, 3),
        "retrievers": list(rel.retriever_names),
        "models": p.models,
        "default_model": p.default_model,
        "unavailable_models": p.unavailable_rankers,
        "sources": [s.name for s in p.active_sources],
        "k_default": p.config.k_default,
        "k_max": p.config.k_max,
        "genres": p.catalog.genre_names,
        "n_users": p.catalog.n_users,
        "n_items": p.catalog.n_items,
        "store": state.store,
        "index": state.index_backend,
        "metrics": dict(getattr(rel, "metrics", {}) or {}),
    }


@router.get("/v1/release", tags=["ops"], summary="The release being served")
async def get_release(request: Request) -> Response:
    state = current_state(request)
    return JSONBody(
        {"request_id": request_id(request), **release_info(state), "model": state.pipeline.default_model}
    )


@router.get("/healthz", tags=["ops"], summary="Liveness (the process answers)")
async def healthz() -> Response:
    return JSONBody({"status": "ok"})


@router.get("/readyz", tags=["ops"], summary="Readiness (a release is loaded)")
async def readyz(request: Request) -> Response:
    h = holder(request)
    state = h.current
    if state is None:
        return JSONBody(
            {
                "error": {"code": "not_ready", "message": "no release loaded yet"},
                "request_id": request_id(request),
            },
            status_code=503,
        )
    return JSONBody({"status": "ready", "release_id": state.release_id, "reloading": h.loading})


@router.get("/metrics", tags=["ops"], summary="Prometheus metrics")
async def prometheus_metrics() -> Response:
    body, ctype = metrics.render()
    return Response(body, media_type=ctype)


@router.post(
    "/admin/reload",
    tags=["admin"],
    dependencies=[AdminKey],
    status_code=202,
    responses={
        401: {"model": ErrorResponse},
        403: {"model": ErrorResponse},
        409: {"model": ErrorResponse, "description": "a reload is already running"},
    },
    summary="Load a release (id or channel) in the background and swap it in atomically",
)
async def reload_release(
    request: Request,
    body: ReloadRequest | None = None,
    wait: Annotated[bool, Query(description="answer when the new release serves (or failed)")] = False,
) -> Response:
    h = holder(request)
    target = (body.release or body.channel) if body else None
    target = target or h.settings.target()
    loop = asyncio.get_running_loop()
    done: asyncio.Future[tuple[ServingState | None, Exception | None]] = loop.create_future()

    def on_done(state: ServingState | None, err: Exception | None) -> None:
        if state is not None:
            metrics.set_release(state.release_id)
        metrics.RELOADS.labels(outcome="ok" if err is None else "error").inc()

        def finish() -> None:
            if not done.done():
                done.set_result((state, err))

        loop.call_soon_threadsafe(finish)

    if not h.start_reload(target, on_done):
        raise ConflictError(f"a reload of {h.loading!r} is already running; retry when /readyz shows none")
    old = h.current.release_id if h.current else None
    if not wait:
        return JSONBody(
            {"request_id": request_id(request), "status": "loading", "target": target, "release_id": old},
            status_code=202,
        )
    state, err = await done
    if err is not None or state is None:
        status, code = 500, "reload_failed"
        if isinstance(err, RecstackError):
            status, code = err.http_status, err.code
        msg = err.message if isinstance(err, RecstackError) else "see the server log"
        return JSONBody(
            {
                "error": {"code": code, "message": f"reload of {target!r} failed: {msg}"},
                "request_id": request_id(request),
                "release_id": old,
            },
            status_code=status,
        )
    return JSONBody(
        {"request_id": request_id(request), "status": "loaded", "previous": old, **release_info(state)},
        status_code=200,
    )


@router.get("/admin/reload", tags=["admin"], dependencies=[AdminKey], summary="Reload status")
async def reload_status(request: Request) -> Response:
    h = holder(request)
    return JSONBody(
        {
            "request_id": request_id(request),
            "loading": h.loading,
            "last_error": h.last_error,
            "release_id": h.current.release_id if h.current else None,
        }
    )
