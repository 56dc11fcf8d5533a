"""Browser end-to-end fixtures: a real ML-100K release, the real server (uvicorn subprocess on a free
port) and headless Debian Chromium driven by Playwright (never ``playwright install``).

The release pair (a parent without evaluation, then the served child with evaluation, report.html
and an item-kNN / EASE / two-stage catalogue) is built once and reused from the pytest cache
(``.pytest_cache/d/recstack-e2e-releases``) while the build configs, the package version and the
report's plotting code (`recstack.evaluation.report`) are unchanged. Page-load timings collected by
the tests are written to ``benchmarks/results/web.json`` at the end of the session.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import statistics
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from recstack.testing import ServerProcess, ServerStartError, build_release

# the semantics of tests/conftest.py::require_service (that module cannot be imported by name from
# here: pytest imports every conftest.py as `conftest`)
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def require_service(name: str, reason: str) -> None:
    """Skip locally when a service is missing; in CI a missing service is a failure."""
    if IN_CI:
        pytest.fail(f"{name} is required in CI: {reason}")
    pytest.skip(f"{name} not available: {reason}")


REPO = Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get("RECSTACK_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
RESULTS = REPO / "benchmarks" / "results" / "web.json"

PARENT_TOML = """
[dataset]
source = "ml-100k"
[evaluation]
enabled = false
report = false
[features]
enabled = false
[[models]]
name = "pop"
[[models]]
name = "itemknn"
[index]
backend = "none"
"""

# The served release: evaluation (metrics.json + report.html with plots), three retrievers for the
# similar-movies switch, and a small two-stage ranker (listed by /v1/release as a ranking model, or
# as unavailable when serving cannot build its inputs).
CHILD_TOML = """
[dataset]
source = "ml-100k"
[evaluation]
enabled = true
max_k = 20
refit_full = false
[[models]]
name = "pop"
[[models]]
name = "itemknn"
[[models]]
name = "ease"
[[models]]
name = "two_stage:dnn"
alias = "ranker"
evaluate = false
params = { sources = ["itemknn", "pop"], holdout = "random", per_source = 30, random_negatives = 5, \
ranker_grid = [{}], ranker_params = { epochs = 1, num_threads = 1 } }
[index]
backend = "none"
[headline]
model = "ease"
"""


def _build_releases(root: Path) -> str:
    """Build parent then child into ``root`` and promote the child to production -> child id."""
    build_release(root, PARENT_TOML, force=True)
    return build_release(root, CHILD_TOML, force=True)


@pytest.fixture(scope="session")
def releases_dir(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A releases dir whose production release is the e2e child release (built or reused)."""
    from recstack import __version__
    from recstack.release.registry import Registry

    # the report's plots are drawn at build time: a change to them rebuilds the cached release
    report_src = (REPO / "src" / "recstack" / "evaluation" / "report.py").read_bytes()
    # ... and the cold-start verdict (cold_start.json) is computed at build time too
    cold_src = (REPO / "src" / "recstack" / "evaluation" / "cold_users.py").read_bytes()
    key = hashlib.sha256(
        f"{__version__}\n{PARENT_TOML}\n{CHILD_TOML}\n".encode()
        + hashlib.sha256(report_src).digest()
        + hashlib.sha256(cold_src).digest()
    ).hexdigest()[:12]
    cache = getattr(request.config, "cache", None)  # None under -p no:cacheprovider
    base = Path(cache.mkdir("recstack-e2e-releases")) if cache is not None else tmp_path_factory.mktemp("e2e")
    root = base / key
    stamp = root / "e2e.json"
    if stamp.is_file():
        try:
            rid = json.loads(stamp.read_text())["release_id"]
            if Registry(root).resolve("production") == rid:
                return root
        except Exception:  # a broken cache is rebuilt
            pass
        shutil.rmtree(root, ignore_errors=True)
    rid = _build_releases(root)
    stamp.write_text(json.dumps({"release_id": rid}))
    return root


