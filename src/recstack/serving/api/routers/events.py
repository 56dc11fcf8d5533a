"""``POST /v1/events``: a view, click or rating. The user's history updates at once, so the next
recommendation excludes the item and uses it.

The event is validated before anything is stored (`recstack.serving.api.schemas`: ids, a timestamp
in Unix seconds within 1990 .. now + 1 day, a finite rating); the store appends it all or nothing
and bounds what it keeps (`recstack.store.EventLimits`). With ``events_auth`` the route needs the
``X-API-Key`` header, like ``/admin/*``."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from recstack.serving._history import now
from recstack.serving.api._json import JSONBody, request_id
from recstack.serving.api._responses import errors, run_blocking
from recstack.serving.api.deps import EventsKey, current_state
from recstack.serving.api.schemas import EventIn, EventOut, RatingEvent

__all__ = ["router"]

router = APIRouter(tags=["events"])

_ERR = errors(
    400,
    401,
    404,
    413,
    422,
    503,
    e401="events_auth is on and the X-API-Key header is missing or wrong",
    e404="unknown item id",
    e422="invalid event (ids, timestamp in Unix seconds, rating events need a rating 0..10)",
    e503="not ready, or the shared store (Redis) is unavailable: nothing was stored",
)


@router.post(
    "/v1/events",
    response_model=EventOut,
    status_code=201,
    responses=_ERR,
    dependencies=[EventsKey],
    summary="Record a view, click or rating",
)
async def post_event(request: Request, event: EventIn) -> Response:
    state = current_state(request)
    cat = state.pipeline.catalog
    item = cat.item_index(event.item_id)
    uidx = cat.user_index(event.user_id)
    length = await run_blocking(
        request,
        state.pipeline.history.append,
        str(event.user_id),
        uidx,
        item,
        event.type,
        event.rating if isinstance(event, RatingEvent) else None,
        event.timestamp if event.timestamp is not None else now(),
    )
    return JSONBody(
        {
            "request_id": request_id(request),
            "release_id": state.release_id,
            "accepted": True,
            "user_id": event.user_id,
            "item_id": event.item_id,
            "history_length": length,
        },
        status_code=201,
    )
