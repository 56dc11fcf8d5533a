"""`recstack demo`: build a release from the bundled data, print its evaluation table and serve it."""

from __future__ import annotations

from typing import Annotated

import typer

from recstack._progress import console
from recstack.cli._common import ReleasesDirOpt
from recstack.cli.serve import serve_cmd


def demo_cmd(
    port: Annotated[int, typer.Option("--port", help="Port of the API and web UI.")] = 8000,
    serve: Annotated[bool, typer.Option("--serve/--no-serve", help="Serve the release when built.")] = True,
    workers: Annotated[int, typer.Option("--workers", min=1, help="uvicorn worker processes.")] = 1,
    releases_dir: ReleasesDirOpt = None,
) -> None:
    """Build a release from the bundled MovieLens latest-small, print its evaluation table, make it the
    production release and serve the API and web UI on http://127.0.0.1:PORT."""
    from recstack.release import _cli
    from recstack.release.build import BuildConfig, build
    from recstack.release.registry import Registry

    root = _cli.releases_root(releases_dir)
    out = console()
    out.rule("recstack demo: building a release from the bundled MovieLens latest-small")
    manifest = build(BuildConfig.default(), root)
    _cli.print_eval_table(
        out, manifest, _cli.fit_seconds_of(root, manifest), _cli.comparisons_of(root, manifest)
    )
    # The demo always serves what it just built, even if an earlier (better) release was production.
    state = Registry(root).promote(manifest.id, "production", force=True)
    _cli.print_channel(out, state, "promoted")
    if serve:
        out.rule(f"serving on http://127.0.0.1:{port} (web UI at /, API docs at /docs; Ctrl-C stops)")
        serve_cmd(release=manifest.id, port=port, workers=workers, releases_dir=root)
