"""Progress bars for long steps: rich when on a terminal, silent under --quiet or without a TTY."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
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


def enabled() -> bool:
    if _QUIET or os.environ.get("RECSTACK_QUIET", "").lower() in {"1", "true", "yes"}:
        return False
    return sys.stderr.isatty() or os.environ.get("RECSTACK_PROGRESS", "") == "1"


#: line width of tables written to a file or a pipe (rich would wrap them at 80 columns)
PIPE_WIDTH = 140


def console(*, stderr: bool = True) -> Console:
    """A rich Console (stderr by default); written to a file or a pipe it is `PIPE_WIDTH` wide, so
    that tables keep whole column names instead of being cut to 80 columns."""
    out = Console(stderr=stderr)
    return out if out.is_terminal else Console(stderr=stderr, width=PIPE_WIDTH)


@contextmanager
def progress_bar() -> Iterator[Progress]:
    """A rich Progress with the standard columns; disabled (no output) when progress is off."""
    prog = Progress(
        SpinnerColumn(),
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[status]}"),
        console=console(),
        disable=not enabled(),
        transient=False,
    )
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
