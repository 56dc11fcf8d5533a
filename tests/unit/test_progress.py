"""Progress of long steps in a log: one mechanism (`recstack._progress.progress_bar`) that draws rich
bars on a terminal and writes plain lines (step, done/total, rate) when stderr is a file or a pipe."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator

import pytest

from recstack import _progress

LINE = re.compile(
    r"^\[progress\] (?P<step>.+?) (?P<done>[\d,.]+)/(?P<total>[\d,]+) (?P<pct>\d+)% (?P<rate>\S+/(s|min)) "
    r"elapsed \S+(?: eta \S+)?(?: \| (?P<status>.*))?$"
)


@pytest.fixture
def log_mode(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    """stderr captured by pytest (not a TTY), progress neither forced nor quiet."""
    for var in ("RECSTACK_PROGRESS", "RECSTACK_QUIET", "RECSTACK_PROGRESS_INTERVAL"):
        monkeypatch.delenv(var, raising=False)
    _progress.set_quiet(False)
    yield monkeypatch
    _progress.set_quiet(False)


def _run(n: int) -> None:
    with _progress.progress_bar() as prog:
        task = prog.add_task("fit als", total=n, status="")
        for i in range(n):
            prog.update(task, advance=1, status=f"iteration {i + 1}")


def test_lines_in_a_log_every_update_at_interval_zero(
    log_mode: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    log_mode.setenv("RECSTACK_PROGRESS_INTERVAL", "0")
    assert not _progress.enabled() and _progress.lines_enabled()
    _run(4)
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 4, lines  # one per update; the last one closes the task
    parsed = [LINE.match(line) for line in lines]
    assert all(parsed), lines
    assert [(m["step"], m["done"], m["total"]) for m in parsed if m] == [
        ("fit als", str(i), "4") for i in range(1, 5)
    ]
    assert [m["pct"] for m in parsed if m] == ["25", "50", "75", "100"]
    assert parsed[0] is not None and parsed[0]["status"] == "iteration 1"
    assert parsed[-1] is not None and parsed[-1]["status"] == "done | iteration 4"
    assert "eta" not in lines[-1] and "eta" in lines[0]


def test_a_short_task_stays_silent_between_intervals(
    log_mode: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    log_mode.setenv("RECSTACK_PROGRESS_INTERVAL", "600")
    _run(50)
    assert capsys.readouterr().err == ""  # shorter than one interval: no line at all


def test_quiet_writes_nothing(log_mode: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    log_mode.setenv("RECSTACK_PROGRESS_INTERVAL", "0")
    _progress.set_quiet(True)
    assert not _progress.lines_enabled()
    _run(3)
    log_mode.setenv("RECSTACK_QUIET", "1")
    _progress.set_quiet(False)
    _run(3)
    assert capsys.readouterr().err == ""


def test_forced_bars_replace_the_lines(
    log_mode: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    log_mode.setenv("RECSTACK_PROGRESS", "1")
    log_mode.setenv("RECSTACK_PROGRESS_INTERVAL", "0")
    assert _progress.enabled() and not _progress.lines_enabled()
    _run(3)
    err = capsys.readouterr().err
    assert "[progress]" not in err and "fit als" in err  # rich's bar, not the log lines


def test_unknown_total_reports_count_and_rate(
    log_mode: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    log_mode.setenv("RECSTACK_PROGRESS_INTERVAL", "0")
    with _progress.progress_bar() as prog:
        task = prog.add_task("download", total=None, status="")
        prog.advance(task, 1024)
    (line,) = capsys.readouterr().err.splitlines()[:1]
    assert re.match(r"^\[progress\] download 1,024 \S+/(s|min) elapsed \S+$", line), line


def test_heartbeat_while_a_step_runs_without_updates(
    log_mode: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    log_mode.setenv("RECSTACK_PROGRESS_INTERVAL", "0.2")
    with _progress.progress_bar() as outer:
        build = outer.add_task("build", total=3, status="evaluate ease")
        outer.advance(build)
        with _progress.progress_bar() as inner:
            inner.add_task("fit ease", total=2, status="")
            time.sleep(1.1)  # one long call, no update: the innermost step still reports
        outer.advance(build, 2)
    lines = capsys.readouterr().err.splitlines()
    parsed = [m for m in map(LINE.match, lines) if m]
    assert len(parsed) == len(lines), lines
    inner_beats = [
        m for m in parsed if m["step"] == "fit ease" and not (m["status"] or "").startswith("done")
    ]
    assert len(inner_beats) >= 2 and {m["done"] for m in inner_beats} == {"0"}, lines
    # while the inner step runs, the outer one does not repeat itself
    outer_lines = [m for m in parsed if m["step"] == "build"]
    assert [m["done"] for m in outer_lines][-1] == "3" and len(outer_lines) <= 3, lines
    assert parsed[-1]["status"] == "done | evaluate ease"


def test_a_stalled_step_shows_a_falling_rate_and_a_growing_eta(
    log_mode: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    log_mode.setenv("RECSTACK_PROGRESS_INTERVAL", "0.2")
    with _progress.progress_bar() as prog:
        task = prog.add_task("evaluate", total=4, status="")
        prog.advance(task)
        time.sleep(1.0)
    beats = [m for m in map(LINE.match, capsys.readouterr().err.splitlines()) if m and m["done"] == "1"]
    assert len(beats) >= 3
    rates = [float(m["rate"].removesuffix("/s")) for m in beats if m["rate"].endswith("/s")]
    etas = [float(e) for e in re.findall(r"eta ([\d.]+)s", "\n".join(m.string for m in beats))]
    assert len(rates) >= 3 and rates == sorted(rates, reverse=True) and rates[0] > rates[-1]
    assert len(etas) >= 3 and etas == sorted(etas) and etas[-1] > etas[0]
