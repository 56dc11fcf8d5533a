"""Pure-ASGI middleware: request id (X-Request-ID, echoed or generated), per-endpoint request count
and latency metrics. Cheaper than Starlette's BaseHTTPMiddleware on the hot path."""

from __future__ import annotations

import os
import re
import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from recstack.ops import metrics

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
        t0 = time.perf_counter()

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
                headers = list(message.get("headers", []))
                headers.append((b"x-request-id", rid.encode()))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            endpoint = getattr(route, "path", None) or "unmatched"
            metrics.child(metrics.REQUEST_LATENCY, endpoint).observe(time.perf_counter() - t0)
            metrics.child(metrics.REQUESTS, endpoint, scope.get("method", ""), str(status[0])).inc()
