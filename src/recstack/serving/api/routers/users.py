"""``GET /v1/users/{user_id}``: profile, recent history and rating statistics."""

from __future__ import annotations

from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Query
from starlette.requests import Request
from starlette.responses import Response

from recstack.errors import UnknownIdError
from recstack.serving.api._json import JSONBody, request_id
from recstack.serving.api.deps import current_state
from recstack.serving.api.schemas import ErrorResponse

__all__ = ["router"]

router = APIRouter(tags=["users"])


@router.get(
    "/v1/users/{user_id}",
    responses={404: {"model": ErrorResponse, "description": "unknown user without events"}},
    summary="A user's profile, history (most recent first) and statistics",
)
async def get_user(
    request: Request,
    user_id: str,
    history_limit: Annotated[int, Query(ge=0, le=10_000, description="history entries returned")] = 50,
) -> Response:
    state = current_state(request)
    cat = state.pipeline.catalog
    idx = cat.user_index(user_id)
    hist = state.pipeline.history.get(str(user_id), idx)
    if idx is None and len(hist) == 0:
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
    return JSONBody(
        {
            "request_id": request_id(request),
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
        }
    )
