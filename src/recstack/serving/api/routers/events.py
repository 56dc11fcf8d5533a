"""``POST /v1/events``: a view, click or rating.

The event is validated before anything is stored (`recstack.serving.api.schemas`: ids, a timestamp
in Unix seconds from 1990 to the end of tomorrow UTC, a finite rating). With an event log (`recstack.events`;
``recstack serve`` logs by default) it is appended to the log first and the API answers 201 only
once it is durable there, with its ``offset``. Then the user's history updates at once, so the next
recommendation excludes the item and uses it; the store appends it all or nothing and bounds what
it keeps (`recstack.store.EventLimits`). A user unknown to the release gets a history at once (and
becomes a user of the next release); an item unknown to the release is kept in the log for the next
release (``item_known: false``) but has no place in this release's histories. Without a log an
unknown item is refused (404). With ``events_auth`` the route needs the ``X-API-Key`` header, like
``/admin/*``."""

from __future__ import annotations

import time

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from recstack.errors import UnknownIdError
from recstack.events import NewEvent
from recstack.serving._history import now
from recstack.serving.api._json import JSONBody, request_id
from recstack.serving.api._responses import errors, run_blocking
from recstack.serving.api.deps import EventsKey, current_state, holder
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
    e404="unknown item id (only when the server keeps no event log)",
    e422="invalid event (ids, timestamp in Unix seconds, rating events need a rating 0..10)",
    e503="not ready, the event log or the shared store (Redis) is unavailable: nothing was acknowledged",
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
    sink = holder(request).sink
    cat = state.pipeline.catalog
    item = cat.dataset.item_vocab.get(event.item_id)
    if item is None and sink is None:
        raise UnknownIdError(f"unknown item id {event.item_id!r}; GET /v1/items lists the catalogue")
    uidx = cat.user_index(event.user_id)
    rating = event.rating if isinstance(event, RatingEvent) else None
    ts = event.timestamp if event.timestamp is not None else now()
    rid = request_id(request)
    offset = None
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
    # an item added online (`POST /v1/items`) is in the catalogue but not in the release's histories:
    # its events stay in the log for the next release
    in_release = item is not None and item < state.pipeline.base_n_items
    if in_release:
        length = await run_blocking(
            request,
            state.pipeline.history.append,
            str(event.user_id),
            uidx,
            item,
            event.type,
            rating,
            ts,
            offset,
        )
    else:
        length = len(await run_blocking(request, state.pipeline.history.get, str(event.user_id), uidx))
    return JSONBody(
        {
            "request_id": rid,
            "release_id": state.release_id,
            "accepted": True,
            "offset": offset,
            "user_id": event.user_id,
            "item_id": event.item_id,
            "item_known": item is not None,
            "history_length": length,
        },
        status_code=201,
    )
