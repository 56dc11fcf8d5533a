"""`recstack evaluate`: fit and evaluate models under a named protocol."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from recstack._progress import console
from recstack.errors import RecstackError


def _evaluate_choices() -> tuple[list[str], list[str]]:
    from recstack.evaluation.protocols import protocol_names
    from recstack.models.registry import names

    return protocol_names(), names()


def evaluate_cmd(
    dataset: Annotated[
        str,
        typer.Option(
            "--dataset", "-d", help="ml-latest-small (bundled), ml-100k, ml-1m... (data dir), or a path."
        ),
    ] = "ml-latest-small",
    protocol: Annotated[
        str,
        typer.Option(
            "--protocol", "-p", help="temporal-rolling, stratified, temporal, tfrs, leave-last-out..."
        ),
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
    sample_users: Annotated[
        int | None,
        typer.Option(
            "--sample-users", min=1, help="Evaluate a uniform sample of N test users and print 95% intervals."
        ),
    ] = None,
    seeds: Annotated[
        str | None,
        typer.Option(
            "--seeds",
            help="Comma-separated training seeds (e.g. 42,142,242): the protocol once per seed, figures as "
            "mean +- sd. The split keeps --seed.",
        ),
    ] = None,
) -> None:
    """Fit and evaluate models under a named protocol; print a table, optionally write JSON / HTML."""
    from rich.table import Table

    from recstack.data.loading import load_dataset
    from recstack.evaluation.protocols import run_protocol
    from recstack.evaluation.report import TABLE_COLUMNS

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
    model_seeds: list[int] | None = None
    if seeds is not None:
        try:
            model_seeds = [int(x) for x in seeds.split(",") if x.strip()]
        except ValueError:
            model_seeds = []
        if not model_seeds:
            raise typer.BadParameter(
                f"{seeds!r}: give comma-separated integer seeds, for example 42,142,242", param_hint="--seeds"
            )
    try:
        ds = load_dataset(dataset, format=data_format)
    except RecstackError:
        raise
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--format/--dataset") from exc
    result = run_protocol(
        ds, protocol, model_names, tune=tune, seed=seed, sample_users=sample_users, model_seeds=model_seeds
    )
    if protocol == "cold-users":
        from recstack.evaluation.cold_users import format_cold_users

        for line in format_cold_users(result):
            typer.echo(line)
        _write(result, json_path, report)
        return
    title = f"{result['dataset']} · {protocol}{' · tuned' if tune else ''} · seed {seed}"
    if model_seeds:
        title += f" · mean ± sd over training seeds {','.join(map(str, model_seeds))}"
    table = Table(title=title)
    table.add_column("model", style="bold")
    for _, label in TABLE_COLUMNS:
        table.add_column(label, justify="right")
    for name, res in result["results"].items():
        cells = []
        sd = res.get("seeds", {}).get("sd", {})
        for key, _ in TABLE_COLUMNS:
            v = res.get(key)
            cell = "–" if v is None else f"{v:.2f}" if key == "fit_seconds" else f"{v:.4f}"
            if v is not None and key in sd:
                cell += f" ± {sd[key]:.2f}" if key == "fit_seconds" else f" ± {sd[key]:.4f}"
            cells.append(cell)
        table.add_row(name, *cells)

    out = console(stderr=False)
    out.print(table)
    if "comparisons" in result:
        from recstack.evaluation.report import print_rolling

        print_rolling(out, result)
    else:
        for name, res in result["results"].items():
            if "cold" in res:
                c = res["cold"]
                typer.echo(
                    f"cold-start users ({c['n_users']}) {name}: ndcg@10 {c['ndcg@10']:.4f} "
                    f"recall@10 {c['recall@10']:.4f} hr@10 {c['hr@10']:.4f}"
                )
    for name, res in result["results"].items():
        if "sample" in res:
            smp = res["sample"]
            lo, hi = smp["ci95"]["ndcg@10"]
            typer.echo(
                f"{name}: {smp['n_users']:,} of {smp['of']:,} users sampled; ndcg@10 {res['ndcg@10']:.4f}, "
                f"95% CI [{lo:.4f}, {hi:.4f}]"
            )
    _write(result, json_path, report)


def _write(result: dict[str, Any], json_path: str | None, report: str | None) -> None:
    from recstack.evaluation.report import write_html, write_json

    if json_path:
        typer.echo(f"wrote {write_json(result, json_path)}")
    if report:
        typer.echo(f"wrote {write_html(result, report)}")
