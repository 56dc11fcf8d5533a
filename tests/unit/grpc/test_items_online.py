"""The item service's ``AddItem`` and ``Search`` over real gRPC: the same checks, key and event-log
record as ``POST /v1/items``; the item is at once in the item service's answers, its search and the
recall of a service on the same pipeline, and a service on another process reading the same log
gets it too. The client CLI calls both."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from typer.testing import CliRunner

from movies_data import MOVIES, WordEncoder, movie_dataset
from recstack.events import open_log
from recstack.serving._release import MemoryRelease, fit_memory_release
from recstack.serving._search import TextSearch
from recstack.serving._state import build_state
from recstack.serving.grpc.client import GrpcClient, ServiceCallError, make_user
from recstack.serving.grpc.server import RunningServer, make_servicer, start_server
from recstack.serving.grpc.services import ServiceState
from recstack.serving.pipeline import NEW_ITEMS_SOURCE, Pipeline
from recstack.serving.settings import ServingSettings

KEY = "s3cret"


def _with_words(pipe: Pipeline) -> Pipeline:
    enc = WordEncoder()
    emb = enc.encode([f"{m[1]} {' '.join(m[4])} {'droids' if m[0] == 1 else ''}" for m in MOVIES])
    pipe._text_search = TextSearch(pipe.catalog, emb, enc)
    return pipe


@pytest.fixture
def release() -> MemoryRelease:
    return fit_memory_release(movie_dataset(), "movies-g", ("pop", "itemknn"))


@pytest.fixture
def log_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'events.db'}"


@pytest.fixture
def servers(release: MemoryRelease, log_url: str) -> Iterator[dict[str, Any]]:
    """Item and recall services on one pipeline (as `recstack services start` gives each its own
    process, both reading the same log), the item service with the key and the log."""
    log = open_log(log_url)
    pipe = _with_words(Pipeline(release))
    state = ServiceState.of(pipe, event_log=log, api_key=KEY)
    running: dict[str, RunningServer] = {}
    try:
        for name in ("item", "recall"):
            running[name] = start_server(name, make_servicer(name, state), 0, workers=2)
        yield {"pipe": pipe, "addr": {n: f"127.0.0.1:{s.port}" for n, s in running.items()}, "log": log}
    finally:
        for s in running.values():
            s.stop(0)
        assert log is not None
        log.close()


ROBOT: dict[str, Any] = {
    "title": "Robot Wars",
    "year": 2024,
    "genres": ["Sci-Fi"],
    "text": "Droids fight in space.",
}


def test_add_item_checks_key_and_item_before_logging(servers: dict[str, Any]) -> None:
    with GrpcClient(servers["addr"]) as c:
        with pytest.raises(ServiceCallError) as ei:
            c.add_item("7", **ROBOT)
        assert ei.value.status == grpc.StatusCode.UNAUTHENTICATED
        with pytest.raises(ServiceCallError) as ei:
            c.add_item("7", **ROBOT, api_key="wrong")
        assert ei.value.status == grpc.StatusCode.UNAUTHENTICATED
        bad = [
            ({"item_id": "robot"}, "integers"),  # a catalogue of integer ids
            ({"title": ""}, "title"),
            ({"year": 1700}, "year"),
            ({"genres": [""]}, "genres"),
            ({"text": "x" * 5001}, "text"),
        ]
        for change, word in bad:
            args = {"item_id": "7", **ROBOT, **change}
            with pytest.raises(ServiceCallError) as ei:
                c.add_item(**args, api_key=KEY)
            assert ei.value.status == grpc.StatusCode.INVALID_ARGUMENT, change
            assert word in ei.value.envelope.text, (change, ei.value.envelope.text)
    assert servers["log"].last_offset() == 0  # nothing was logged
    assert servers["pipe"].catalog.n_items == 6


def test_add_item_is_logged_searchable_and_recalled_at_once(servers: dict[str, Any]) -> None:
    pipe: Pipeline = servers["pipe"]
    with GrpcClient(servers["addr"]) as c:
        r = c.add_item("7", **ROBOT, api_key=KEY, log_id="L7")
        assert r.error.code == 0 and r.log_id == "L7" and r.release_id == "movies-g"
        assert r.created and r.persisted and r.offset >= 1 and r.embedded
        assert (r.item.item_id, r.item.title, r.item.year, list(r.item.genres)) == (
            "7",
            "Robot Wars",
            2024,
            ["Sci-Fi"],
        )
        [rec] = servers["log"].read()
        assert (rec.type, rec.item_id, rec.payload["title"]) == ("item", "7", "Robot Wars")
        assert [it.title for it in c.get_items(["7"]).items] == ["Robot Wars"]
        # search: by title, and by meaning ("droids" is in its text and Star Wars')
        s = c.search("robot wars", k=1)
        assert s.mode == "semantic" and [h.item.item_id for h in s.items] == ["7"]
        assert {h.item.item_id for h in c.search("droids", k=2).items} == {"1", "7"}
        # recall: a Star Wars fan gets it through the new_items source
        rec_ = c.recall(make_user(liked=["1"]))
        got = {cand.item_id: list(cand.sources) for cand in rec_.candidates}
        assert NEW_ITEMS_SOURCE in got["7"]
        # the same id again: nothing changes, nothing logged
        again = c.add_item("7", **ROBOT, api_key=KEY)
        assert not again.created and not again.persisted and servers["log"].last_offset() == rec.offset
    assert pipe.catalog.n_items == 7


def test_search_checks_its_arguments(servers: dict[str, Any]) -> None:
    with GrpcClient(servers["addr"]) as c:
        for q, k in (("", 0), (" ", 0), ("x" * 201, 0), ("star", -1), ("star", 10_000)):
            with pytest.raises(ServiceCallError) as ei:
                c.search(q, k)
            assert ei.value.status == grpc.StatusCode.INVALID_ARGUMENT, (q[:5], k)


def test_add_item_off_without_a_key(release: MemoryRelease) -> None:
    state = ServiceState.of(Pipeline(release))
    server = start_server("item", make_servicer("item", state), 0, workers=1)
    try:
        with GrpcClient({"item": f"127.0.0.1:{server.port}"}) as c:
            with pytest.raises(ServiceCallError) as ei:
                c.add_item("7", **ROBOT, api_key=KEY)
            assert ei.value.status == grpc.StatusCode.PERMISSION_DENIED
            assert "RECSTACK_SERVE_API_KEY" in ei.value.envelope.text
    finally:
        server.stop(0)


def test_another_service_reading_the_log_gets_the_item(
    servers: dict[str, Any], release: MemoryRelease, log_url: str
) -> None:
    # a recall service in another process: its own state over the same release and log
    other_log = open_log(log_url)
    other = build_state(release, ServingSettings(), event_log=other_log)
    assert other.feed is not None and other.pipeline.catalog.n_items == 6
    with GrpcClient(servers["addr"]) as c:
        c.add_item("7", **ROBOT, api_key=KEY)
    other.feed.catch_up()  # what the service's log follower does every event_poll_s
    assert other.pipeline.catalog.item_index(7) == 6
    assert other.pipeline.catalog.titles[6] == "Robot Wars"
    assert other_log is not None
    other_log.close()


def test_cli_client_add_item_and_search(servers: dict[str, Any]) -> None:
    from recstack.cli import app

    runner = CliRunner()
    addr = servers["addr"]["item"]
    res = runner.invoke(
        app,
        ["client", "add-item", "7", "--title", "Robot Wars", "--year", "2024", "--genres", "Sci-Fi",
         "--text", "Droids fight in space.", "--addr", addr],
        env={"RECSTACK_SERVE_API_KEY": KEY, "COLUMNS": "200"},
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "item 7 added" in res.output and "event log offset" in res.output
    res = runner.invoke(
        app, ["client", "search", "robot wars", "--k", "2", "--addr", addr], env={"COLUMNS": "200"}
    )
    assert res.exit_code == 0, res.output
    assert "Robot Wars" in res.output and "semantic" in res.output
    res = runner.invoke(
        app, ["client", "add-item", "8", "--title", "X", "--addr", addr], env={"RECSTACK_SERVE_API_KEY": ""}
    )
    assert res.exit_code != 0 and isinstance(res.exception, ServiceCallError)
    assert res.exception.status == grpc.StatusCode.UNAUTHENTICATED
