"""`recstack batch`: batch precomputation into versioned tables."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from recstack._progress import console
from recstack.cli._common import ReleasesDirOpt

app = typer.Typer(help="Batch precomputation into versioned tables.", no_args_is_help=True)

_BatchRelease = Annotated[str | None, typer.Option("--release", help="Release id (or unique prefix).")]
_BatchChannel = Annotated[str, typer.Option("--channel", help="Channel without --release.")]
_BatchSink = Annotated[
    str, typer.Option("--sink", help="sqlite:///path.db (default) or postgresql://user@host:port/db.")
]
_BatchRunner = Annotated[str, typer.Option("--runner", help="local (threads, all cores) or ray.")]
_BatchAddress = Annotated[
    str | None, typer.Option("--address", help="Ray cluster address (default: a local Ray instance).")
]
_BatchKeep = Annotated[
    int | None, typer.Option("--keep", min=1, help="Keep this many newest versions; drop older tables.")
]
_BatchBlock = Annotated[int, typer.Option("--block-size", min=1, help="Profiles per block (task).")]
_BatchModel = Annotated[
    str | None, typer.Option("--model", help="Ranker variant or 'recall' (default: the pipeline's).")
]
_BatchPipeline = Annotated[Path | None, typer.Option("--pipeline", help="Pipeline TOML (serving's).")]
_BatchWorkers = Annotated[
    int | None, typer.Option("--workers", min=1, help="Threads (local) / CPUs of a local Ray.")
]
_BatchDelay = Annotated[float, typer.Option("--block-delay", hidden=True, help="Sleep per block (tests).")]


def _batch_run(
    kind: str,
    *,
    release: str | None,
    channel: str,
    releases_dir: Path | None,
    k: int,
    top: int,
    sink: str,
    runner: str,
    address: str | None,
    keep: int | None,
    block_size: int,
    model: str | None,
    pipeline: Path | None,
    workers: int | None,
    block_delay: float,
) -> None:
    import json

    from recstack.batch import JobSpec, make_runner, run_job
    from recstack.release import _cli

    root = _cli.releases_root(releases_dir).resolve()
    spec = JobSpec(
        kind="users" if kind == "users" else "pairs",
        release=release or channel,
        releases_dir=str(root),
        k=k,
        top=top,
        model=model,
        pipeline=str(pipeline.resolve()) if pipeline else None,
        block_size=block_size,
    )
    run = make_runner(runner, address, workers)
    try:
        report = run_job(spec, sink, run, keep=keep, block_delay=block_delay)
    finally:
        run.close()
    out = report.as_dict()
    console().print(
        f"[bold]{out['rows']:,}[/bold] {kind} rows of release {out['release_id']} -> {out['table']} "
        f"({out['seconds']:.1f}s, {out['profiles_per_second']:,.0f} profiles/s, runner {out['runner']})"
    )
    typer.echo(json.dumps(out))


@app.command("users")
def batch_users_cmd(
    release: _BatchRelease = None,
    channel: _BatchChannel = "production",
    releases_dir: ReleasesDirOpt = None,
    k: Annotated[int, typer.Option("--k", min=1, help="Items per user.")] = 100,
    sink: _BatchSink = "sqlite:///recstack_batch.db",
    runner: _BatchRunner = "local",
    address: _BatchAddress = None,
    keep: _BatchKeep = None,
    block_size: _BatchBlock = 2048,
    model: _BatchModel = None,
    pipeline: _BatchPipeline = None,
    workers: _BatchWorkers = None,
    block_delay: _BatchDelay = 0.0,
) -> None:
    """Top k for every known user (seen items excluded) with the serving pipeline, into a new
    versioned table made current atomically."""
    _batch_run(
        "users",
        release=release,
        channel=channel,
        releases_dir=releases_dir,
        k=k,
        top=0,
        sink=sink,
        runner=runner,
        address=address,
        keep=keep,
        block_size=block_size,
        model=model,
        pipeline=pipeline,
        workers=workers,
        block_delay=block_delay,
    )


@app.command("pairs")
def batch_pairs_cmd(
    release: _BatchRelease = None,
    channel: _BatchChannel = "production",
    releases_dir: ReleasesDirOpt = None,
    top: Annotated[int, typer.Option("--top", min=2, help="Pairs of the N most popular items.")] = 1000,
    k: Annotated[int, typer.Option("--k", min=1, help="Items per pair.")] = 10,
    sink: _BatchSink = "sqlite:///recstack_batch.db",
    runner: _BatchRunner = "local",
    address: _BatchAddress = None,
    keep: _BatchKeep = None,
    block_size: _BatchBlock = 4096,
    model: Annotated[
        str | None, typer.Option("--model", help="Ranker variant or 'recall' (default: recall).")
    ] = None,
    pipeline: _BatchPipeline = None,
    workers: _BatchWorkers = None,
    block_delay: _BatchDelay = 0.0,
) -> None:
    """Top k for every pair of the top-N popular items as a two-item liked-items profile (the two
    items excluded): N*(N-1)/2 rows in a new versioned table made current atomically."""
    _batch_run(
        "pairs",
        release=release,
        channel=channel,
        releases_dir=releases_dir,
        k=k,
        top=top,
        sink=sink,
        runner=runner,
        address=address,
        keep=keep,
        block_size=block_size,
        model=model,
        pipeline=pipeline,
        workers=workers,
        block_delay=block_delay,
    )


@app.command("versions")
def batch_versions_cmd(
    kind: Annotated[str, typer.Argument(help="users or pairs.")] = "users",
    sink: _BatchSink = "sqlite:///recstack_batch.db",
) -> None:
    """Published versions of a job kind, newest first (* = current)."""
    from recstack.batch import open_sink

    snk = open_sink(sink)
    try:
        for v in snk.versions(kind):
            mark = "*" if v.current else " "
            typer.echo(f"{mark} {v.version}  {v.table}  {v.rows:,} rows  k={v.k}  {v.created_at}")
    finally:
        snk.close()
