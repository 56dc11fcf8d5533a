"""`recstack experiments create|list|stop|report|replay`: online experiments (A/B tests).

Experiments are TOML files in ``experiments/`` beside the releases dir (`recstack.experiments`);
every server worker picks a change up within a second.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from recstack._progress import console
from recstack.cli._common import ReleasesDirOpt

app = typer.Typer(help="Online experiments: create, list, stop, report, replay.", no_args_is_help=True)

DirOpt = Annotated[
    Path | None,
    typer.Option(
        "--experiments-dir",
        help="Where experiments are kept (default: experiments/ beside the releases dir).",
    ),
]
LogOpt = Annotated[
    str | None,
    typer.Option("--event-log", help="The event log (default: events/events.db beside the releases dir)."),
]


def _store(experiments_dir: Path | None, releases_dir: Path | None) -> Any:
    from recstack.experiments import ExperimentStore, default_experiments_dir
    from recstack.release import _cli

    return ExperimentStore(experiments_dir or default_experiments_dir(_cli.releases_root(releases_dir)))


def _parse_arm(spec: str) -> dict[str, Any]:
    """``name[:share][:model]`` or ``name:share:model@release`` -> an arm table."""
    from recstack.errors import InvalidArgumentError

    release = None
    if "@" in spec:
        spec, release = spec.rsplit("@", 1)
    parts = spec.split(":")
    if not parts[0] or len(parts) > 3:
        raise InvalidArgumentError(f"--arm {spec!r}: write NAME[:SHARE[:MODEL]][@RELEASE]")
    arm: dict[str, Any] = {"name": parts[0]}
    if len(parts) > 1 and parts[1]:
        try:
            arm["share"] = float(parts[1])
        except ValueError:
            raise InvalidArgumentError(f"--arm {spec!r}: the share must be a number") from None
    if len(parts) > 2 and parts[2]:
        arm["model"] = parts[2]
    if release:
        arm["release"] = release
    return arm


@app.command("create")
def create_cmd(
    config: Annotated[
        Path | None,
        typer.Option(
            "--config", "-f", help="An experiment TOML ([experiment] table with [[experiment.arms]])."
        ),
    ] = None,
    name: Annotated[str | None, typer.Option("--name", help="Experiment name (without --config).")] = None,
    arm: Annotated[
        list[str] | None,
        typer.Option("--arm", help="NAME[:SHARE[:MODEL]][@RELEASE], repeated (without --config)."),
    ] = None,
    holdout: Annotated[
        float, typer.Option("--holdout", min=0.0, max=0.99, help="Share of users kept out.")
    ] = 0.0,
    salt: Annotated[str | None, typer.Option("--salt", help="Assignment salt (default: the name).")] = None,
    window_s: Annotated[float, typer.Option("--window", help="Attribution window (seconds).")] = 3600.0,
    experiments_dir: DirOpt = None,
    releases_dir: ReleasesDirOpt = None,
) -> None:
    """Create and start an experiment (from a TOML file, or from --name and --arm options)."""
    from recstack.errors import InvalidArgumentError
    from recstack.experiments import ExperimentConfig

    if config is not None:
        cfg = ExperimentConfig.from_toml(config)
    else:
        if not name or not arm:
            raise InvalidArgumentError("give --config FILE, or --name and two or more --arm options")
        cfg = ExperimentConfig.from_config(
            {
                "name": name,
                "arms": [_parse_arm(a) for a in arm],
                "holdout": holdout,
                "salt": salt,
                "window_s": window_s,
            }
        )
    stored = _store(experiments_dir, releases_dir).create(cfg)
    shares = ", ".join(f"{a} {s:.1%}" for a, s in stored.shares().items())
    console().print(f"experiment {stored.name} running: {shares} (salt {stored.salt_value!r})")


@app.command("list")
def list_cmd(experiments_dir: DirOpt = None, releases_dir: ReleasesDirOpt = None) -> None:
    """Every experiment, newest first."""
    from rich.table import Table

    exps = _store(experiments_dir, releases_dir).list()
    table = Table(title="experiments")
    for col in ("name", "status", "arms", "created", "stopped"):
        table.add_column(col)
    for e in reversed(exps):
        arms = ", ".join(f"{a} {s:.0%}" for a, s in e.shares().items())
        table.add_row(e.name, e.status, arms, e.created_at or "", e.stopped_at or "")
    console().print(table if exps else "no experiments yet (recstack experiments create ...)")


@app.command("stop")
def stop_cmd(
    name: Annotated[str, typer.Argument(help="The experiment.")],
    experiments_dir: DirOpt = None,
    releases_dir: ReleasesDirOpt = None,
) -> None:
    """Stop an experiment: its users get the default again; the report stays."""
    e = _store(experiments_dir, releases_dir).stop(name)
    console().print(f"experiment {e.name} stopped at {e.stopped_at}")


def _catalog_size(releases_dir: Path | None) -> int | None:
    """Items of the production release (the coverage denominator), when there is one."""
    from recstack.release import _cli
    from recstack.release.registry import Registry

    try:
        reg = Registry(_cli.releases_root(releases_dir))
        rid = reg.channel("production").current or reg.latest()
        if rid is None:
            return None
        counts = reg.show(rid).dataset.counts
        return int(counts.get("items") or counts.get("n_items") or 0) or None
    except Exception:
        return None


@app.command("report")
def report_cmd(
    name: Annotated[str, typer.Argument(help="The experiment.")],
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the report as JSON.")] = None,
    html_out: Annotated[Path | None, typer.Option("--html", help="Write the HTML report with plots.")] = None,
    catalog_size: Annotated[
        int | None,
        typer.Option("--catalog-size", help="Items in the catalogue (default: the production release's)."),
    ] = None,
    event_log: LogOpt = None,
    experiments_dir: DirOpt = None,
    releases_dir: ReleasesDirOpt = None,
) -> None:
    """Per arm: users, impressions, CTR, hit-rate@k, mean rating, coverage, with confidence
    intervals and tests of the difference from the control (table; --json, --html)."""
    from recstack.cli.events import _open
    from recstack.experiments import analyse
    from recstack.experiments.report import report_table, verdict, write_html, write_json

    cfg = _store(experiments_dir, releases_dir).get(name)
    with _open(event_log, releases_dir) as log:
        events = log.to_frame()
    rep = analyse(events, cfg, catalog_size=catalog_size or _catalog_size(releases_dir))
    out = console()
    out.print(report_table(rep))
    out.print(verdict(rep))
    if json_out is not None:
        write_json(rep, json_out)
        out.print(f"JSON -> {json_out}")
    if html_out is not None:
        write_html(rep, html_out)
        out.print(f"HTML -> {html_out}")


@app.command("replay")
def replay_cmd(
    url: Annotated[str, typer.Option("--url", help="The server, e.g. http://127.0.0.1:8000")],
    dataset: Annotated[
        str, typer.Option("--dataset", help="The data set the served release's train part came from.")
    ],
    users: Annotated[
        int | None, typer.Option("--users", min=1, help="Simulate this many test users (default all).")
    ] = None,
    visits: Annotated[int, typer.Option("--visits", min=1)] = 3,
    k: Annotated[int, typer.Option("--k", min=1)] = 10,
    eta: Annotated[
        float, typer.Option("--eta", min=0.0, help="Examination probability (1/position)^eta.")
    ] = 1.0,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    concurrency: Annotated[int, typer.Option("--concurrency", min=1)] = 4,
) -> None:
    """Drive a server with simulated users: the held-out part of a temporal split of DATASET. The
    server should serve a release built from the split's train part (benchmarks/bench_ab.py builds
    one), so that the users' future is unknown to it."""
    import httpx

    from recstack.data.loading import load_dataset
    from recstack.experiments.replay import Population, ReplayConfig, replay

    pop = Population.from_split(load_dataset(dataset))
    if users is not None:
        pop = pop.subset(users, seed)
    cfg = ReplayConfig(visits=visits, k=k, eta=eta, seed=seed, concurrency=concurrency)
    with httpx.Client(base_url=url, timeout=30.0) as client:
        stats = replay(client, pop, cfg)
    console().print(json.dumps(stats.as_dict(), indent=2))
