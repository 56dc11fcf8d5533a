"""The /experiments page and the experiment's HTML report in headless Chromium, against a real
server with an event log and an experiment whose arms differ on purpose (users of the popularity arm
click their top item, two thirds of the default arm's users do not): the verdict, the arms table,
the CTR forest plot, the drift panel, the list, and the empty / unknown states."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from recstack.experiments import Assigner, ExperimentConfig
from recstack.testing import ServerProcess, ServerStartError

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.ml100k]

SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
KEY = "e2e-key"
EXPERIMENT: dict[str, Any] = {
    "name": "popularity-vs-ranker",
    "description": "Does the two-stage ranker beat plain popularity?",
    "salt": "e2e",
    "k": 10,
    "arms": [
        {
            "name": "popularity",
            "model": "recall",
            "pipeline": {"sources": [{"name": "popular", "kind": "popular", "quota": 200}]},
        },
        {"name": "two_stage"},
    ],
}


@pytest.fixture(scope="module")
def exp_server(releases_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A server of its own: admin key, a fresh event log and experiments directory; drift shown
    from 20 events."""
    tmp = tmp_path_factory.mktemp("exp-ui")
    env = {
        "RECSTACK_SERVE_EXPERIMENTS_DIR": str(tmp / "experiments"),
        "RECSTACK_SERVE_DRIFT_MIN_EVENTS": "20",
    }
    args = ["--api-key", KEY, "--event-log", f"sqlite:///{tmp / 'events.db'}"]
    try:
        srv = ServerProcess(releases_dir, workers=1, args=args, env=env, timeout=120).start()
    except ServerStartError as exc:
        pytest.fail(f"the server did not become ready: {exc}")
    try:
        yield srv.url
    finally:
        srv.stop()


def _ready(page: Any) -> None:
    page.wait_for_selector("body[data-ready='true']", state="attached")


def _shot(page: Any, name: str, tmp_path: Path, max_height: int = 1800) -> None:
    out = SCREENSHOTS if os.environ.get("RECSTACK_UPDATE_SCREENSHOTS") == "1" else tmp_path
    out.mkdir(parents=True, exist_ok=True)
    height = min(int(page.evaluate("document.documentElement.scrollHeight")), max_height)
    path = out / f"{name}.png"
    page.screenshot(
        path=str(path),
        full_page=True,
        clip={"x": 0, "y": 0, "width": page.viewport_size["width"], "height": height},
    )
    assert path.stat().st_size > 10_000


def test_experiments_page_and_report(browser: Any, exp_server: str, tmp_path: Path) -> None:
    ctx = browser.new_context(viewport={"width": 1280, "height": 900}, base_url=exp_server)
    page = ctx.new_page()
    page.set_default_timeout(20_000)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))

    page.goto("/experiments")
    _ready(page)
    assert "No experiments yet" in page.inner_text("#experiment")

    with httpx.Client(base_url=exp_server, timeout=30) as c:
        r = c.post("/admin/experiments", json=EXPERIMENT, headers={"X-API-Key": KEY})
        assert r.status_code == 201 and r.json()["live"], r.text
        assign = Assigner(ExperimentConfig.from_config(EXPERIMENT))
        for n, user in enumerate(range(1, 121)):
            body = c.get(f"/v1/users/{user}/recommendations", params={"k": 10}).json()
            assert body["experiment"]["arm"] == assign(user)
            clicks = body["experiment"]["arm"] == "popularity" or n % 3 == 0
            if clicks:
                top = body["items"][0]["item_id"]
                assert (
                    c.post("/v1/events", json={"user_id": user, "item_id": top, "type": "click"}).status_code
                    == 201
                )
                c.post("/v1/events", json={"user_id": user, "item_id": top, "type": "rating", "rating": 4})
    page.goto("/experiments")
    _ready(page)
    assert page.inner_text("#experiment-name") == "popularity-vs-ranker"
    assert "live on this server" in page.inner_text("#experiment")
    verdict = page.inner_text("#exp-verdict")
    assert verdict.startswith("popularity is better on CTR"), verdict
    rows = page.locator("#arms tbody tr")
    assert rows.count() == 2
    assert page.locator("#arms tbody tr.winner th").inner_text().startswith("popularity")
    assert page.locator("#forest circle").count() == 2
    assert page.locator("#drift .drift-row").count() == 3
    assert page.locator("#experiments tbody tr").count() == 1
    _shot(page, "experiments", tmp_path, max_height=1600)

    page.click("#exp-report-link")
    page.wait_for_selector("h1:has-text('Experiment')")
    assert page.locator("img[src^='data:image/png']").count() == 3
    assert "popularity is better on CTR" in page.inner_text(".verdict")
    _shot(page, "experiment-report", tmp_path, max_height=2200)

    page.goto("/experiments?name=nope")
    _ready(page)
    assert "No experiment nope" in page.inner_text("#main")
    ctx.close()
    assert not errors, errors
