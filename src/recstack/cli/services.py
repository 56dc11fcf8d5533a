"""`recstack services` (the gRPC microservices) and `recstack client` (their command-line client)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from recstack._progress import console
from recstack.cli._common import ReleasesDirOpt

services_app = typer.Typer(help="gRPC microservices.", no_args_is_help=True)
client_app = typer.Typer(help="Client for the gRPC microservices.", no_args_is_help=True)

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
    releases_dir: ReleasesDirOpt = None,
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
    event_log: Annotated[
        str | None,
        typer.Option(
            "--event-log",
            help="Event log URL (sqlite:///path, redis://..., postgresql://...): the item service's "
            "AddItem records new items there and every service reads them from it.",
        ),
    ] = None,
    run_dir: _SvcRunDir = None,
) -> None:
    """Start gRPC services, one process each, on one release; returns when all are SERVING.
    AddItem (`recstack client add-item`) needs RECSTACK_SERVE_API_KEY set when the services start."""
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
        event_log=event_log,
    )
    for info in started:
        typer.echo(
            f"{info.name:<11} pid {info.pid:<7} {info.address:<16} release {info.release}  log {info.log}"
        )


@services_app.command("status")
def services_status_cmd(run_dir: _SvcRunDir = None) -> None:
    """Each service's process and gRPC health (grpc.health.v1); exit 1 when none runs or one that
    was started is not SERVING."""
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
    started = [r for r in rows if r.pid is not None]
    if not started or any(r.health != "SERVING" for r in started):
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


@client_app.command("add-item")
def client_add_item_cmd(
    item_id: Annotated[str, typer.Argument(help="The new item's id (an integer in a MovieLens catalogue).")],
    title: Annotated[str, typer.Option("--title", help="Title (1-300 characters).")],
    year: Annotated[int, typer.Option("--year", min=0, help="Year (0 = unknown).")] = 0,
    genres: Annotated[str | None, typer.Option("--genres", help="Genres, comma-separated.")] = None,
    text: Annotated[str | None, typer.Option("--text", help="A description, tags, a synopsis.")] = None,
    api_key: Annotated[
        str | None,
        typer.Option("--api-key", envvar="RECSTACK_SERVE_API_KEY", help="The services' API key."),
    ] = None,
    addr: _CliAddr = None,
    timeout: _CliTimeout = 30.0,
) -> None:
    """Item service: add an item online (as POST /v1/items): logged, embedded, searchable and
    recommendable at once."""
    from recstack.serving.grpc.client import client_for, print_response, split_ids

    with client_for("item", addr, timeout) as c:
        print_response(c.add_item(item_id, title, year, split_ids(genres), text or "", api_key=api_key))


@client_app.command("search")
def client_search_cmd(
    query: Annotated[str, typer.Argument(help="A title or a theme, e.g. 'space opera with robots'.")],
    k: _CliK = 0,
    addr: _CliAddr = None,
    timeout: _CliTimeout = 5.0,
) -> None:
    """Item service: search items by meaning and title."""
    from recstack.serving.grpc.client import client_for, print_response

    with client_for("item", addr, timeout) as c:
        print_response(c.search(query, k))


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
