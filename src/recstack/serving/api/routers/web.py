"""The web UI (issue 6): HTML pages and the release-page API routes they call.

Pages (plain HTML shells; ``/static/app.js`` fills them in with ``fetch()`` calls to the REST API):

- ``GET /``                      home: popular movies by genre, title search with type-ahead
- ``GET /movies/{item_id}``      one movie and its similar movies (model switch)
- ``GET /users/{user_id}``       a user's stats, rating histogram, watched list, recommendations
- ``GET /start``                 onboarding of a new visitor (liked movies and / or a profile)
- ``GET /release``               the serving release, its lineage and its evaluation report
- ``GET /experiments``           the running (or ``?name=``) experiment's arms with confidence
                                 intervals, input drift, and every experiment

API routes added for the release page (JSON unless said otherwise):

- ``GET /v1/release/lineage``          channels and the parent chain of the serving release
- ``GET /v1/release/evaluation``       the holdout metrics table (``metrics.json``) and plot URLs
- ``GET /v1/release/report``           the release's ``report.html`` (HTML)
- ``GET /v1/release/report/plots/{n}`` the n-th plot of ``report.html`` (PNG bytes)
"""

from __future__ import annotations

import base64
import json
import re
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter
from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from recstack import __version__
from recstack.errors import ArtifactError, NotFoundError
from recstack.serving._state import ServingState
from recstack.serving.api._json import JSONBody, request_id
from recstack.serving.api.deps import current_state
from recstack.serving.api.schemas import ErrorResponse

__all__ = ["WEB_DIR", "not_found_page", "render_page", "router"]

WEB_DIR = Path(__file__).resolve().parents[2] / "web"

router = APIRouter()

_PAGES: dict[str, str] = {
    "home": "Popular movies",
    "movie": "Movie",
    "user": "User",
    "start": "Get started",
    "release": "Release",
    "experiments": "Experiments",
    "notfound": "Page not found",
}

#: paths of the API (and of what serves it): an unknown URL there stays a JSON error
_API_PATH = re.compile(
    r"^/(v\d+|admin|healthz|readyz|metrics|docs|redoc|openapi\.json|static|static-docs)(/|$)"
)

_IMG_RE = re.compile(r'<img\s+alt="([^"]*)"\s+src="data:image/png;base64,([A-Za-z0-9+/=\s]+)"')


@lru_cache(maxsize=1)
def _env() -> Environment:
    return Environment(
        loader=FileSystemLoader(WEB_DIR / "templates"),
        autoescape=select_autoescape(["html"]),
        trim_blocks=True,
        lstrip_blocks=True,
    )


def render_page(page: str, **context: Any) -> str:
    """The HTML shell of one page (``page`` in home / movie / user / start / release)."""
    if page not in _PAGES:
        raise NotFoundError(f"unknown page {page!r}; pages: {', '.join(_PAGES)}")
    tpl = _env().get_template("page.html")
    return tpl.render(page=page, title=_PAGES[page], version=__version__, **context)


