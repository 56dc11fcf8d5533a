"""`recstack build` and `recstack releases`: the offline pipeline into a release, and the registry."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from recstack._progress import console
from recstack.cli._common import ChannelOpt, ReleasesDirOpt

app = typer.Typer(help="The release registry: list, show, diff, promote, rollback.", no_args_is_help=True)


def build_cmd(
    config: Annotated[
        Path | None, typer.Option("--config", help="Pipeline TOML (default: the bundled default pipeline).")
    ] = None,
    releases_dir: ReleasesDirOpt = None,
    promote: Annotated[bool, typer.Option("--promote", help="Promote the new release when built.")] = False,
    channel: ChannelOpt = "production",
    allow: Annotated[
        list[str] | None,
        typer.Option(
            "--allow",
            help='Let a failing data check pass: CHECK="reason" (repeatable; the reason goes into the '
            "manifest). Checks: schema, ranges, duplicates, unlisted_items, split_sizes, shift.",
        ),
    ] = None,
    runner: Annotated[
        str,
        typer.Option(
            "--runner",
            help="Where the evaluation's user blocks are scored and the torch models (two-tower, the "
            "two-stage rankers) train: local (threads, this process) or ray (Ray tasks; Ray Train, "
            "Torch DDP on CPU workers).",
        ),
    ] = "local",
    address: Annotated[
        str | None,
        typer.Option(
            "--address", help="Ray cluster address for --runner ray (default: a local Ray instance)."
        ),
    ] = None,
    train_workers: Annotated[
        int,
        typer.Option("--train-workers", min=1, help="Ray Train workers (1 CPU each) for --runner ray."),
    ] = 2,
    sample_users: Annotated[
        int | None,
        typer.Option(
            "--sample-users",
            min=1,
            help="Evaluate a uniform sample of N test users; metrics.json gets each metric's 95% CI.",
        ),
    ] = None,
) -> None:
    """Run the offline pipeline (data checks, features, models, evaluation, index) into a new release."""
    from recstack.data.checks import parse_allow
    from recstack.release import _cli
    from recstack.release.build import BuildConfig, build
    from recstack.release.registry import Registry

    cfg = BuildConfig.from_toml(config) if config is not None else BuildConfig.default()
    if allow:
        checks = cfg.checks.model_copy(update={"allow": {**cfg.checks.allow, **parse_allow(allow)}})
        cfg = cfg.model_copy(update={"checks": checks})
    if runner not in ("local", "ray"):
        raise typer.BadParameter(f"--runner must be local or ray, got {runner!r}")
    if address and runner != "ray":
        raise typer.BadParameter("--address needs --runner ray")
    if sample_users is not None:
        ev = cfg.evaluation.model_copy(update={"sample_users": sample_users})
        cfg = cfg.model_copy(update={"evaluation": ev})
    root = _cli.releases_root(releases_dir)
    manifest = build(
        cfg, root, runner="ray" if runner == "ray" else "local", address=address, train_workers=train_workers
    )
    out = console()
    out.print(f"\n{' · '.join(f'{k} {v:.1f}s' for k, v in manifest.timings.items())}")
    _cli.print_eval_table(
        out, manifest, _cli.fit_seconds_of(root, manifest), _cli.comparisons_of(root, manifest)
    )
    if sample_users is not None:
        _cli.print_sample_intervals(out, root / manifest.id / "metrics.json")
    typer.echo(manifest.id)
    if promote:
        state = Registry(root).promote(manifest.id, channel)
        _cli.print_channel(out, state, "promoted")


@app.command("list")
def releases_list(releases_dir: ReleasesDirOpt = None) -> None:
    """All complete releases, oldest first, with the channels that point to them."""
    from recstack.release import _cli
    from recstack.release.registry import Registry

    _cli.print_list(console(), Registry(_cli.releases_root(releases_dir)))


@app.command("show")
def releases_show(
    ref: Annotated[str, typer.Argument(help="Release id (or prefix), channel name or 'latest'.")],
    releases_dir: ReleasesDirOpt = None,
) -> None:
    """A release's manifest summary and evaluation table."""
    from recstack.release import _cli
    from recstack.release.registry import Registry

    _cli.print_show(console(), Registry(_cli.releases_root(releases_dir)).show(ref))


@app.command("verify")
def releases_verify(
    ref: Annotated[str, typer.Argument(help="Release id (or prefix), channel name or 'latest'.")],
    releases_dir: ReleasesDirOpt = None,
) -> None:
    """Check every file of a release against its manifest (size + sha256)."""
    from recstack.release import _cli
    from recstack.release.loader import load

    rel = load(ref, _cli.releases_root(releases_dir))
    console().print(f"release {rel.id}: {len(rel.manifest.files)} files verified")


@app.command("diff")
def releases_diff(
    a: Annotated[str, typer.Argument(help="Old release.")],
    b: Annotated[str, typer.Argument(help="New release.")],
    releases_dir: ReleasesDirOpt = None,
) -> None:
    """Config, metric and file changes between two releases."""
    from recstack.release import _cli
    from recstack.release.registry import Registry

    _cli.print_diff(console(), Registry(_cli.releases_root(releases_dir)).diff(a, b))


@app.command("promote")
def releases_promote(
    ref: Annotated[str, typer.Argument(help="Release id (or prefix) or 'latest'.")],
    channel: ChannelOpt = "production",
    force: Annotated[bool, typer.Option("--force", help="Skip the headline-metric gate.")] = False,
    max_drop: Annotated[
        float, typer.Option("--max-drop", min=0.0, help="Largest relative headline drop (0.02 = 2%).")
    ] = 0.02,
    releases_dir: ReleasesDirOpt = None,
) -> None:
    """Point a channel at a release (refused if its headline metric is > 2% below the current one)."""
    from recstack.release import _cli
    from recstack.release.registry import Registry

    reg = Registry(_cli.releases_root(releases_dir), max_relative_drop=max_drop)
    state = reg.promote(ref, channel, force=force)
    _cli.print_channel(console(), state, "promoted")


@app.command("rollback")
def releases_rollback(channel: ChannelOpt = "production", releases_dir: ReleasesDirOpt = None) -> None:
    """Point a channel back at the release promoted before its current one."""
    from recstack.release import _cli
    from recstack.release.registry import Registry

    state = Registry(_cli.releases_root(releases_dir)).rollback(channel)
    _cli.print_channel(console(), state, "rolled back")


@app.command("lineage")
def releases_lineage(
    ref: Annotated[str, typer.Argument(help="Release id (or prefix), channel name or 'latest'.")],
    releases_dir: ReleasesDirOpt = None,
) -> None:
    """The chain of parent releases."""
    from recstack.release import _cli
    from recstack.release.registry import Registry

    _cli.print_lineage(console(), Registry(_cli.releases_root(releases_dir)).lineage(ref))


@app.command("gc")
def releases_gc(
    keep: Annotated[int, typer.Option("--keep", help="How many of the newest releases to keep.")],
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only print what would be deleted.")] = False,
    releases_dir: ReleasesDirOpt = None,
) -> None:
    """Delete old releases (never one a channel points to) and leftovers of killed builds."""
    from recstack.release import _cli
    from recstack.release.registry import Registry

    deleted = Registry(_cli.releases_root(releases_dir)).gc(keep, dry_run=dry_run)
    verb = "would delete" if dry_run else "deleted"
    console().print(f"{verb} {len(deleted)} release(s)" + (": " + ", ".join(deleted) if deleted else ""))
