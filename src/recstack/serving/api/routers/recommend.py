"""Recommendations: ``GET /v1/users/{user_id}/recommendations`` and ``POST /v1/recommendations``."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path
from starlette.requests import Request
from starlette.responses import Response

from recstack.errors import InvalidArgumentError
from recstack.ops import metrics
from recstack.serving.api._json import JSONBody, request_id
from recstack.serving.api._query import parse_query, query_parameters
from recstack.serving.api._render import rec_body, split_csv
from recstack.serving.api._responses import errors, run_blocking
from recstack.serving.api.deps import current_state, holder
from recstack.serving.api.schemas import (
    ID_MAX_LENGTH,
    MAX_LIST,
    RecommendationQuery,
    RecommendationRequest,
    RecommendationResponse,
)
from recstack.serving.pipeline import RecRequest

__all__ = ["router"]

router = APIRouter(tags=["recommendations"])

_ERRORS = errors(
    400,
    404,
    413,
    422,
    503,
    e404="an item id in exclude / liked_items is unknown (or, source=batch, the user has no batch row)",
    e422="invalid parameter (k above k_max, unknown model or genre...)",
)


async def _run(request: Request, req: RecRequest, source: str, user_id: Any) -> Response:
    state = current_state(request)
    if source == "batch":
        provider = getattr(request.app.state, "batch_provider", None)
        if provider is None:
            raise InvalidArgumentError(
                "source=batch needs precomputed batch tables (recstack batch); allowed here: source=online"
            )
        return JSONBody(await run_blocking(request, provider.serve, request, state, req))
    online = request.app.state.online
    routed = online.route(state, req)
    serving = state
    if routed is not None:  # an experiment arm: its pipeline (and release) and model
        serving = routed.runtime.state
        if routed.runtime.model is not None:
            req.model = routed.runtime.model
        res = await run_blocking(request, routed.runtime.pipeline.recommend, req)
    else:
        res = await run_blocking(request, state.pipeline.recommend, req)
    metrics.observe_stages(res.timings, res.fallbacks, res.cold_start, res.degraded)
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
async def user_recommendations(
    request: Request, user_id: Annotated[str, Path(max_length=ID_MAX_LENGTH)]
) -> Response:
    # the query is parsed by hand (`parse_query`): FastAPI's per-parameter resolution of its ten
    # parameters cost more than a whole /healthz request
    q = parse_query(request, RecommendationQuery)
    exclude = split_csv(q.exclude)
    if len(exclude) > MAX_LIST:
        raise InvalidArgumentError(f"exclude holds {len(exclude)} item ids; at most {MAX_LIST}")
    if any(len(e) > ID_MAX_LENGTH for e in exclude):
        raise InvalidArgumentError(f"exclude: an item id has more than {ID_MAX_LENGTH} characters")
    req = RecRequest(
        user_id=user_id,
        k=q.k,
        model=q.model,
        exclude=exclude,
        genres=split_csv(q.genres),
        exclude_genres=split_csv(q.exclude_genres),
        year_min=q.year_min,
        year_max=q.year_max,
        explain=q.explain,
    )
    return await _run(request, req, q.source, user_id)


@router.post(
    "/v1/recommendations",
    response_model=RecommendationResponse,
    responses=_ERRORS,
    summary="Recommendations for a user id, a new user's profile or a few liked items",
)
async def post_recommendations(request: Request, body: RecommendationRequest) -> Response:
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
    return await _run(request, req, "online", body.user_id)
