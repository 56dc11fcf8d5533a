"""The error statuses each route documents in OpenAPI (every status a route can answer is listed,
with the `ErrorResponse` body), and `run_blocking`: how a route runs work that may block.

Blocking work (the pipeline's ranking, store reads and writes that may wait on Redis, faiss, polars
scans) runs in a worker thread, bounded by a per-process `anyio.CapacityLimiter`
(``blocking_threads``), never on the event loop: ``/healthz``, ``/readyz`` and every other request
keep being answered while a thread waits on a slow or frozen Redis (its client times out, and the
circuit breaker then fails calls at once).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import anyio
import anyio.to_thread
from starlette.requests import Request

from recstack.serving.api.schemas import ErrorResponse

__all__ = ["ERROR_TEXT", "errors", "run_blocking"]

T = TypeVar("T")

ERROR_TEXT: dict[int, str] = {
    400: "malformed body (not JSON, or not UTF-8)",
    401: "missing or wrong X-API-Key header",
    403: "this endpoint is disabled (no API key configured)",
    404: "unknown id",
    409: "conflict",
    413: "request body larger than the server's limit (max_body_bytes)",
    422: "invalid parameter or body (the message names the field and what is allowed)",
    503: "not ready (no release loaded yet) or the shared store (Redis) is unavailable",
}


def errors(*codes: int, **described: str) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entries for ``codes`` (``described``: ``e404="unknown item id"``)."""
    out: dict[int | str, dict[str, Any]] = {}
    for code in codes:
        text = described.get(f"e{code}", ERROR_TEXT[code])
        out[code] = {"model": ErrorResponse, "description": text}
    return out


async def run_blocking(request: Request, fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)`` in a worker thread of this process's bounded pool (see the module docstring)."""
    limiter: anyio.CapacityLimiter | None = getattr(request.app.state, "limiter", None)
    if limiter is None:
        limiter = request.app.state.limiter = anyio.CapacityLimiter(
            request.app.state.settings.blocking_threads
        )
    return await anyio.to_thread.run_sync(fn, *args, limiter=limiter)
