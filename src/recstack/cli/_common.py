"""Options shared by several command groups."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

__all__ = ["ChannelOpt", "ReleasesDirOpt"]

ReleasesDirOpt = Annotated[
    Path | None,
    typer.Option("--releases-dir", help="Releases directory (default: RECSTACK_RELEASES_DIR or ./releases)."),
]
ChannelOpt = Annotated[str, typer.Option("--channel", "-c", help="Channel: production or staging.")]
