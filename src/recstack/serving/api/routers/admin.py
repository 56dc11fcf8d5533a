"""Operations: ``GET /v1/release``, ``/healthz``, ``/readyz``, ``/metrics`` and ``POST /admin/reload``
(X-API-Key): loads a release in the background on the worker that received it, swaps it in
atomically and makes it the service's target, which every other worker then loads too
(`recstack.serving._target`); ``?wait=true`` answers once every worker serves it.

``/healthz`` never touches a store or a model (it answers while Redis is frozen); ``/readyz``
answers 503 when no release is loaded or the shared store cannot serve (Redis down, or restarted
empty and being loaded again), and says which release the service targets and this worker serves."""

from __future__ import annotations

import asyncio
import time
from typing import Annotated, Any

import anyio.to_thread
import polars as pl
from fastapi import APIRouter, Query
from starlette.requests import Request
from starlette.responses import Response

from recstack.errors import RecstackError
from recstack.ops import metrics
from recstack.serving._state import ServingState, StateHolder
from recstack.serving.api._json import JSONBody, request_id
from recstack.serving.api._responses import errors
from recstack.serving.api.deps import AdminKey, current_state, holder
from recstack.serving.api.schemas import ErrorResponse, ReloadRequest

#: seconds ``/admin/reload?wait=true`` waits for every worker to serve the new release
WAIT_ALL_SECONDS = 300.0

__all__ = ["demographics", "model_labels", "release_info", "router"]

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
        "source_kinds": {s.name: s.kind for s in p.active_sources},
        "trending_days": p.config.trending_days,
        "k_default": p.config.k_default,
        "k_max": p.config.k_max,
        "genres": p.catalog.genre_names,
        "n_users": p.catalog.n_users,
        "n_items": p.catalog.n_items,
        "store": state.store,
        "index": state.index_backend,
        "metrics": dict(getattr(rel, "metrics", {}) or {}),
        "labels": model_labels(state),
        "demographics": demographics(p.catalog.user_rows),
        # whether a profile alone beats popular on the release's cold-users validation: the web form
        # asks for a profile only then, and a profile-only answer says "popular" otherwise
        "cold_start": {
            k: p.cold_start.get(k) for k in ("model", "personal", "reason", "params") if k in p.cold_start
        },
    }


def demographics(users: pl.DataFrame) -> dict[str, Any]:
    """The profile fields the serving data has values for (what onboarding may ask): ``age``
    (bool), ``gender`` and ``occupation`` (the values seen); empty for data without demographics
    (MovieLens latest-small)."""
    out: dict[str, Any] = {}
    if "age" in users.columns and users["age"].null_count() < users.height:
        out["age"] = True
    for col in ("gender", "occupation"):
        if col in users.columns:
            values = sorted({str(v) for v in users[col].drop_nulls().to_list() if str(v).strip()})
            if values:
                out[col] = values
    return out


def model_labels(state: ServingState) -> dict[str, str]:
    """Human-readable names (`recstack.models.registry.display_name`) of every model, retriever,
    recall source and evaluated model name of the release: what the web UI shows."""
    from recstack.models.registry import display_name

    rel = state.release
    p = state.pipeline
    manifest = getattr(rel, "manifest", None)
    arts = getattr(manifest, "artifacts", None)
    behind: dict[str, str] = dict(getattr(arts, "retriever_models", {}) or {})
    for s in p.config.sources:  # a history source named after its retriever alias
        if s.retriever is not None and s.retriever in behind:
            behind.setdefault(s.name, behind[s.retriever])
    names = [
        *p.models,
        *p.unavailable_rankers,
        *rel.retriever_names,
        *(s.name for s in p.config.sources),
        *(getattr(rel, "metrics", {}) or {}),
        "fill",
    ]
    return {n: display_name(n, behind.get(n)) for n in dict.fromkeys(names)}


@router.get("/v1/release", tags=["ops"], responses=errors(503), summary="The release being served")
async def get_release(request: Request) -> Response:
    state = current_state(request)
    return JSONBody(
        {"request_id": request_id(request), **release_info(state), "model": state.pipeline.default_model}
    )


@router.get("/healthz", tags=["ops"], summary="Liveness (the process answers)")
async def healthz() -> Response:
    return JSONBody({"status": "ok"})


def _store_health(state: ServingState) -> dict[str, Any]:
    probe = getattr(state.pipeline.history, "health", None)
    return dict(probe()) if probe is not None else {"status": "ok", "detail": None}