def _html(page: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    return HTMLResponse(
        render_page(page, **context), status_code=status_code, headers={"Cache-Control": "no-cache"}
    )


def not_found_page(request: Request) -> Response | None:
    """The HTML 404 page for an unknown URL a browser asked for outside the API (None: answer JSON,
    as every API path and every client that does not ask for HTML gets)."""
    if request.method not in ("GET", "HEAD") or _API_PATH.match(request.url.path):
        return None
    if "text/html" not in request.headers.get("accept", ""):
        return None
    return _html("notfound", status_code=404, path=request.url.path)


# --------------------------------------------------------------------------------------------- pages
@router.get("/", include_in_schema=False)
async def home_page() -> HTMLResponse:
    return _html("home")


@router.get("/movies/{item_id}", include_in_schema=False)
async def movie_page(item_id: str) -> HTMLResponse:
    return _html("movie", item_id=item_id)


@router.get("/users/", include_in_schema=False)
async def user_jump(id: str = "") -> Response:
    """The header's "User id" form without JavaScript: ``/users/?id=42`` -> ``/users/42``."""
    uid = id.strip()
    return RedirectResponse(f"/users/{quote(uid, safe='')}" if uid else "/", status_code=303)


@router.get("/users/{user_id}", include_in_schema=False)
async def user_page(user_id: str) -> HTMLResponse:
    return _html("user", user_id=user_id)


@router.get("/start", include_in_schema=False)
async def start_page() -> HTMLResponse:
    return _html("start")


@router.get("/release", include_in_schema=False)
async def release_page() -> HTMLResponse:
    return _html("release")


@router.get("/experiments", include_in_schema=False)
async def experiments_page() -> HTMLResponse:
    return _html("experiments")


# ------------------------------------------------------------------------------------ release helpers
def _release_dir(state: ServingState) -> Path | None:
    path = getattr(state.release, "path", None)
    return Path(path) if path is not None else None


def _releases_root(state: ServingState) -> Path | None:
    d = _release_dir(state)
    if d is not None and (d / "manifest.json").is_file():
        return d.parent
    return None


def _report_path(state: ServingState) -> Path:
    report = getattr(state.release, "report_path", None)
    if report is None:
        d = _release_dir(state)
        report = d / "report.html" if d is not None else None
    if report is None or not Path(report).is_file():
        raise NotFoundError(
            f"release {state.release_id} has no report.html; build it with evaluation enabled "
            "([evaluation] report = true in the build config)"
        )
    return Path(report)


@lru_cache(maxsize=4)
def _plots(path: str, mtime: float) -> tuple[tuple[str, bytes], ...]:
    """(alt text, PNG bytes) of every inline plot of a report.html (cached per file version)."""
    text = Path(path).read_text(encoding="utf-8", errors="replace")
    return tuple((alt, base64.b64decode("".join(b64.split()))) for alt, b64 in _IMG_RE.findall(text))


def _report_plots(state: ServingState) -> tuple[tuple[str, bytes], ...]:
    path = _report_path(state)
    return _plots(str(path), path.stat().st_mtime)


# ----------------------------------------------------------------------------------- release routes
_404: dict[int | str, dict[str, Any]] = {404: {"model": ErrorResponse, "description": "no such artifact"}}


@router.get("/v1/release/lineage", tags=["ops"], summary="Channels and the parent chain of the release")
async def release_lineage(request: Request) -> Response:
    state = current_state(request)
    root = _releases_root(state)
    channels: dict[str, str] = {}
    chain: list[dict[str, Any]] = []
    if root is not None:
        from recstack.release.registry import Registry

        reg = Registry(root)
        try:
            channels = reg.channel_targets()
            lineage = reg.lineage(state.release_id)
        except ArtifactError:
            lineage = [(state.release_id, None)]
        for rid, m in lineage:
            entry: dict[str, Any] = {"release_id": rid, "available": m is not None}
            if m is not None:
                entry.update(
                    created_at=m.created_at.isoformat(timespec="seconds"),
                    package_version=m.package_version,
                    git_commit=m.git_commit,
                    dataset=m.dataset.name,
                    models=sorted(m.metrics) or sorted(m.artifacts.retrievers),
                    headline=(
                        {"model": m.headline.model, "metric": m.headline.metric, "value": m.headline_value()}
                        if m.headline is not None
                        else None
                    ),
                    size_bytes=m.total_size(),
                )
            entry["channels"] = sorted(ch for ch, cur in channels.items() if cur == rid)
            chain.append(entry)
    else:
        chain.append({"release_id": state.release_id, "available": False, "channels": []})
    return JSONBody(
        {
            "request_id": request_id(request),
            "release_id": state.release_id,
            "channels": channels,
            "lineage": chain,
        }
    )


@router.get(
    "/v1/release/evaluation",
    tags=["ops"],
    responses=_404,
    summary="Holdout metrics of the release (metrics.json) and the plots of its report",
)
async def release_evaluation(request: Request) -> Response:
    state = current_state(request)
    d = _release_dir(state)
    metrics_path = d / "metrics.json" if d is not None else None
    if metrics_path is None or not metrics_path.is_file():
        raise NotFoundError(
            f"release {state.release_id} has no metrics.json; build it with `recstack build` "
            "(evaluation enabled)"
        )
    try:
        data = json.loads(metrics_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"{metrics_path}: unreadable metrics ({exc})") from exc
    results: dict[str, dict[str, Any]] = {
        name: {k: v for k, v in m.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        for name, m in (data.get("results") or {}).items()
        if isinstance(m, dict)
    }
    try:
        plots = [
            {"alt": alt, "url": f"/v1/release/report/plots/{n}"}
            for n, (alt, _) in enumerate(_report_plots(state))
        ]
        has_report = True
    except NotFoundError:
        plots, has_report = [], False
    return JSONBody(
        {
            "request_id": request_id(request),
            "release_id": state.release_id,
            "dataset": data.get("dataset"),
            "protocol": data.get("protocol"),
            "seed": data.get("seed"),
            "counts": data.get("counts") or {},
            "skipped": data.get("skipped") or {},
            "results": results,
            # temporal-rolling: the windows and the paired bootstrap CIs between models (warm / cold users)
            "windows": data.get("windows") or [],
            "comparisons": data.get("comparisons") or {},
            "report_url": "/v1/release/report" if has_report else None,
            "plots": plots,
        }
    )


@router.get("/v1/release/report", tags=["ops"], responses=_404, summary="The release's report.html")
async def release_report(request: Request) -> Response:
    state = current_state(request)
    return Response(_report_path(state).read_bytes(), media_type="text/html; charset=utf-8")


@router.get(
    "/v1/release/report/plots/{n}", tags=["ops"], responses=_404, summary="One plot of report.html (PNG)"
)
async def release_plot(request: Request, n: int) -> Response:
    state = current_state(request)
    plots = _report_plots(state)
    if not 0 <= n < len(plots):
        raise NotFoundError(f"report.html of {state.release_id} has {len(plots)} plots (0..{len(plots) - 1})")
    return Response(plots[n][1], media_type="image/png", headers={"Cache-Control": "max-age=3600"})
