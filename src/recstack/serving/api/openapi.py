"""``/openapi.json`` with the served release's limits, and the docs pages served from the package.

Some request constraints depend on the release being served: the genre names, the ranker variants
(``model``), the retrievers of ``/similar``, ``k_max``, and the newest timestamp an event may carry
(the end of tomorrow, UTC: `recstack.serving.api.schemas.latest_timestamp`). The request models mark
such fields with ``x-recstack``
(`recstack.serving.api.schemas`); `install_openapi` fills them in on every ``/openapi.json`` from the
current release, so the schema says exactly what the server accepts (schemathesis checks both
ways: valid data accepted, invalid data refused).

Swagger UI (``/docs``) and ReDoc (``/redoc``) load their JavaScript and CSS from ``/static-docs``:
the assets that the ``fastapi-offline`` package ships, so the docs work without network access.
"""

from __future__ import annotations

import copy
from importlib.resources import files
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from starlette.responses import HTMLResponse

from recstack.serving.api.schemas import INT_ID_STRING, MAX_INT_ID, latest_timestamp

__all__ = ["DOCS_STATIC", "fill_limits", "install_docs", "install_openapi"]

#: URL prefix of the Swagger UI / ReDoc assets
DOCS_STATIC = "/static-docs"


def _assets_dir() -> Path:
    return Path(str(files("fastapi_offline") / "static"))


def _new_item_id_schema(integer_ids: bool) -> dict[str, Any]:
    """``POST /v1/items``' ``item_id``: integers (or digit strings) for a catalogue with integer ids."""
    if not integer_ids:
        return {}
    return {
        "anyOf": [
            {"type": "integer", "minimum": -MAX_INT_ID, "maximum": MAX_INT_ID},
            {"type": "string", "pattern": f"^{INT_ID_STRING.pattern}$"},
        ]
    }


def fill_limits(schema: Any, state: Any) -> None:
    """Replace every ``x-recstack`` marker of ``schema`` (in place) with the limits of ``state``."""
    pipeline = state.pipeline
    similar = pipeline.similar_models()
    values: dict[str, dict[str, Any]] = {
        "genre": {"enum": list(pipeline.catalog.genre_names)},
        "model": {"enum": list(pipeline.models)},
        "similar_model": {"enum": similar} if similar else {"enum": ["pop"]},
        "k": {"maximum": int(pipeline.config.k_max)},
        "timestamp": {"maximum": latest_timestamp()},
        "new_item_id": _new_item_id_schema(pipeline.catalog.dataset.item_vocab.is_integer),
    }

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            marker = node.get("x-recstack")
            if isinstance(marker, str) and marker in values:
                node.update(values[marker])
                if "enum" in values[marker]:
                    for k in ("minLength", "maxLength", "pattern"):
                        node.pop(k, None)
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(schema)


def install_openapi(app: FastAPI) -> None:
    """``app.openapi()`` = FastAPI's schema (built once) with the current release's limits."""
    base = app.openapi

    def openapi() -> dict[str, Any]:
        schema = copy.deepcopy(base())
        state = getattr(app.state.holder, "current", None)
        if state is not None:
            fill_limits(schema, state)
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def install_docs(app: FastAPI, favicon: str = "/static/favicon.svg") -> None:
    """``/docs`` (Swagger UI) and ``/redoc`` on assets served from the package."""
    from starlette.staticfiles import StaticFiles

    app.mount(DOCS_STATIC, StaticFiles(directory=_assets_dir()), name="static-docs")
    openapi_url = app.openapi_url or "/openapi.json"

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=openapi_url,
            title=f"{app.title} - API docs",
            swagger_js_url=f"{DOCS_STATIC}/swagger-ui-bundle.js",
            swagger_css_url=f"{DOCS_STATIC}/swagger-ui.css",
            swagger_favicon_url=favicon,
        )

    @app.get("/redoc", include_in_schema=False)
    async def redoc() -> HTMLResponse:
        return get_redoc_html(
            openapi_url=openapi_url,
            title=f"{app.title} - ReDoc",
            redoc_js_url=f"{DOCS_STATIC}/redoc.standalone.js",
            redoc_favicon_url=favicon,
            with_google_fonts=False,
        )
