"""`recstack retrain`: base data + the event log -> a candidate, gated on recent events, promoted
when it is not worse; ``--every 6h`` repeats it in the foreground."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated

import typer

from recstack._progress import console
from recstack.cli._common import ChannelOpt, ReleasesDirOpt


def retrain_cmd(
    config: Annotated[
        Path | None,
        typer.Option("--config", help="Pipeline TOML of the releases (default: the bundled default)."),
    ] = None,
    event_log: Annotated[
        str | None,
        typer.Option(
            "--event-log", help="The event log (default: events/events.db beside the releases dir)."
        ),
    ] = None,
    releases_dir: ReleasesDirOpt = None,
    channel: ChannelOpt = "production",
    holdout_days: Annotated[
        float,
        typer.Option(
            "--holdout-days",
            help="The last N days of new events are the holdout (shorter than the retrain interval).",
        ),
    ] = 2.0,
    metric: Annotated[str, typer.Option("--metric", help="ndcg, recall or hr (@k).")] = "ndcg",
    k: Annotated[int, typer.Option("--k", min=1, help="Cut-off of the metric.")] = 10,
    max_drop: Annotated[
        float,
        typer.Option("--max-drop", min=0.0, max=0.99, help="Largest relative drop that still promotes."),
    ] = 0.0,
    min_events: Annotated[int, typer.Option("--min-events", min=0, help="New events needed to retrain.")] = 1,
    min_users: Annotated[
        int, typer.Option("--min-users", min=0, help="Holdout users needed to decide.")
    ] = 10,
    model: Annotated[
        str | None, typer.Option("--model", help="Model compared (default: the build's headline model).")
    ] = None,
    every: Annotated[
        str | None, typer.Option("--every", help="Repeat in the foreground: 30m, 6h, 1d (Ctrl-C stops).")
    ] = None,
    json_out: Annotated[
        Path | None, typer.Option("--json", help="Write the last run's result as JSON here.")
    ] = None,
) -> None:
    """Build from base data + new events; promote only if not worse than production on the last
    days of events (every run is appended to <releases>/retrain.jsonl)."""
    from recstack.events import default_log_url
    from recstack.release import _cli
    from recstack.release.build import BuildConfig
    from recstack.release.retrain import RetrainConfig, parse_interval, retrain

    root = _cli.releases_root(releases_dir)
    bc = BuildConfig.from_toml(config) if config is not None else BuildConfig.default()
    cfg = RetrainConfig.from_config(
        {
            "build": bc.dump_config(),
            "event_log": event_log or default_log_url(root),
            "channel": channel,
            "holdout_days": holdout_days,
            "metric": metric,
            "k": k,
            "max_drop": max_drop,
            "min_new_events": min_events,
            "min_holdout_users": min_users,
            "model": model,
        }
    )
    interval = parse_interval(every) if every else None
    out = console()
    while True:
        started = time.monotonic()
        res = retrain(cfg, root)
        colour = {"promoted": "green", "refused": "yellow"}.get(res.action, "dim")
        out.print(f"[{colour}]{res.action}[/{colour}] {res.reason} ({res.seconds:.1f}s)")
        for name, value in res.scores.items():
            out.print(f"  {name:<22} {value:.4f}")
        if json_out is not None:
            json_out.write_text(json.dumps(res.to_json(), indent=2) + "\n")
        if interval is None:
            return
        try:
            time.sleep(max(0.0, interval - (time.monotonic() - started)))
        except KeyboardInterrupt:
            return
