"""``GET /v1/users/{user_id}``: profile, recent history and rating statistics."""

from __future__ import annotations

from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Path, Query
from starlette.requests import Request
from starlette.responses import Response

from recstack.errors import UnavailableError, UnknownIdError
from recstack.ops import metrics
from recstack.serving._state import ServingState
from recstack.serving.api._json import JSONBody, request_id
from recstack.serving.api._responses import errors, run_blocking
from recstack.serving.api.deps import current_state
from recstack.serving.api.schemas import ID_MAX_LENGTH

__all__ = ["router"]

router = APIRouter(tags=["users"])


@router.get(
    "/v1/users/{user_id}",
    responses=errors(404, 422, 503, e404="unknown user without events"),
    summary="A user's profile, history (most recent first) and statistics",
)
async def get_user(
    request: Request,
    user_id: Annotated[str, Path(max_length=ID_MAX_LENGTH)],
    history_limit: Annotated[int, Query(ge=0, le=10_000, description="history entries returned")] = 50,
) -> Response:
    state = current_state(request)
    body = await run_blocking(request, _user_body, state, user_id, history_limit)
    body["request_id"] = request_id(request)
    for what in body["degraded"]:
        metrics.degraded_answer(what)
    return JSONBody(body)


def _user_body(state: ServingState, user_id: str, history_limit: int) -> dict[str, Any]:
    cat = state.pipeline.catalog
    idx = cat.user_index(user_id)
    hist = state.pipeline.history.get(str(user_id), idx)
    if idx is None and len(hist) == 0:
        if hist.degraded:  # the store cannot say whether this user has events
            raise UnavailableError(f"cannot read the events of user {user_id!r}: {hist.degraded}")
        raise UnknownIdError(f"unknown user id {user_id!r} (no profile, no events)")
    profile: dict[str, Any] | None = None
    if idx is not None:
        row = cat.user_rows.row(idx, named=True)
        profile = {k: v for k, v in row.items() if k not in ("user", "external_id")}
    rated = hist.ratings[~np.isnan(hist.ratings)]
    counts = cat.genre_matrix[hist.items].sum(axis=0) if len(hist) else np.zeros(len(cat.genre_names))
    fav = [cat.genre_names[g] for g in np.argsort(-counts, kind="stable")[:3] if counts[g] > 0]
    order = np.arange(len(hist))[::-1][:history_limit]
    history = [
        {
            "item_id": cat.item_ids[int(hist.items[j])],
            "title": cat.titles[int(hist.items[j])],
            "rating": None if np.isnan(hist.ratings[j]) else float(hist.ratings[j]),
            "timestamp": int(hist.timestamps[j]),
        }
        for j in order.tolist()
    ]
    return {
        "release_id": state.release_id,
        "user_id": user_id,
        "known": idx is not None,
        "profile": profile,
        "stats": {
            "count": len(hist),
            "rated": len(rated),
            "average_rating": float(rated.mean()) if len(rated) else None,
            "highest_rating": float(rated.max()) if len(rated) else None,
            "lowest_rating": float(rated.min()) if len(rated) else None,
            "favourite_genres": fav,
        },
        "history": history,
        "degraded": [hist.degraded] if hist.degraded else [],
    }
