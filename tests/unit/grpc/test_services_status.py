"""``recstack services status`` exits 1 when no service runs (issue 17, item 6: it exited 0 after
``services stop`` although its help says 1)."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from recstack.cli import app


def test_status_of_nothing_running_is_exit_1(tmp_path: Path) -> None:
    res = CliRunner().invoke(app, ["services", "status", "--run-dir", str(tmp_path)])
    assert res.exit_code == 1, res.output
    assert "user" in res.output and "aggregator" in res.output  # the table still lists every service
