"""Dependencies of the routers: the current serving state, settings and the admin API key check.

Extension points for later work: ``app.state.batch_provider`` (issue 7: ``source=batch``; an object
with ``recommend(user_id, k) -> list[(item_id, score)] | None``) and the routers / static mount that
`create_app` includes (issue 6: the web UI).
"""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Header
from starlette.requests import Request

from recstack.errors import RecstackError, UnavailableError
from recstack.serving._state import ServingState, StateHolder
from recstack.serving.settings import ServingSettings

__all__ = [
    "AdminKey",
    "EventsKey",
    "ForbiddenError",
    "UnauthorizedError",
    "current_state",
    "holder",
    "require_api_key",
    "settings",
]


class UnauthorizedError(RecstackError):
    http_status = 401
    grpc_code = "UNAUTHENTICATED"
    code = "unauthorized"


class ForbiddenError(RecstackError):
    http_status = 403
    grpc_code = "PERMISSION_DENIED"
    code = "forbidden"


def holder(request: Request) -> StateHolder:
    h: StateHolder = request.app.state.holder
    return h


def current_state(request: Request) -> ServingState:
    """The state this request uses from start to end (a reload swaps only later requests)."""
    state = request.app.state.holder.current
    if state is None:
        raise UnavailableError("no release loaded yet; GET /readyz says when the server is ready")
    assert isinstance(state, ServingState)
    return state


def settings(request: Request) -> ServingSettings:
    s: ServingSettings = request.app.state.settings
    return s


def require_api_key(
    request: Request, x_api_key: Annotated[str | None, Header(alias="X-API-Key")] = None
) -> None:
    key = settings(request).api_key
    if key is None:
        raise ForbiddenError("admin endpoints are disabled: set RECSTACK_SERVE_API_KEY (or serve --api-key)")
    if x_api_key is None or not hmac.compare_digest(x_api_key.encode(), key.encode()):
        raise UnauthorizedError("missing or wrong X-API-Key header")


def require_events_key(
    request: Request, x_api_key: Annotated[str | None, Header(alias="X-API-Key")] = None
) -> None:
    """With ``events_auth``, ``POST /v1/events`` needs the same X-API-Key as ``/admin/*``."""
    s = settings(request)
    if not s.events_auth:
        return
    if (
        s.api_key is None
        or x_api_key is None
        or not hmac.compare_digest(x_api_key.encode(), s.api_key.encode())
    ):
        raise UnauthorizedError("events need the X-API-Key header (the server runs with events_auth)")


AdminKey = Depends(require_api_key)
EventsKey = Depends(require_events_key)
