"""Progress of long steps (build stages, training epochs, evaluation, fetches...), one mechanism for
a terminal and a log.

`progress_bar` gives a rich `Progress` in every case; what it shows depends on where stderr goes:

- a terminal (or ``RECSTACK_PROGRESS=1``): live rich bars;
- a file or a pipe (``make demo > demo.log``, CI, a service manager): plain lines, at most one per
  task every ``RECSTACK_PROGRESS_INTERVAL`` seconds (default 5; 0 = every update), also while a
  step runs without updates (a heartbeat for the innermost running step), plus one when the task
  ends, with the step, done/total, the rate and the status::

      [progress] build 3/12 25% 0.41/s elapsed 7.3s eta 21.9s | evaluate ease

- ``--quiet`` / ``RECSTACK_QUIET=1`` (or ``RECSTACK_PROGRESS=0``): nothing.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    Task,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

T = TypeVar("T")

_QUIET = False


def set_quiet(quiet: bool) -> None:
    """Silence (or re-enable) every progress bar of the process."""
    global _QUIET
    _QUIET = quiet


def _quiet() -> bool:
    return (
        _QUIET
        or os.environ.get("RECSTACK_QUIET", "").lower() in {"1", "true", "yes"}
        or os.environ.get("RECSTACK_PROGRESS", "") == "0"
    )


def enabled() -> bool:
    """Live rich bars: stderr is a terminal (or ``RECSTACK_PROGRESS=1``) and not quiet."""
    if _quiet():
        return False
    return sys.stderr.isatty() or os.environ.get("RECSTACK_PROGRESS", "") == "1"


def lines_enabled() -> bool:
    """Plain progress lines: not quiet and no live bars (stderr is a file or a pipe)."""
    return not _quiet() and not enabled()


def line_interval() -> float:
    """Seconds between two lines of one task (``RECSTACK_PROGRESS_INTERVAL``, default 5)."""
    try:
        return max(0.0, float(os.environ.get("RECSTACK_PROGRESS_INTERVAL", "5")))
    except ValueError:
        return 5.0


def _seconds(s: float | None) -> str:
    if s is None:
        return "?"
    return f"{s:.1f}s" if s < 120 else f"{s / 60:.1f}min"


def _rate(speed: float | None) -> str:
    if not speed:
        return "-/s"
    return f"{speed:.3g}/s" if speed >= 0.01 else f"{60 * speed:.3g}/min"


def format_line(task: Task, *, ended: bool = False) -> str:
    """``[progress] <step> <done>/<total> <pct>% <rate> elapsed <t> eta <t> | <status>``; a task
    that ``ended`` (or is complete) has ``done`` before its status and no eta."""
    ended = ended or task.finished
    done = task.completed
    done_s = f"{done:,.0f}" if float(done).is_integer() else f"{done:,.1f}"
    parts = [f"[progress] {task.description}"]
    if task.total is not None:
        total = task.total
        parts.append(f"{done_s}/{total:,.0f}")
        if total:
            parts.append(f"{100 * done / total:.0f}%")
    else:
        parts.append(done_s)
    elapsed = (task.finished_time if task.finished else task.elapsed) or 0.0
    # the average rate since the start: in a log, a step that stalls shows a falling rate and a
    # growing eta, where rich's recent-window speed would repeat its last value
    speed = done / elapsed if elapsed > 0 else None
    parts.append(_rate(speed))
    parts.append(f"elapsed {_seconds(elapsed)}")
    if not ended and task.total is not None:
        eta = (task.total - done) / speed if speed else None
        parts.append(f"eta {_seconds(eta)}")
    status = str(task.fields.get("status", "") or "")
    if ended:
        status = f"done{' | ' + status if status else ''}"
    return " ".join(parts) + (f" | {status}" if status else "")


#: the line progresses that are running, innermost last (the heartbeat speaks for the innermost only)
_ACTIVE: list[_LineProgress] = []
_ACTIVE_LOCK = threading.Lock()


class _LineProgress(Progress):
    """A rich Progress whose live display is off and that writes `format_line` lines to stderr
    instead: the first update at least ``interval`` seconds after the task's last line (or start),
    a heartbeat line when a step runs for an interval without any update (for the innermost running
    progress only, so nested steps do not repeat each other), and a closing line for a task that
    lasted an interval or printed before."""

    def __init__(self, *columns: Any, interval: float, **kwargs: Any) -> None:
        super().__init__(*columns, **kwargs)
        self._interval = interval
        self._last: dict[TaskID, float] = {}
        self._printed: set[TaskID] = set()
        self._ended: set[TaskID] = set()
        self._line_lock = threading.Lock()
        self._stopping = threading.Event()
        self._heartbeat: threading.Thread | None = None

    def _beat(self) -> None:
        while not self._stopping.wait(self._interval):
            with _ACTIVE_LOCK:
                innermost = bool(_ACTIVE) and _ACTIVE[-1] is self
            if innermost:
                for task_id in list(self._tasks):
                    self._emit(task_id)

    def start(self) -> None:
        super().start()
        with _ACTIVE_LOCK:
            _ACTIVE.append(self)
        if self._interval > 0 and self._heartbeat is None:
            self._heartbeat = threading.Thread(target=self._beat, name="recstack-progress", daemon=True)
            self._heartbeat.start()

    def _emit(self, task_id: TaskID, *, closing: bool = False) -> None:
        with self._line_lock:
            task = self._tasks.get(task_id)
            if task is None or task_id in self._ended:
                return
            now = time.monotonic()
            if task.finished or closing:
                self._ended.add(task_id)
                if task_id not in self._printed and (task.elapsed or 0.0) < self._interval:
                    return
            elif now - self._last.get(task_id, now) < self._interval:
                return
            self._last[task_id] = now
            self._printed.add(task_id)
            line = format_line(task, ended=task_id in self._ended)
        sys.stderr.write(line + "\n")
        sys.stderr.flush()

    def add_task(self, description: str, *args: Any, **kwargs: Any) -> TaskID:
        task_id = super().add_task(description, *args, **kwargs)
        self._last[task_id] = time.monotonic()
        return task_id

    def update(self, task_id: TaskID, **kwargs: Any) -> None:
        super().update(task_id, **kwargs)
        self._emit(task_id)

    def advance(self, task_id: TaskID, advance: float = 1) -> None:
        super().advance(task_id, advance)
        self._emit(task_id)

    def stop(self) -> None:
        self._stopping.set()
        if self._heartbeat is not None:
            self._heartbeat.join()
            self._heartbeat = None
        with _ACTIVE_LOCK:
            if self in _ACTIVE:
                _ACTIVE.remove(self)
        for task_id in list(self._tasks):
            self._emit(task_id, closing=True)
        super().stop()


#: line width of tables written to a file or a pipe (rich would wrap them at 80 columns)
PIPE_WIDTH = 140


def console(*, stderr: bool = True) -> Console:
    """A rich Console (stderr by default); written to a file or a pipe it is `PIPE_WIDTH` wide, so
    that tables keep whole column names instead of being cut to 80 columns."""
    out = Console(stderr=stderr)
    return out if out.is_terminal else Console(stderr=stderr, width=PIPE_WIDTH)


@contextmanager
def progress_bar() -> Iterator[Progress]:
    """A rich Progress with the standard columns: live bars on a terminal, plain lines in a log
    (module docstring), nothing when quiet."""
    columns = (
        SpinnerColumn(),
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[status]}"),
    )
    prog: Progress
    if lines_enabled():
        prog = _LineProgress(*columns, interval=line_interval(), console=console(), disable=True)
    else:
        prog = Progress(*columns, console=console(), disable=not enabled(), transient=False)
    with prog:
        yield prog


def track(items: Iterable[T], description: str, total: int | None = None) -> Iterator[T]:
    """Iterate with a progress bar."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    with progress_bar() as prog:
        task = prog.add_task(description, total=total, status="")
        for item in items:
            yield item
            prog.advance(task)
