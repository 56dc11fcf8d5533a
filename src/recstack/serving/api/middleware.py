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


async def _too_large(send: Send, rid: str, limit: int) -> None:
    body = _dumps(
        {
            "error": {
                "code": "too_large",
                "message": f"request body larger than {limit:,} bytes (the server's max_body_bytes)",
            },
            "request_id": rid,
        }
    )
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"x-request-id", rid.encode()),
        (b"connection", b"close"),
    ]
    await send({"type": "http.response.start", "status": 413, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _counting(receive: Receive, limit: int) -> Receive:
    """``receive`` that raises a 413 once more than ``limit`` body bytes arrived."""
    seen = [0]

    async def wrapped() -> Message:
        message = await receive()
        if message["type"] == "http.request":
            seen[0] += len(message.get("body", b""))
            if seen[0] > limit:
                from fastapi import HTTPException

                raise HTTPException(status_code=413, detail="request body too large")
        return message

    return wrapped


class RequestContextMiddleware:
    """Also the request body limit: a ``Content-Length`` above ``max_body_bytes`` is answered 413 at
    once (the body is never read); a body without one is counted as it arrives and refused (413)
    when it passes the limit."""

    def __init__(self, app: ASGIApp, max_body_bytes: int | None = None) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = ""
        length = -1
        for k, v in scope.get("headers", ()):
            if k == b"x-request-id":
                cand = v.decode("latin-1")
                rid = cand if _VALID_ID.match(cand) else ""
            elif k == b"content-length":
                length = int(v) if v.isdigit() else -1
        rid = rid or _new_id()
        limit = self.max_body_bytes
        if limit is not None:
            if length > limit:
                await _too_large(send, rid, limit)
                metrics.child(metrics.REQUESTS, "unmatched", scope.get("method", ""), "413").inc()
                return
            if length < 0:
                receive = _counting(receive, limit)
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
