"""The one `recstack` command line (Typer): this module wires the command groups together.

Each group lives in its own module of this package and imports its layer lazily, inside the
command, so that ``recstack --help`` stays fast:

| module        | commands                                             |
|---------------|------------------------------------------------------|
| `data`        | ``recstack data fetch|info|convert|synth``           |
| `evaluate`    | ``recstack evaluate``                                |
| `releases`    | ``recstack build``, ``recstack releases ...``        |
| `serve`       | ``recstack serve``                                   |
| `batch`       | ``recstack batch users|pairs|versions``              |
| `services`    | ``recstack services ...``, ``recstack client ...``   |
| `demo`        | ``recstack demo``                                    |
| `events`      | ``recstack events info|export|compact``              |
| `retrain`     | ``recstack retrain``                                 |
| `experiments` | ``recstack experiments create|list|stop|report|replay`` |

A new group is a new module with its own ``typer.Typer`` registered below.
"""

from __future__ import annotations

import logging
import sys
from typing import Annotated

import typer

from recstack import __version__
from recstack._progress import console, set_quiet
from recstack.cli import (
    batch,
    data,
    demo,
    evaluate,
    events,
    experiments,
    releases,
    retrain,
    serve,
    services,
)
from recstack.errors import RecstackError

__all__ = ["app", "main"]

app = typer.Typer(
    name="recstack",
    help="recstack: a complete recommender system, from raw interactions to recommendations.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(data.app, name="data")
app.command("evaluate")(evaluate.evaluate_cmd)
app.command("build")(releases.build_cmd)
app.add_typer(releases.app, name="releases")
app.command("serve")(serve.serve_cmd)
app.add_typer(batch.app, name="batch")
app.add_typer(services.services_app, name="services")
app.add_typer(services.client_app, name="client")
app.command("demo")(demo.demo_cmd)
app.add_typer(events.app, name="events")
app.command("retrain")(retrain.retrain_cmd)
app.add_typer(experiments.app, name="experiments")


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


def main() -> None:
    """Console-script entry point: project errors print one clear line and exit 2."""
    try:
        app()
    except RecstackError as exc:
        console().print(f"[red]error:[/red] {exc.message}")
        sys.exit(2)
