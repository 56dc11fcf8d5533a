"""`recstack experiments create|list|stop|report` on a releases dir with an event log holding one
impression and its click (worked out by hand: 1 user, 2 items shown, 1 click -> CTR 0.5)."""

from __future__ import annotations

import json
import time
from pathlib import Path

from typer.testing import CliRunner

from recstack.cli import app
from recstack.events import NewEvent, open_log


def test_create_list_report_stop(tmp_path: Path) -> None:
    releases = tmp_path / "releases"
    releases.mkdir()
    runner = CliRunner()
    base = ["--releases-dir", str(releases)]
    res = runner.invoke(
        app, ["experiments", "create", "--name", "t1", "--arm", "a:1", "--arm", "b:3:recall", *base]
    )
    assert res.exit_code == 0, res.output
    assert "a 25.0%" in res.output and "b 75.0%" in res.output
    res = runner.invoke(app, ["experiments", "create", "--name", "t2", "--arm", "x", *base])
    assert res.exit_code != 0 and "stop it first" in str(res.exception or res.output)

    log = open_log(f"sqlite:///{tmp_path / 'events' / 'events.db'}")
    assert log is not None
    now = time.time()
    payload = {"experiment": "t1", "arm": "a", "items": ["10", "11"], "positions": [1, 2], "k": 2}
    log.append(
        [
            NewEvent(
                type="impression", user_id="u1", item_id=None, ts=int(now), received=now, payload=payload
            ),
            NewEvent(type="click", user_id="u1", item_id="11", ts=int(now), received=now + 1),
        ]
    )
    log.close()
    out = tmp_path / "rep.json"
    html = tmp_path / "rep.html"
    res = runner.invoke(
        app,
        [
            "experiments",
            "report",
            "t1",
            "--json",
            str(out),
            "--html",
            str(html),
            "--catalog-size",
            "4",
            *base,
        ],
    )
    assert res.exit_code == 0, res.output
    rep = json.loads(out.read_text())
    assert rep["arms"]["a"]["clicks"] == 1 and rep["arms"]["a"]["ctr"]["value"] == 0.5
    assert rep["arms"]["a"]["coverage"] == 0.5 and rep["arms"]["b"]["users"] == 0
    assert "<img" in html.read_text()
    res = runner.invoke(app, ["experiments", "list", *base])
    assert res.exit_code == 0 and "t1" in res.output and "running" in res.output
    res = runner.invoke(app, ["experiments", "stop", "t1", *base])
    assert res.exit_code == 0 and "stopped" in res.output
    res = runner.invoke(app, ["experiments", "create", "--name", "t2", "--arm", "x", *base])
    assert res.exit_code == 0, res.output
