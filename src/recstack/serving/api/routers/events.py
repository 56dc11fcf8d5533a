"""``POST /v1/events``: a view, click or rating. The user's history updates at once, so the next
recommendation excludes the item and uses it."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from recstack.errors import InvalidArgumentError
from recstack.serving._history import now
from recstack.serving.api._json import JSONBody, request_id
from recstack.serving.api.deps import current_state
from recstack.serving.api.schemas import ErrorResponse, EventIn, EventOut

__all__ = ["router"]

router = APIRouter(tags=["events"])

_ERR: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorResponse, "description": "unknown item id"},
    422: {"model": ErrorResponse, "description": "invalid event (rating events need a rating)"},
}


@router.post("/v1/events", response_model=EventOut, responses=_ERR, summary="Record a view, click or rating")
async def post_event(request: Request, event: EventIn) -> Response:
    if event.type == "rating" and event.rating is None:
        raise InvalidArgumentError("rating events need a 'rating' (a number between 0 and 10)")
    state = current_state(request)
    cat = state.pipeline.catalog
    item = cat.item_index(event.item_id)
    uidx = cat.user_index(event.user_id)
    hist = state.pipeline.history.append(
        str(event.user_id),
        uidx,
        item,
        event.type,
        event.rating if event.type == "rating" else None,
        event.timestamp if event.timestamp is not None else now(),
    )
    return JSONBody(
        {
            "request_id": request_id(request),
            "release_id": state.release_id,
            "accepted": True,
            "user_id": event.user_id,
            "item_id": event.item_id,
            "history_length": len(hist),
        },
        status_code=201,
    )
