"""``POST /v1/events``: a view, click or rating.

With an event log (`recstack.events`; ``recstack serve`` logs by default) the event is appended to
the log first and the API answers 201 only once it is durable there, with its ``offset``. Then the
user's history updates at once, so the next recommendation excludes the item and uses it. A user
unknown to the release gets a history at once (and becomes a user of the next release); an item
unknown to the release is kept in the log for the next release (``item_known: false``) but has no
place in this release's histories. Without a log an unknown item is refused (404).
"""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from recstack.errors import InvalidArgumentError, UnknownIdError
from recstack.events import NewEvent
from recstack.serving._history import now
from recstack.serving.api._json import JSONBody, request_id
from recstack.serving.api.deps import current_state, holder
from recstack.serving.api.schemas import ErrorResponse, EventIn, EventOut

__all__ = ["router"]

router = APIRouter(tags=["events"])

_ERR: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorResponse, "description": "unknown item id (only when the server keeps no event log)"},
    422: {"model": ErrorResponse, "description": "invalid event (rating events need a rating)"},
    503: {"model": ErrorResponse, "description": "the event log does not answer: the event was not kept"},
}


@router.post(
    "/v1/events",
    response_model=EventOut,
    status_code=201,
    responses=_ERR,
    summary="Record a view, click or rating",
)
async def post_event(request: Request, event: EventIn) -> Response:
    if event.type == "rating" and event.rating is None:
        raise InvalidArgumentError("rating events need a 'rating' (a number between 0 and 10)")
    state = current_state(request)
    sink = holder(request).sink
    cat = state.pipeline.catalog
    item = cat.dataset.item_vocab.get(event.item_id)
    if item is None and sink is None:
        raise UnknownIdError(f"unknown item id {event.item_id!r}; GET /v1/items lists the catalogue")
    uidx = cat.user_index(event.user_id)
    rating = event.rating if event.type == "rating" else None
    ts = event.timestamp if event.timestamp is not None else now()
    offset = None
    rid = request_id(request)
    if sink is not None:
        new = NewEvent(
            type=event.type,
            user_id=str(event.user_id),
            item_id=str(event.item_id),
            ts=int(ts),
            rating=rating,
            received=round(time.time(), 3),
            release_id=state.release_id,
            request_id=rid or None,
        )
        offset = await sink.append(new)  # durable before we answer; a failure answers 503
    if item is not None:
        hist = state.pipeline.history.append(str(event.user_id), uidx, item, event.type, rating, ts, offset)
    else:
        hist = state.pipeline.history.get(str(event.user_id), uidx)
    return JSONBody(
        {
            "request_id": rid,
            "release_id": state.release_id,
            "accepted": True,
            "offset": offset,
            "user_id": event.user_id,
            "item_id": event.item_id,
            "item_known": item is not None,
            "history_length": len(hist),
        },
        status_code=201,
    )
