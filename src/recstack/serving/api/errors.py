"""Exception handlers: every error is JSON ``{"error": {"code", "message"}, "request_id"}`` with the
status of its `recstack.errors` class; validation errors are 422 with what is allowed; a 405 says
which methods the path allows (``Allow``); nothing leaks a traceback and nothing the caller sends
yields a 500.

Logging: an expected 503 (a store unavailable, not ready) is one WARNING line; other 5xx are one
ERROR line; an unexpected exception is logged once, with its traceback, by
`recstack.serving.api.middleware` (which also answers it, so the client keeps its connection)."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import compile_path

from recstack.errors import RecstackError
from recstack.serving.api._json import JSONBody, request_id

__all__ = ["error_response", "install_error_handlers", "internal_error_body"]

log = logging.getLogger(__name__)

_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "too_large",
    422: "invalid_argument",
    503: "unavailable",
}


def error_response(
    request: Request, status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> Response:
    return JSONBody(
        {"error": {"code": code, "message": message}, "request_id": request_id(request)},
        status_code=status,
        headers=headers,
    )


def internal_error_body(rid: str) -> dict[str, object]:
    return {
        "error": {"code": "internal_error", "message": "internal error; the server log has the details"},
        "request_id": rid,
    }


def _allowed_methods(request: Request, raised: str) -> list[str]:
    """Every method the path allows: the route's own (``raised``, from Starlette) and those of the
    other routes of the same path in the OpenAPI schema (GET and POST /admin/reload are two routes)."""
    app = request.app
    patterns = getattr(app.state, "allow_patterns", None)
    if patterns is None:
        patterns = []
        for template, ops in (app.openapi().get("paths") or {}).items():
            regex, _, _ = compile_path(template)
            patterns.append((regex, {m.upper() for m in ops if m != "parameters"}))
        app.state.allow_patterns = patterns
    methods = {m.strip() for m in raised.split(",") if m.strip()}
    for regex, ms in patterns:
        if regex.match(request.url.path):
            methods |= ms
    if "GET" in methods:
        methods.add("HEAD")
    return sorted(methods)


def _describe(err: dict[str, Any]) -> str:
    loc = ".".join(str(p) for p in err.get("loc", ()) if p not in ("body",)) or "request"
    msg = str(err.get("msg", "invalid value"))
    if "input" in err and err.get("type") != "missing" and not isinstance(err["input"], dict | list):
        got = repr(err["input"])
        return f"{loc}: {msg} (got {got if len(got) <= 80 else got[:77] + '...'})"
    return f"{loc}: {msg}"


async def _recstack_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RecstackError)
    if exc.http_status == 503:
        log.warning("request %s: %s", request_id(request), exc.message)
    elif exc.http_status >= 500:
        log.error("request %s failed: %s", request_id(request), exc.message)
    return error_response(request, exc.http_status, exc.code, exc.message)


async def _validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    msgs = [_describe(e) for e in exc.errors()]
    return error_response(request, 422, "invalid_argument", "; ".join(msgs) or "invalid request")


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    code = _HTTP_CODES.get(exc.status_code, "http_error")
    msg = str(exc.detail)
    headers = dict(exc.headers or {})
    if exc.status_code == 404 and msg == "Not Found":
        page = getattr(request.app.state, "not_found_page", None)  # the web UI's HTML 404 page
        html = page(request) if page is not None else None
        if isinstance(html, Response):
            return html
        msg = f"no endpoint {request.url.path}; see /docs for the API"
    elif exc.status_code == 405:
        headers["Allow"] = ", ".join(_allowed_methods(request, headers.get("Allow", "")))
        msg = f"{request.method} is not allowed on {request.url.path}; allowed: {headers['Allow']}"
    elif exc.status_code == 413:
        limit = request.app.state.settings.max_body_bytes
        msg = f"request body larger than {limit:,} bytes (the server's max_body_bytes)"
    return error_response(request, exc.status_code, code, msg, headers or None)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(RecstackError, _recstack_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
