"""All five gRPC services as processes started by `recstack services start` on an ML-100K release
(pop + itemknn + ease): the chain for a known user, a profile and liked items equals the
single-process pipeline; stopping the rank service midway gives degraded answers."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from recstack.serving.grpc.client import GrpcClient, ServiceCallError, make_user
from recstack.serving.grpc.launcher import read_info, stop_services
from recstack.serving.pipeline import Pipeline, RecRequest
from recstack.testing import build_small_release, free_ports, recstack_command

pytestmark = [pytest.mark.slow, pytest.mark.ml100k]

NAMES = ("user", "item", "recall", "rank", "aggregator")
API_KEY = "grpc-test-key"


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    cmd = [*recstack_command(), "-q", *args]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)


@pytest.fixture(scope="module")
def releases_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("grpc-releases")
    build_small_release(root, ("pop", "itemknn", "ease"))
    return root


@pytest.fixture(scope="module")
def services(releases_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, object]]:
    run_dir = tmp_path_factory.mktemp("grpc-run")
    ports = dict(zip(NAMES, free_ports(len(NAMES)), strict=True))
    env = {
        **os.environ,
        "RECSTACK_HOME": str(run_dir.parent / "home-unused"),
        "COLUMNS": "200",
        "RECSTACK_SERVE_API_KEY": API_KEY,
    }
    spec = ",".join(f"{n}={p}" for n, p in ports.items())
    log_url = f"sqlite:///{run_dir / 'events.db'}"
    try:
        res = _cli(
            "services", "start", "--all", "--releases-dir", str(releases_dir), "--run-dir", str(run_dir),
            "--ports", spec, "--hop-timeout-ms", "1000", "--event-log", log_url, env=env,
        )  # fmt: skip
        assert res.returncode == 0, res.stdout + res.stderr
        yield {"run_dir": run_dir, "ports": ports, "env": env}
    finally:
        stop_services(run_dir=run_dir, timeout=10)  # also kills whatever a failed test left


@pytest.fixture(scope="module")
def pipeline(releases_dir: Path) -> Pipeline:
    from recstack.serving._state import build_state, default_loader
    from recstack.serving.settings import ServingSettings

    settings = ServingSettings(releases_dir=releases_dir)
    return build_state(default_loader(settings)("production"), settings).pipeline


def _client(services: dict[str, object]) -> GrpcClient:
    ports: dict[str, int] = services["ports"]  # type: ignore[assignment]
    return GrpcClient({n: f"127.0.0.1:{p}" for n, p in ports.items()}, timeout=10)


def _ids(p: Pipeline, res_items: object) -> list[str]:
    return [str(p.catalog.item_ids[i]) for i in res_items.tolist()]  # type: ignore[attr-defined]


def test_status_reports_serving(services: dict[str, object]) -> None:
    res = _cli("services", "status", "--run-dir", str(services["run_dir"]), env=services["env"])  # type: ignore[arg-type]
    assert res.returncode == 0, res.stdout
    assert res.stdout.count("SERVING") == 5


@pytest.mark.parametrize(
    ("user", "req"),
    [
        (make_user("196"), RecRequest(user_id="196", k=10)),
        (make_user(profile={"age": 25, "gender": "M"}), RecRequest(profile={"age": 25, "gender": "M"}, k=10)),
        (make_user(liked=["50", "181"]), RecRequest(liked_items=["50", "181"], k=10)),
    ],
    ids=["known", "profile", "liked"],
)
def test_chain_matches_pipeline(
    services: dict[str, object], pipeline: Pipeline, user: object, req: RecRequest
) -> None:
    res = pipeline.recommend(req)
    with _client(services) as c:
        r = c.recommend(user, k=10)  # type: ignore[arg-type]
    assert r.error.code == 0 and not r.error.degraded
    assert [s.item.item_id for s in r.items] == _ids(pipeline, res.items)
    assert [s.score for s in r.items] == pytest.approx(res.scores.tolist(), rel=1e-6)
    assert r.release_id == pipeline.release.id and r.user_kind == res.user_kind


def test_cli_client_prints_tables(services: dict[str, object]) -> None:
    ports: dict[str, int] = services["ports"]  # type: ignore[assignment]
    env: dict[str, str] = services["env"]  # type: ignore[assignment]
    res = _cli("client", "as", "196", "--k", "3", "--addr", f"127.0.0.1:{ports['aggregator']}", env=env)
    assert res.returncode == 0, res.stderr
    assert "recommendations" in res.stdout and "code 0" in res.stdout
    res = _cli("client", "um", "99999", "--addr", f"127.0.0.1:{ports['user']}", env=env)
    assert res.returncode == 2 and "NOT_FOUND" in res.stdout + res.stderr
    res = _cli("client", "cm", "50", "--addr", f"127.0.0.1:{ports['item']}", env=env)
    assert res.returncode == 0 and "Star Wars" in res.stdout


def test_unknown_ids_are_not_found(services: dict[str, object]) -> None:
    with _client(services) as c:
        with pytest.raises(ServiceCallError) as ei:
            c.recommend(make_user("no-such-user"))
        assert ei.value.status == grpc.StatusCode.NOT_FOUND
        with pytest.raises(ServiceCallError) as ei:
            c.get_items(["50", "99999"])
        assert ei.value.status == grpc.StatusCode.NOT_FOUND and "99999" in ei.value.envelope.text


def test_item_added_through_the_item_service_reaches_the_other_services(services: dict[str, object]) -> None:
    ports: dict[str, int] = services["ports"]  # type: ignore[assignment]
    env: dict[str, str] = services["env"]  # type: ignore[assignment]
    item = f"127.0.0.1:{ports['item']}"
    res = _cli(
        "client", "add-item", "99001", "--title", "Clockwork Galaxy", "--year", "2026",
        "--genres", "Sci-Fi,Adventure", "--text", "Rebel robots in space.", "--addr", item, env=env,
    )  # fmt: skip
    assert res.returncode == 0, res.stdout + res.stderr
    assert "item 99001 added" in res.stdout and "event log offset" in res.stdout
    res = _cli("client", "search", "clockwork galaxy", "--k", "3", "--addr", item, env=env)
    assert res.returncode == 0 and "Clockwork Galaxy" in res.stdout
    # the recall service (another process) reads the item from the log: a visitor who liked it
    # is served (an unknown liked item is NOT_FOUND until then)
    deadline = time.monotonic() + 30
    with _client(services) as c:
        while True:
            try:
                r = c.recall(make_user(liked=["99001", "50"]))
                break
            except ServiceCallError as exc:
                assert exc.status == grpc.StatusCode.NOT_FOUND, exc
                assert time.monotonic() < deadline, "the recall service never read the item from the log"
                time.sleep(0.2)
        assert r.candidates and all(cand.item_id not in ("99001", "50") for cand in r.candidates)
        assert [it.title for it in c.get_items(["99001"]).items] == ["Clockwork Galaxy"]


def test_zz_rank_stopped_midway_degrades(services: dict[str, object], pipeline: Pipeline) -> None:
    # runs last in this module (the services fixture is shared): stop rank, then ask again
    run_dir: Path = services["run_dir"]  # type: ignore[assignment]
    with _client(services) as c:
        before = c.recommend(make_user("196"), k=5)
        assert not before.error.degraded
        info = read_info(run_dir, "rank")
        assert info is not None
        res = _cli("services", "stop", "rank", "--run-dir", str(run_dir), env=services["env"])  # type: ignore[arg-type]
        assert res.returncode == 0 and "rank" in res.stdout
        after = c.recommend(make_user("196"), k=5)
        liked = c.recommend(make_user(liked=["50", "181"]), k=5)
    assert after.error.degraded and list(after.error.failed_hops) == ["rank"]
    assert liked.error.degraded and list(liked.error.failed_hops) == ["rank"]
    # degraded answer = the first 5 recall candidates in recall order (no rank, no genre-cap rerank)
    with _client(services) as c:
        recall = c.recall(make_user("196"), k=5)
    assert [s.item.item_id for s in after.items] == [x.item_id for x in recall.candidates[:5]]
    assert [s.score for s in after.items] == [x.score for x in recall.candidates[:5]]
    assert after.items[0].item.title  # user, recall and item still answer
    status = _cli("services", "status", "--run-dir", str(run_dir), env=services["env"])  # type: ignore[arg-type]
    assert status.returncode == 0  # a stopped service is not an unhealthy one
