"""`recstack events info|export|compact`: look into the event log, export it to Parquet, compact it."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from recstack._progress import console
from recstack.cli._common import ReleasesDirOpt

if TYPE_CHECKING:
    from recstack.events import EventLog

app = typer.Typer(help="The event log: info, export to Parquet, compact.", no_args_is_help=True)

LogOpt = Annotated[
    str | None,
    typer.Option("--event-log", help="The event log (default: events/events.db beside the releases dir)."),
]


def _open(event_log: str | None, releases_dir: Path | None) -> EventLog:
    from recstack.errors import ConfigError
    from recstack.events import default_log_url, open_log
    from recstack.release import _cli

    log = open_log(event_log or default_log_url(_cli.releases_root(releases_dir)))
    if log is None:
        raise ConfigError("--event-log off: no log to look at")
    return log


@app.command("info")
def events_info(event_log: LogOpt = None, releases_dir: ReleasesDirOpt = None) -> None:
    """Where the log is, its id, offsets and event counts by type."""
    with _open(event_log, releases_dir) as log:
        df = log.to_frame()
        out = console()
        out.print(f"log {log.url} ({log.backend}, id {log.log_id})")
        out.print(f"offsets {log.first_offset()}..{log.last_offset()}, {log.count()} events held")
        for t, n in df.group_by("type").len().sort("type").iter_rows():
            out.print(f"  {t:<11} {n}")
        if df.height:
            out.print(f"users {df['user_id'].n_unique()}, items {df['item_id'].drop_nulls().n_unique()}")


@app.command("export")
def events_export(
    out: Annotated[Path, typer.Option("--out", help="Parquet file to write.")],
    after: Annotated[int, typer.Option("--after", min=0, help="Events with offset > after.")] = 0,
    upto: Annotated[int | None, typer.Option("--upto", min=0, help="... and <= upto.")] = None,
    event_log: LogOpt = None,
    releases_dir: ReleasesDirOpt = None,
) -> None:
    """Write events to a Parquet file (the schema of recstack.events.EVENT_SCHEMA)."""
    with _open(event_log, releases_dir) as log:
        n = log.export_parquet(str(out), after, upto)
    console().print(f"{n} events -> {out}")


@app.command("compact")
def events_compact(
    upto: Annotated[int, typer.Option("--upto", min=1, help="Remove events with offset <= upto.")],
    archive: Annotated[
        Path, typer.Option("--archive", help="Directory the removed events are exported to first (Parquet).")
    ],
    event_log: LogOpt = None,
    releases_dir: ReleasesDirOpt = None,
) -> None:
    """Export events up to an offset into the archive, then remove them from the log (builds read
    the archive with [dataset.events] archive = DIR)."""
    with _open(event_log, releases_dir) as log:
        first = log.first_offset()
        if first is None or first > upto:
            console().print("nothing to compact")
            return
        archive.mkdir(parents=True, exist_ok=True)
        path = archive / f"events-{first:012d}-{upto:012d}.parquet"
        n = log.export_parquet(str(path), first - 1, upto)
        removed = log.compact(upto)
    console().print(f"{n} events archived to {path}, {removed} removed from the log")
