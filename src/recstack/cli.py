"""The one `recstack` command line (Typer). Each command imports its layer lazily.

Sections (one per layer) keep the file easy to extend: data, evaluate, train, build/releases,
serve, batch, services/client, demo.
"""

from __future__ import annotations

import logging
import sys
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
# (commands of `recstack data ...` go here)

# ======================================================================== evaluate
# (the `recstack evaluate` command goes here)

# =================================================================== build/releases
# (`recstack build` and `recstack releases ...` go here)

# =========================================================================== serve
# (`recstack serve` goes here)

# =========================================================================== batch
# (`recstack batch ...` go here)

# ================================================================ services/client
# (`recstack services ...` and `recstack client ...` go here)

# ============================================================================ demo
# (`recstack demo` goes here)


def main() -> None:
    """Console-script entry point: project errors print one clear line and exit 2."""
    try:
        app()
    except RecstackError as exc:
        console().print(f"[red]error:[/red] {exc.message}")
        sys.exit(2)


if __name__ == "__main__":  # pragma: no cover
    main()