@router.get(
    "/readyz",
    tags=["ops"],
    responses=errors(503, e503="no release loaded yet, or the shared store (Redis) cannot serve"),
    summary="Readiness: a release is loaded and its store answers",
)
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
    store = await anyio.to_thread.run_sync(_store_health, state)  # a Redis probe: off the event loop
    target = h.target.release if h.target else None
    body: dict[str, Any] = {
        "status": "ready",
        "release_id": state.release_id,
        "target": target,
        "converged": target is None or target == state.release_id,
        "reloading": h.loading,
        "store": {"backend": state.store, **store},
    }
    if store.get("status") != "ok":
        code = "store_empty" if store.get("status") == "empty" else "store_unavailable"
        msg = f"the {state.store} store cannot serve: {store.get('detail')}"
        body.update(status="degraded", error={"code": code, "message": msg}, request_id=request_id(request))
        return JSONBody(body, status_code=503)
    return JSONBody(body)


@router.get(
    "/metrics",
    tags=["ops"],
    summary="Prometheus metrics",
    response_class=Response,
    responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}, "description": "exposition"}},
)
async def prometheus_metrics() -> Response:
    body, ctype = metrics.render()
    return Response(body, media_type=ctype)


def _workers(h: StateHolder) -> dict[int, dict[str, Any]]:
    return h.run_dir.statuses() if h.run_dir is not None else {}


async def _wait_all(h: StateHolder, release: str, seq: int | None) -> tuple[bool, dict[int, dict[str, Any]]]:
    """Wait until every live worker serves ``release`` (or reported an error for target ``seq``)."""
    deadline = time.monotonic() + WAIT_ALL_SECONDS
    expected = max(1, h.settings.workers)
    while True:
        ws = _workers(h)
        done = sum(1 for w in ws.values() if w.get("release") == release)
        failed = sum(
            1 for w in ws.values() if w.get("target_seq") == seq and w.get("error") and not w.get("loading")
        )
        if h.run_dir is None or (done >= expected and done == len(ws)):
            return True, ws
        if (failed and done + failed >= len(ws)) or time.monotonic() > deadline:
            return False, ws
        await asyncio.sleep(0.1)


@router.post(
    "/admin/reload",
    tags=["admin"],
    dependencies=[AdminKey],
    status_code=202,
    responses={
        200: {"description": "loaded (wait=true): every worker serves the release"},
        **errors(
            400,
            401,
            403,
            404,
            409,
            413,
            422,
            503,
            e404="unknown release id or channel",
            e409="a reload is already running on this worker",
            e503="(wait=true) not every worker could load the release; they keep serving the previous one",
        ),
        500: {"model": ErrorResponse, "description": "the release is corrupt (a file fails its checksum)"},
    },
    summary="Load a release (id or channel) on every worker, in the background, and swap it in atomically",
)
async def reload_release(
    request: Request,
    body: ReloadRequest | None = None,
    wait: Annotated[
        bool, Query(description="answer when every worker serves the new release (or failed)")
    ] = False,
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

    if not h.start_reload(target, on_done, publish=True):
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
    seq = h.target.seq if h.target else None
    ok, ws = await _wait_all(h, state.release_id, seq)
    workers = {str(pid): {"release": w.get("release"), "error": w.get("error")} for pid, w in ws.items()}
    if not ok:
        return JSONBody(
            {
                "error": {
                    "code": "reload_incomplete",
                    "message": f"release {state.release_id} serves on this worker, not on every worker: "
                    + "; ".join(
                        f"{pid}: {w['release']} ({w['error'] or 'loading'})" for pid, w in workers.items()
                    ),
                },
                "request_id": request_id(request),
                "release_id": state.release_id,
                "workers": workers,
            },
            status_code=503,
        )
    return JSONBody(
        {
            "request_id": request_id(request),
            "status": "loaded",
            "previous": old,
            "workers": workers,
            **release_info(state),
        },
        status_code=200,
    )


@router.get(
    "/admin/reload",
    tags=["admin"],
    dependencies=[AdminKey],
    responses=errors(401, 403),
    summary="Reload status",
)
async def reload_status(request: Request) -> Response:
    h = holder(request)
    t = h.target
    return JSONBody(
        {
            "request_id": request_id(request),
            "loading": h.loading,
            "last_error": h.last_error,
            "release_id": h.current.release_id if h.current else None,
            "target": None if t is None else {"release": t.release, "requested": t.requested, "seq": t.seq},
            "workers": {str(pid): w for pid, w in _workers(h).items()},
        }
    )
