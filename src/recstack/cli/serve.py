"""`recstack serve`: the REST API and web UI of one release."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from recstack._progress import console


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
    event_log: Annotated[
        str,
        typer.Option(
            "--event-log",
            help="Where accepted events are logged before 201: 'auto' (events/events.db beside the "
            "releases dir; Redis Streams with --store redis), sqlite:///path, redis://..., "
            "postgresql://... or 'off'.",
        ),
    ] = "auto",
    events_auth: Annotated[
        bool, typer.Option("--events-auth", help="POST /v1/events needs the X-API-Key too (needs --api-key).")
    ] = False,
    run_dir: Annotated[
        Path | None,
        typer.Option("--run-dir", help="Run directory: the service's release target, worker status."),
    ] = None,
    batch_sink: Annotated[
        str | None,
        typer.Option(
            "--batch-sink",
            help="Batch tables written by `recstack batch users|pairs --sink URL` that "
            "?source=batch and /v1/pairs read: sqlite:///path or postgresql://... "
            "(default: RECSTACK_BATCH_SINK, else sqlite:///recstack_batch.db).",
        ),
    ] = None,
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
    optional.update(api_key=api_key, releases_dir=releases_dir, run_dir=run_dir, batch_sink=batch_sink)
    if events_auth:
        overrides["events_auth"] = True
    for key, value in optional.items():
        if value is not None:
            overrides[key] = value
    settings = ServingSettings.model_validate(overrides)
    if settings.events_auth and settings.api_key is None:
        raise InvalidArgumentError("--events-auth needs --api-key (or RECSTACK_SERVE_API_KEY)")
    if event_log == "auto":
        from recstack.events import default_log_url

        event_log = default_log_url(settings.releases_path(), settings.store, settings.redis_url)
    settings = settings.model_copy(update={"event_log": event_log})
    rid = check_release(settings)  # resolved and verified: a bad release fails here, in one line
    console().print(
        f"serving release [bold]{rid}[/bold] on http://{host}:{port} (docs /docs), workers {workers}, "
        f"event log {event_log}"
    )
    run_server(settings, release_id=rid)
