"""`recstack data`: load, fetch, inspect and generate datasets."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from recstack._progress import console
from recstack.errors import RecstackError

app = typer.Typer(help="Load, fetch, inspect and generate datasets.", no_args_is_help=True)

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


@app.command("fetch")
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


@app.command("info")
def data_info_cmd(
    source: Annotated[
        str,
        typer.Argument(
            help="ml-latest-small (bundled), ml-100k... (data dir), a saved dataset dir, "
            "a MovieLens dir/zip, a CSV/Parquet."
        ),
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


@app.command("convert")
def data_convert_cmd(
    source: Annotated[
        str, typer.Argument(help="ml-latest-small, ml-100k, a MovieLens dir/zip, a CSV/Parquet file...")
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Directory to write the Parquet dataset into.")],
    data_format: Annotated[str | None, typer.Option("--format", help=_FORMAT_HELP)] = None,
) -> None:
    """Load any supported source and write it as a Parquet `Dataset` directory."""
    from recstack.data.dataset import Dataset

    ds = _load_cli_dataset(source, data_format)
    assert isinstance(ds, Dataset)
    path = ds.save(out)
    typer.echo(f"wrote {path} ({_counts(ds)})")


@app.command("synth")
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


@app.command("check")
def data_check_cmd(
    source: Annotated[
        str, typer.Argument(help="A bundled name, a MovieLens dir/zip, CSV/Parquet or a saved Dataset.")
    ],
    data_format: Annotated[str | None, typer.Option("--format", help=_FORMAT_HELP)] = None,
    protocol: Annotated[
        str | None, typer.Option("--protocol", help="Check the split sizes of this protocol (e.g. temporal).")
    ] = None,
    parent: Annotated[
        str | None, typer.Option("--parent", help="A release id / channel to check the shift against.")
    ] = None,
    releases_dir: Annotated[Path | None, typer.Option("--releases-dir", help="Releases directory.")] = None,
) -> None:
    """The data checks of `recstack build` (schema, ranges, duplicates, unlisted items, split sizes,
    shift against a parent release), as a table; exits 1 when a check fails."""
    from rich.table import Table

    from recstack.data.checks import run_checks
    from recstack.data.dataset import Dataset

    ds = _load_cli_dataset(source, data_format)
    assert isinstance(ds, Dataset)
    parent_ds, parent_id = None, None
    if parent is not None:
        from recstack.release import _cli
        from recstack.release.loader import load

        rel = load(parent, _cli.releases_root(releases_dir), verify=False)
        parent_ds, parent_id = rel.dataset, rel.id
    results = run_checks(ds, protocol=protocol, parent=parent_ds, parent_id=parent_id)
    table = Table(title=f"data checks: {ds.name} ({_counts(ds)})")
    for col in ("check", "status", "message"):
        table.add_column(col)
    colour = {"pass": "green", "fail": "red", "allowed": "yellow", "warn": "yellow", "skipped": "dim"}
    for r in results:
        table.add_row(r["check"], f"[{colour[r['status']]}]{r['status']}[/]", r["message"])
    console().print(table)
    if any(r["status"] == "fail" for r in results):
        raise typer.Exit(1)
