"""The one `recstack` command line (Typer). Each command imports its layer lazily.

Sections (one per layer) keep the file easy to extend: data, evaluate, train, build/releases,
serve, batch, services/client, demo.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Annotated

import typer

from recstack import __version__
from recstack._progress import console, set_quiet
from recstack.errors import RecstackError

app = typer.Typer(
    name="recstack",
    help="recstack: a complete recommender system, from raw interactions to recommendations.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
data_app = typer.Typer(help="Load, fetch, inspect and generate datasets.", no_args_is_help=True)
releases_app = typer.Typer(
    help="The release registry: list, show, diff, promote, rollback.", no_args_is_help=True
)
batch_app = typer.Typer(help="Batch precomputation into versioned tables.", no_args_is_help=True)
services_app = typer.Typer(help="gRPC microservices.", no_args_is_help=True)
client_app = typer.Typer(help="Client for the gRPC microservices.", no_args_is_help=True)
app.add_typer(data_app, name="data")
app.add_typer(releases_app, name="releases")
app.add_typer(batch_app, name="batch")
app.add_typer(services_app, name="services")
app.add_typer(client_app, name="client")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"recstack {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    set_quiet(quiet)
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )


# ============================================================================ data
_FORMAT_HELP = "Force the layout: recstack, tabular, movielens-100k/-1m/-10m/-20m/-25m/-latest/-latest-small."


def _load_cli_dataset(source: str, data_format: str | None) -> object:
    from recstack.data.loading import load_dataset

    try:
        return load_dataset(source, format=data_format)
    except RecstackError:
        raise
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--format") from exc


def _counts(ds: object) -> str:
    from recstack.data.dataset import Dataset

    assert isinstance(ds, Dataset)
    return f"{ds.n_users:,} users, {ds.n_items:,} items, {ds.n_interactions:,} interactions"


@data_app.command("fetch")
def data_fetch_cmd(
    name: Annotated[
        str, typer.Argument(help="ml-100k, ml-1m, ml-10m, ml-20m, ml-25m, ml-latest-small, ml-latest")
    ],
    directory: Annotated[
        Path | None, typer.Option("--dir", help="Where to unpack (default: $RECSTACK_DATA_DIR or ./data).")
    ] = None,
    base_url: Annotated[
        str | None, typer.Option("--base-url", help="Mirror serving <name>.zip (default: GroupLens).")
    ] = None,
    md5: Annotated[str | None, typer.Option("--md5", help="Expected MD5 of the archive.")] = None,
    sha256: Annotated[str | None, typer.Option("--sha256", help="Expected SHA-256 of the archive.")] = None,
    force: Annotated[bool, typer.Option("--force", help="Download again even if already there.")] = False,
) -> None:
    """Download an official MovieLens archive, verify its checksum and unpack it."""
    from recstack.data.fetch import fetch_movielens

    out = fetch_movielens(name, directory, base_url=base_url, md5=md5, sha256=sha256, force=force)
    typer.echo(f"{name}: {out}")


@data_app.command("info")
def data_info_cmd(
    source: Annotated[
        str, typer.Argument(help="ml-100k, a saved dataset dir, a MovieLens dir/zip, a CSV/Parquet.")
    ],
    data_format: Annotated[str | None, typer.Option("--format", help=_FORMAT_HELP)] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Counts, density, rating distribution, date range and fingerprint of a dataset."""
    import json

    from rich.table import Table

    from recstack.data.dataset import Dataset
    from recstack.data.loading import dataset_summary

    ds = _load_cli_dataset(source, data_format)
    assert isinstance(ds, Dataset)
    info = dataset_summary(ds)
    if json_out:
        typer.echo(json.dumps(info, indent=2))
        return
    table = Table(title=f"dataset {info['name']}", show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value")
    table.add_row("users", f"{info['users']:,}")
    table.add_row("items", f"{info['items']:,}")
    table.add_row("interactions", f"{info['interactions']:,}")
    table.add_row("density", f"{info['density']:.4%}")
    total = max(1, info["interactions"])
    dist = "  ".join(f"{r:g}: {n:,} ({n / total:.1%})" for r, n in info["ratings"].items())
    table.add_row("ratings", dist)
    table.add_row("dates", f"{info['first']} .. {info['last']}" if info["first"] else "no timestamps")
    table.add_row("user attributes", ", ".join(info["user_columns"]) or "-")
    table.add_row("item attributes", ", ".join(info["item_columns"]) or "-")
    table.add_row("fingerprint", info["fingerprint"])
    out = console(stderr=False)
    out.print(table)


@data_app.command("convert")
def data_convert_cmd(
    source: Annotated[str, typer.Argument(help="ml-100k, a MovieLens dir/zip, a CSV/Parquet file...")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Directory to write the Parquet dataset into.")],
    data_format: Annotated[str | None, typer.Option("--format", help=_FORMAT_HELP)] = None,
) -> None:
    """Load any supported source and write it as a Parquet `Dataset` directory."""
    from recstack.data.dataset import Dataset

    ds = _load_cli_dataset(source, data_format)
    assert isinstance(ds, Dataset)
    path = ds.save(out)
    typer.echo(f"wrote {path} ({_counts(ds)})")


@data_app.command("synth")
def data_synth_cmd(
    out: Annotated[Path, typer.Option("--out", "-o", help="Directory to write the Parquet dataset into.")],
    users: Annotated[int, typer.Option("--users", min=1, help="Number of users.")] = 1000,
    items: Annotated[int, typer.Option("--items", min=1, help="Number of items.")] = 500,
    interactions: Annotated[
        int, typer.Option("--interactions", min=1, help="Distinct (user, item) pairs.")
    ] = 20_000,
    seed: Annotated[int, typer.Option("--seed", help="Random seed.")] = 42,
) -> None:
    """Generate a synthetic dataset with latent tastes, genres and demographics (recstack.data.synthetic)."""
    from recstack.data.synthetic import synthesize

    try:
        ds = synthesize(users, items, interactions, seed=seed)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    path = ds.save(out)
    typer.echo(f"wrote {path} ({_counts(ds)})")


# ======================================================================== evaluate
def _evaluate_choices() -> tuple[list[str], list[str]]:
    from recstack.evaluation.protocols import protocol_names
    from recstack.models.registry import names

    return protocol_names(), names()


@app.command("evaluate")
def evaluate_cmd(
    dataset: Annotated[
        str, typer.Option("--dataset", "-d", help="Dataset name (ml-100k, ml-1m...) or path.")
    ] = "ml-100k",
    protocol: Annotated[
        str, typer.Option("--protocol", "-p", help="stratified, temporal, tfrs, leave-last-out...")
    ] = "stratified",
    models: Annotated[
        str, typer.Option("--models", "-m", help="Comma-separated model names.")
    ] = "pop,itemknn,ease,als,bpr",
    tune: Annotated[
        bool, typer.Option("--tune", help="Choose hyperparameters on a validation split of train.")
    ] = False,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the split(s).")] = 42,
    json_path: Annotated[str | None, typer.Option("--json", help="Write the results as JSON here.")] = None,
    report: Annotated[
        str | None, typer.Option("--report", help="Write a self-contained HTML report here.")
    ] = None,
    data_format: Annotated[
        str | None,
        typer.Option("--format", help="Force the dataset layout (movielens-latest, tabular, recstack...)."),
    ] = None,
) -> None:
    """Fit and evaluate models under a named protocol; print a table, optionally write JSON / HTML."""
    from rich.table import Table

    from recstack.data.loading import load_dataset
    from recstack.evaluation.protocols import run_protocol
    from recstack.evaluation.report import TABLE_COLUMNS, write_html, write_json

    protocols, model_choices = _evaluate_choices()
    if protocol not in protocols:
        raise typer.BadParameter(
            f"unknown protocol {protocol!r}; choose from {', '.join(protocols)}", param_hint="--protocol"
        )
    model_names = [m.strip() for m in models.split(",") if m.strip()]
    bad = [m for m in model_names if m not in model_choices]
    if bad or not model_names:
        raise typer.BadParameter(
            f"unknown model(s) {', '.join(bad) or '(none given)'}; choose from {', '.join(model_choices)}",
            param_hint="--models",
        )
    try:
        ds = load_dataset(dataset, format=data_format)
    except RecstackError:
        raise
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--format/--dataset") from exc
    result = run_protocol(ds, protocol, model_names, tune=tune, seed=seed)
    table = Table(title=f"{result['dataset']} · {protocol}{' · tuned' if tune else ''} · seed {seed}")
    table.add_column("model", style="bold")
    for _, label in TABLE_COLUMNS:
        table.add_column(label, justify="right")
    for name, res in result["results"].items():
        cells = []
        for key, _ in TABLE_COLUMNS:
            v = res.get(key)
            cells.append("–" if v is None else f"{v:.2f}" if key == "fit_seconds" else f"{v:.4f}")
        table.add_row(name, *cells)

    out = console(stderr=False)
    out.print(table)
    for name, res in result["results"].items():
        if "cold" in res:
            c = res["cold"]
            typer.echo(
                f"cold-start users ({c['n_users']}) {name}: ndcg@10 {c['ndcg@10']:.4f} "
                f"recall@10 {c['recall@10']:.4f} hr@10 {c['hr@10']:.4f}"
            )
    if json_path:
        typer.echo(f"wrote {write_json(result, json_path)}")
    if report:
        typer.echo(f"wrote {write_html(result, report)}")


# =================================================================== build/releases
_ReleasesDirOpt = Annotated[
    Path | None,
    typer.Option("--releases-dir", help="Releases directory (default: RECSTACK_RELEASES_DIR or ./releases)."),
]
_ChannelOpt = Annotated[str, typer.Option("--channel", "-c", help="Channel: production or staging.")]


@app.command("build")
def build_cmd(
    config: Annotated[
        Path | None, typer.Option("--config", help="Pipeline TOML (default: the bundled default pipeline).")
    ] = None,
    releases_dir: _ReleasesDirOpt = None,
    promote: Annotated[bool, typer.Option("--promote", help="Promote the new release when built.")] = False,
    channel: _ChannelOpt = "production",
) -> None:
    """Run the offline pipeline (data, features, models, evaluation, index) into a new release."""
    from recstack.release import _cli
    from recstack.release.build import BuildConfig, build
    from recstack.release.registry import Registry

    cfg = BuildConfig.from_toml(config) if config is not None else BuildConfig.default()
    root = _cli.releases_root(releases_dir)
    manifest = build(cfg, root)
    out = console()
    out.print(f"\n{' · '.join(f'{k} {v:.1f}s' for k, v in manifest.timings.items())}")
    _cli.print_eval_table(out, manifest, _cli.fit_seconds_of(root, manifest))
    typer.echo(manifest.id)
    if promote:
        state = Registry(root).promote(manifest.id, channel)
        _cli.print_channel(out, state, "promoted")


@releases_app.command("list")
def releases_list(releases_dir: _ReleasesDirOpt = None) -> None:
    """All complete releases, oldest first, with the channels that point to them."""
    from recstack.release import _cli
    from recstack.release.registry import Registry

    _cli.print_list(console(), Registry(_cli.releases_root(releases_dir)))


@releases_app.command("show")
def releases_show(
    ref: Annotated[str, typer.Argument(help="Release id (or prefix), channel name or 'latest'.")],
    releases_dir: _ReleasesDirOpt = None,
) -> None:
    """A release's manifest summary and evaluation table."""
    from recstack.release import _cli
    from recstack.release.registry import Registry

    _cli.print_show(console(), Registry(_cli.releases_root(releases_dir)).show(ref))


@releases_app.command("verify")
def releases_verify(
    ref: Annotated[str, typer.Argument(help="Release id (or prefix), channel name or 'latest'.")],
    releases_dir: _ReleasesDirOpt = None,
) -> None:
    """Check every file of a release against its manifest (size + sha256)."""
    from recstack.release import _cli
    from recstack.release.loader import load

    rel = load(ref, _cli.releases_root(releases_dir))
    console().print(f"release {rel.id}: {len(rel.manifest.files)} files verified")


@releases_app.command("diff")
def releases_diff(
    a: Annotated[str, typer.Argument(help="Old release.")],
    b: Annotated[str, typer.Argument(help="New release.")],
    releases_dir: _ReleasesDirOpt = None,
) -> None:
    """Config, metric and file changes between two releases."""
    from recstack.release import _cli
    from recstack.release.registry import Registry

    _cli.print_diff(console(), Registry(_cli.releases_root(releases_dir)).diff(a, b))


@releases_app.command("promote")
def releases_promote(
    ref: Annotated[str, typer.Argument(help="Release id (or prefix) or 'latest'.")],
    channel: _ChannelOpt = "production",
    force: Annotated[bool, typer.Option("--force", help="Skip the headline-metric gate.")] = False,
    max_drop: Annotated[
        float, typer.Option("--max-drop", min=0.0, help="Largest relative headline drop (0.02 = 2%).")
    ] = 0.02,
    releases_dir: _ReleasesDirOpt = None,
) -> None:
    """Point a channel at a release (refused if its headline metric is > 2% below the current one)."""
    from recstack.release import _cli
    from recstack.release.registry import Registry

    reg = Registry(_cli.releases_root(releases_dir), max_relative_drop=max_drop)
    state = reg.promote(ref, channel, force=force)
    _cli.print_channel(console(), state, "promoted")


@releases_app.command("rollback")
def releases_rollback(channel: _ChannelOpt = "production", releases_dir: _ReleasesDirOpt = None) -> None:
    """Point a channel back at the release promoted before its current one."""
    from recstack.release import _cli
    from recstack.release.registry import Registry

    state = Registry(_cli.releases_root(releases_dir)).rollback(channel)
    _cli.print_channel(console(), state, "rolled back")


@releases_app.command("lineage")
def releases_lineage(
    ref: Annotated[str, typer.Argument(help="Release id (or prefix), channel name or 'latest'.")],
    releases_dir: _ReleasesDirOpt = None,
) -> None:
    """The chain of parent releases."""
    from recstack.release import _cli
    from recstack.release.registry import Registry

    _cli.print_lineage(console(), Registry(_cli.releases_root(releases_dir)).lineage(ref))


@releases_app.command("gc")
def releases_gc(
    keep: Annotated[int, typer.Option("--keep", help="How many of the newest releases to keep.")],
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only print what would be deleted.")] = False,
    releases_dir: _ReleasesDirOpt = None,
) -> None:
    """Delete old releases (never one a channel points to) and leftovers of killed builds."""
    from recstack.release import _cli
    from recstack.release.registry import Registry

    deleted = Registry(_cli.releases_root(releases_dir)).gc(keep, dry_run=dry_run)
    verb = "would delete" if dry_run else "deleted"
    console().print(f"{verb} {len(deleted)} release(s)" + (": " + ", ".join(deleted) if deleted else ""))


# =========================================================================== serve
@app.command("serve")
def serve_cmd(
    release: Annotated[str | None, typer.Option("--release", help="Release id (or unique prefix).")] = None,
    channel: Annotated[str, typer.Option("--channel", help="Channel without --release.")] = "production",
    store: Annotated[str, typer.Option("--store", help="Feature store: embedded or redis.")] = "embedded",
    redis_url: Annotated[str | None, typer.Option("--redis-url", help="Redis URL for --store redis.")] = None,
    index: Annotated[
        str | None, typer.Option("--index", help="ANN backend: faiss, exact, milvus (default: release's).")
    ] = None,
    pipeline: Annotated[Path | None, typer.Option("--pipeline", help="Pipeline TOML.")] = None,
    workers: Annotated[int, typer.Option("--workers", min=1, help="uvicorn worker processes.")] = 1,
    host: Annotated[str, typer.Option("--host")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port")] = 8000,
    api_key: Annotated[
        str | None, typer.Option("--api-key", help="X-API-Key for /admin (default: RECSTACK_SERVE_API_KEY).")
    ] = None,
    releases_dir: Annotated[Path | None, typer.Option("--releases-dir", help="Releases directory.")] = None,
) -> None:
    """Serve the REST API (OpenAPI docs at /docs) for one release."""
    from recstack.errors import InvalidArgumentError
    from recstack.serving._serve import check_release, run_server
    from recstack.serving.settings import ServingSettings

    if store not in ("embedded", "redis"):
        raise InvalidArgumentError(f"--store must be embedded or redis, got {store!r}")
    if index is not None and index not in ("faiss", "exact", "milvus"):
        raise InvalidArgumentError(f"--index must be faiss, exact or milvus, got {index!r}")
    overrides: dict[str, object] = {"channel": channel, "store": store, "workers": workers}
    overrides.update(host=host, port=port)
    optional = {"release": release, "redis_url": redis_url, "index": index, "pipeline": pipeline}
    optional.update(api_key=api_key, releases_dir=releases_dir)
    for key, value in optional.items():
        if value is not None:
            overrides[key] = value
    settings = ServingSettings.model_validate(overrides)
    rid = check_release(settings)
    console().print(
        f"serving release [bold]{rid}[/bold] on http://{host}:{port} (docs /docs), workers {workers}"
    )
    run_server(settings)


# =========================================================================== batch
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


@batch_app.command("users")
def batch_users_cmd(
    release: _BatchRelease = None,
    channel: _BatchChannel = "production",
    releases_dir: _ReleasesDirOpt = None,
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


@batch_app.command("pairs")
def batch_pairs_cmd(
    release: _BatchRelease = None,
    channel: _BatchChannel = "production",
    releases_dir: _ReleasesDirOpt = None,
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


@batch_app.command("versions")
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


# ================================================================ services/client
_SvcRunDir = Annotated[
    Path | None,
    typer.Option("--run-dir", help="pid files and logs (default: $RECSTACK_HOME/run or ~/.recstack/run)."),
]
_SvcNames = Annotated[
    list[str] | None, typer.Argument(help="user, item, recall, rank, aggregator (default: all).")
]


@services_app.command("start")
def services_start_cmd(
    names: _SvcNames = None,
    all_services: Annotated[bool, typer.Option("--all", help="Start all five services.")] = False,
    release: Annotated[str | None, typer.Option("--release", help="Release id (or unique prefix).")] = None,
    channel: Annotated[str, typer.Option("--channel", help="Channel without --release.")] = "production",
    releases_dir: _ReleasesDirOpt = None,
    ports: Annotated[
        str | None,
        typer.Option("--ports", help="e.g. user=8910,item=8920,aggregator=8930,recall=8950,rank=8960"),
    ] = None,
    host: Annotated[str, typer.Option("--host")] = "127.0.0.1",
    hop_timeout_ms: Annotated[
        float, typer.Option("--hop-timeout-ms", min=1, help="Aggregator deadline per hop (ms).")
    ] = 200.0,
    store: Annotated[str, typer.Option("--store", help="Feature store: embedded or redis.")] = "embedded",
    redis_url: Annotated[str | None, typer.Option("--redis-url", help="Redis URL for --store redis.")] = None,
    grace: Annotated[float, typer.Option("--grace", min=0, help="Graceful-stop seconds per service.")] = 5.0,
    run_dir: _SvcRunDir = None,
) -> None:
    """Start gRPC services, one process each, on one release; returns when all are SERVING."""
    from recstack.serving.grpc import launcher

    started = launcher.start_services(
        [] if all_services else (names or []),
        release=release,
        channel=channel,
        releases_dir=releases_dir,
        ports=launcher.parse_ports(ports),
        host=host,
        run_dir=run_dir,
        hop_timeout_ms=hop_timeout_ms,
        store=store,
        redis_url=redis_url,
        grace=grace,
    )
    for info in started:
        typer.echo(
            f"{info.name:<11} pid {info.pid:<7} {info.address:<16} release {info.release}  log {info.log}"
        )


@services_app.command("status")
def services_status_cmd(run_dir: _SvcRunDir = None) -> None:
    """Each service's process and gRPC health (grpc.health.v1); exit 1 when one is not SERVING."""
    from rich.table import Table

    from recstack.serving.grpc import launcher

    rows = launcher.status(run_dir)
    table = Table(title=f"recstack services ({run_dir or launcher.default_run_dir()})")
    for col in ("service", "pid", "address", "process", "health", "release"):
        table.add_column(col)
    for r in rows:
        style = "green" if r.health == "SERVING" else "red" if r.pid is not None else "dim"
        proc = "running" if r.running else ("exited" if r.pid is not None else "-")
        table.add_row(r.name, str(r.pid or "-"), r.address, proc, f"[{style}]{r.health}[/{style}]", r.release)
    out = console(stderr=False)
    out.print(table)
    if any(r.pid is not None and r.health != "SERVING" for r in rows):
        raise typer.Exit(1)


@services_app.command("stop")
def services_stop_cmd(
    names: _SvcNames = None,
    timeout: Annotated[float, typer.Option("--timeout", help="Seconds before SIGKILL.")] = 15.0,
    run_dir: _SvcRunDir = None,
) -> None:
    """Stop services gracefully (SIGTERM: calls in flight finish; SIGKILL after --timeout)."""
    from recstack.serving.grpc import launcher

    stopped = launcher.stop_services(names or [], run_dir=run_dir, timeout=timeout)
    typer.echo(f"stopped: {', '.join(stopped) or 'nothing was running'}")


_CliAddr = Annotated[
    str | None,
    typer.Option("--addr", help="host:port (default: the run dir's service, else its default port)."),
]
_CliTimeout = Annotated[float, typer.Option("--timeout", help="Call deadline in seconds.")]
_CliProfile = Annotated[
    str | None, typer.Option("--profile", help="New user: age=25,gender=M,occupation=writer")
]
_CliLiked = Annotated[str | None, typer.Option("--liked", help="New user: liked item ids, comma-separated.")]
_CliK = Annotated[int, typer.Option("--k", min=0, help="Number of items (0 = the pipeline's default).")]
_CliModel = Annotated[str, typer.Option("--model", help="Ranker variant; 'recall' = no ranker.")]
_CliUser = Annotated[str | None, typer.Argument(help="Known user id.")]


@client_app.command("as")
def client_as_cmd(
    user_id: _CliUser = None,
    profile: _CliProfile = None,
    liked: _CliLiked = None,
    k: _CliK = 0,
    model: _CliModel = "",
    exclude: Annotated[str | None, typer.Option("--exclude", help="Item ids never returned.")] = None,
    addr: _CliAddr = None,
    timeout: _CliTimeout = 5.0,
) -> None:
    """Aggregator: recommendations for a known user id, or a new user's --profile / --liked items."""
    from recstack.serving.grpc.client import client_for, print_response, split_ids, user_from_cli

    with client_for("aggregator", addr, timeout) as c:
        print_response(c.recommend(user_from_cli(user_id, profile, liked), k, model, split_ids(exclude)))


@client_app.command("um")
def client_um_cmd(
    user_id: Annotated[str, typer.Argument(help="User id.")],
    history: Annotated[int, typer.Option("--history", min=0, help="Most recent interactions shown.")] = 10,
    addr: _CliAddr = None,
    timeout: _CliTimeout = 5.0,
) -> None:
    """User service: a user's profile and most recent history."""
    from recstack.serving.grpc.client import client_for, print_response

    with client_for("user", addr, timeout) as c:
        print_response(c.get_user(user_id, history))


@client_app.command("cm")
def client_cm_cmd(
    item_ids: Annotated[list[str] | None, typer.Argument(help="Item ids.")] = None,
    popular: Annotated[int, typer.Option("--popular", min=0, help="Instead: the N most popular items.")] = 0,
    addr: _CliAddr = None,
    timeout: _CliTimeout = 5.0,
) -> None:
    """Item (content) service: item metadata, or the most popular items."""
    from recstack.serving.grpc.client import client_for, print_response

    with client_for("item", addr, timeout) as c:
        print_response(c.popular(popular) if popular else c.get_items(item_ids or []))


@client_app.command("recall")
def client_recall_cmd(
    user_id: _CliUser = None,
    profile: _CliProfile = None,
    liked: _CliLiked = None,
    k: _CliK = 0,
    show: Annotated[int, typer.Option("--show", min=1, help="Candidates printed.")] = 20,
    addr: _CliAddr = None,
    timeout: _CliTimeout = 5.0,
) -> None:
    """Recall service: the merged, filtered candidates of a user (best recall score first)."""
    from recstack.serving.grpc.client import client_for, print_response, user_from_cli

    with client_for("recall", addr, timeout) as c:
        resp = c.recall(user_from_cli(user_id, profile, liked), k)
        del resp.candidates[show:]
        print_response(resp)


@client_app.command("rank")
def client_rank_cmd(
    user_id: _CliUser = None,
    items: Annotated[str, typer.Option("--items", help="Candidate item ids, comma-separated.")] = "",
    profile: _CliProfile = None,
    liked: _CliLiked = None,
    k: _CliK = 0,
    model: _CliModel = "",
    addr: _CliAddr = None,
    timeout: _CliTimeout = 5.0,
) -> None:
    """Rank service: score and order candidate items for a user (ranker + genre-cap rerank)."""
    from recstack.serving.grpc.client import client_for, print_response, split_ids, user_from_cli

    with client_for("rank", addr, timeout) as c:
        print_response(c.rank(user_from_cli(user_id, profile, liked), split_ids(items), k, model))


# ============================================================================ demo
@app.command("demo")
def demo_cmd(
    port: Annotated[int, typer.Option("--port", help="Port of the API and web UI.")] = 8000,
    serve: Annotated[bool, typer.Option("--serve/--no-serve", help="Serve the release when built.")] = True,
    workers: Annotated[int, typer.Option("--workers", min=1, help="uvicorn worker processes.")] = 1,
    releases_dir: _ReleasesDirOpt = None,
) -> None:
    """Build a release from the bundled MovieLens 100K, print its evaluation table, make it the
    production release and serve the API and web UI on http://127.0.0.1:PORT."""
    from recstack.release import _cli
    from recstack.release.build import BuildConfig, build
    from recstack.release.registry import Registry

    root = _cli.releases_root(releases_dir)
    out = console()
    out.rule("recstack demo: building a release from the bundled MovieLens 100K")
    manifest = build(BuildConfig.default(), root)
    _cli.print_eval_table(out, manifest, _cli.fit_seconds_of(root, manifest))
    # The demo always serves what it just built, even if an earlier (better) release was production.
    state = Registry(root).promote(manifest.id, "production", force=True)
    _cli.print_channel(out, state, "promoted")
    if serve:
        out.rule(f"serving on http://127.0.0.1:{port} (web UI at /, API docs at /docs; Ctrl-C stops)")
        serve_cmd(release=manifest.id, port=port, workers=workers, releases_dir=root)


def main() -> None:
    """Console-script entry point: project errors print one clear line and exit 2."""
    try:
        app()
    except RecstackError as exc:
        console().print(f"[red]error:[/red] {exc.message}")
        sys.exit(2)


if __name__ == "__main__":  # pragma: no cover
    main()
