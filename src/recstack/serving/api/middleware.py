"""Pure-ASGI middleware: request id (X-Request-ID, echoed or generated), per-endpoint request count
and latency metrics, and the last line of error handling: an exception no handler took is logged
once (with its traceback) and answered as a JSON 500 here, not re-raised, so uvicorn neither logs it
a second time nor drops the client's keep-alive connection. Cheaper than Starlette's
BaseHTTPMiddleware on the hot path."""

from __future__ import annotations

import logging
import os
import re
import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from recstack.ops import metrics
from recstack.serving.api._json import _dumps
from recstack.serving.api.errors import internal_error_body

log = logging.getLogger(__name__)

__all__ = ["RequestContextMiddleware"]

_VALID_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")


def _new_id() -> str:
    return os.urandom(8).hex()


class RequestContextMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = ""
        for k, v in scope.get("headers", ()):
            if k == b"x-request-id":
                cand = v.decode("latin-1")
                rid = cand if _VALID_ID.match(cand) else ""
                break
        rid = rid or _new_id()
        state: dict[str, Any] = scope.setdefault("state", {})
        state["request_id"] = rid
        status = [500]
        started = [False]
        t0 = time.perf_counter()

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                started[0] = True
                status[0] = message["status"]
                headers = list(message.get("headers", []))
                headers.append((b"x-request-id", rid.encode()))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        except Exception:
            log.exception("request %s: unexpected error", rid)
            status[0] = 500
            if not started[0]:
                body = _dumps(internal_error_body(rid))
                headers = [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"x-request-id", rid.encode()),
                ]
                await send({"type": "http.response.start", "status": 500, "headers": headers})
                await send({"type": "http.response.body", "body": body})
        finally:
            route = scope.get("route")
            endpoint = getattr(route, "path", None) or "unmatched"
            metrics.child(metrics.REQUEST_LATENCY, endpoint).observe(time.perf_counter() - t0)
            metrics.child(metrics.REQUESTS, endpoint, scope.get("method", ""), str(status[0])).inc()
