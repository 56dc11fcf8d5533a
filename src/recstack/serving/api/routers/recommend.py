"""Recommendations: ``GET /v1/users/{user_id}/recommendations`` and ``POST /v1/recommendations``."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from recstack.errors import InvalidArgumentError
from recstack.ops import metrics
from recstack.serving.api._json import JSONBody, request_id
from recstack.serving.api._query import parse_query, query_parameters
from recstack.serving.api._render import rec_body, split_csv
from recstack.serving.api.deps import current_state, holder
from recstack.serving.api.schemas import (
    ErrorResponse,
    RecommendationQuery,
    RecommendationRequest,
    RecommendationResponse,
)
from recstack.serving.pipeline import RecRequest

__all__ = ["router"]

router = APIRouter(tags=["recommendations"])

_ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorResponse, "description": "an item id in exclude / liked_items is unknown"},
    422: {"model": ErrorResponse, "description": "invalid parameter (k above k_max, unknown model...)"},
}


def _run(request: Request, req: RecRequest, source: str, user_id: Any) -> Response:
    state = current_state(request)
    if source == "batch":
        provider = getattr(request.app.state, "batch_provider", None)
        if provider is None:
            raise InvalidArgumentError(
                "source=batch needs precomputed batch tables (recstack batch); allowed here: source=online"
            )
        return JSONBody(provider.serve(request, state, req))
    online = request.app.state.online
    routed = online.route(state, req)
    serving = state
    if routed is not None:  # an experiment arm: its pipeline (and release) and model
        serving = routed.runtime.state
        if routed.runtime.model is not None:
            req.model = routed.runtime.model
        res = routed.runtime.pipeline.recommend(req)
    else:
        res = state.pipeline.recommend(req)
    metrics.observe_stages(res.timings, res.fallbacks, res.cold_start)
    rid = request_id(request)
    body = rec_body(
        serving.pipeline.catalog,
        res,
        request_id=rid,
        release_id=serving.release_id,
        user_id=user_id,
        k=len(res.items),
    )
    body["experiment"] = {"name": routed.experiment, "arm": routed.arm} if routed is not None else None
    online.answered(serving, res, user_id=user_id, request_id=rid, routed=routed, sink=holder(request).sink)
    return JSONBody(body)


@router.get(
    "/v1/users/{user_id}/recommendations",
    response_model=RecommendationResponse,
    responses=_ERRORS,
    summary="Top-k recommendations for a user (unknown users get cold-start results)",
    openapi_extra={"parameters": query_parameters(RecommendationQuery)},
)
async def user_recommendations(request: Request, user_id: str) -> Response:
    # the query is parsed by hand (`parse_query`): FastAPI's per-parameter resolution of its ten
    # parameters cost more than a whole /healthz request
    q = parse_query(request, RecommendationQuery)
    req = RecRequest(
        user_id=user_id,
        k=q.k,
        model=q.model,
        exclude=split_csv(q.exclude),
        genres=split_csv(q.genres),
        exclude_genres=split_csv(q.exclude_genres),
        year_min=q.year_min,
        year_max=q.year_max,
        explain=q.explain,
    )
    return _run(request, req, q.source, user_id)


@router.post(
    "/v1/recommendations",
    response_model=RecommendationResponse,
    responses=_ERRORS,
    summary="Recommendations for a user id, a new user's profile or a few liked items",
)
async def post_recommendations(request: Request, body: RecommendationRequest) -> Response:
    if body.user_id is None and body.profile is None and not body.liked_items:
        raise InvalidArgumentError("give one of user_id, profile or liked_items (a non-empty list)")
    f = body.filters
    req = RecRequest(
        user_id=body.user_id,
        profile=body.profile.model_dump(exclude_none=True) if body.profile else None,
        liked_items=list(body.liked_items) if body.liked_items else None,
        k=body.k,
        model=body.model,
        exclude=list(f.exclude),
        genres=list(f.genres),
        exclude_genres=list(f.exclude_genres),
        year_min=f.year_min,
        year_max=f.year_max,
        exclude_seen=f.exclude_seen,
        explain=body.explain,
    )
    return _run(request, req, "online", body.user_id)