@dataclass
class Server:
    url: str
    releases_dir: Path
    release: dict[str, Any] = field(default_factory=dict)


@pytest.fixture(scope="session")
def server(releases_dir: Path) -> Iterator[Server]:
    """The real API + web UI: ``recstack serve`` (one uvicorn worker) on a free port."""
    try:
        srv = ServerProcess(releases_dir, workers=1, timeout=120).start()
    except ServerStartError as exc:
        pytest.fail(f"the web server did not become ready: {exc}")
    try:
        yield Server(srv.url, releases_dir, httpx.get(f"{srv.url}/v1/release", timeout=10).json())
    finally:
        srv.stop()


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    """Headless Debian Chromium (in CI a missing chromium fails, locally it skips)."""
    if not Path(CHROMIUM).is_file():
        require_service("chromium", f"{CHROMIUM} is missing; `make sysdeps` (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


class PageErrors(list[str]):
    """Uncaught JavaScript errors of a page (the tests assert there are none)."""


@pytest.fixture
def page(browser: Any, server: Server) -> Iterator[Any]:
    """A fresh desktop-sized page (1280x900) with ``base_url`` set to the server."""
    ctx = browser.new_context(viewport={"width": 1280, "height": 900}, base_url=server.url)
    pg = ctx.new_page()
    pg.set_default_timeout(15_000)
    errors = PageErrors()
    pg.on("pageerror", lambda exc: errors.append(str(exc)))
    pg.js_errors = errors
    try:
        yield pg
    finally:
        ctx.close()
    assert not errors, f"uncaught JavaScript errors: {errors}"


# ------------------------------------------------------------------------------------ page-load timing
@pytest.fixture(scope="session")
def load_times() -> Iterator[dict[str, list[dict[str, float]]]]:
    """page name -> samples of navigation timings (ms); written to benchmarks/results/web.json when
    ``RECSTACK_RECORD_WEB_TIMINGS=1`` (a measurement run: ``RECSTACK_RECORD_WEB_TIMINGS=1 pytest
    tests/e2e``), so that an ordinary test run leaves the checkout as it was."""
    samples: dict[str, list[dict[str, float]]] = {}
    yield samples
    if not samples or os.environ.get("RECSTACK_RECORD_WEB_TIMINGS") != "1":
        return
    pages: dict[str, Any] = {}
    for name, runs in samples.items():
        dcl = [r["dom_content_loaded_ms"] for r in runs]
        pages[name] = {
            "path": runs[0]["path"],
            "runs": len(runs),
            "dom_content_loaded_ms_median": round(statistics.median(dcl), 2),
            "dom_content_loaded_ms_max": round(max(dcl), 2),
            "load_event_ms_median": round(statistics.median(r["load_ms"] for r in runs), 2),
            "data_ready_ms_median": round(statistics.median(r["ready_ms"] for r in runs), 2),
            "under_target": statistics.median(dcl) < 300.0,
        }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    load = os.getloadavg() if hasattr(os, "getloadavg") else (0.0, 0.0, 0.0)
    RESULTS.write_text(
        json.dumps(
            {
                "benchmark": "web page load (DOMContentLoaded) on localhost",
                "protocol": (
                    "tests/e2e: headless Debian Chromium via Playwright, 1280x900, real uvicorn server "
                    "(1 worker) serving an ML-100K release; each page loaded once to warm up, then "
                    "N times; DOMContentLoaded = performance.getEntriesByType('navigation')[0]"
                    ".domContentLoadedEventEnd; data_ready = the page script finished its API calls"
                ),
                "target_ms": 300,
                "ci": IN_CI,
                "machine": {
                    "python": platform.python_version(),
                    "cpus": os.cpu_count(),
                    "load_average_1m": round(load[0], 2),
                },
                "pages": pages,
            },
            indent=2,
        )
        + "\n"
    )
