"""A real ``recstack serve --workers 2`` with its default event log: every 201 event survives a
``kill -9`` of the whole server, once, in the log and in the histories of both workers after the
restart; events reach the other worker while serving."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import httpx
import pytest

from recstack.events import open_log
from recstack.testing import ServerProcess, build_small_release

pytestmark = [pytest.mark.slow, pytest.mark.ml100k]


@pytest.fixture(scope="module")
def releases_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("evserve") / "releases"
    build_small_release(root, ("pop", "itemknn"))
    return root


def _history(url: str, user: str) -> list[int]:
    """The user's history timestamps, read over a fresh connection (either worker may answer)."""
    with httpx.Client(timeout=30) as c:
        r = c.get(f"{url}/v1/users/{user}", params={"history_limit": 1000})
    return sorted(h["timestamp"] for h in r.json()["history"]) if r.status_code == 200 else []


def test_kill_9_loses_no_acknowledged_event(releases_dir: Path) -> None:
    log_path = releases_dir.parent / "events" / "events.db"  # `serve`'s default: beside the releases
    srv = ServerProcess(releases_dir, workers=2).start()
    acked: dict[str, list[int]] = {}
    t0 = int(time.time()) - 3600
    try:
        with httpx.Client(base_url=srv.url, timeout=30) as c:
            for i in range(120):
                user = f"kill9-{i % 6}"
                r = c.post("/v1/events", json={"user_id": user, "item_id": 1 + i % 40, "type": "view",
                                               "timestamp": t0 + i})  # fmt: skip
                assert r.status_code == 201, r.text
                acked.setdefault(user, []).append(t0 + i)
        # a worker that did not receive an event gets it from the log within a poll interval
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if all(_history(srv.url, "kill9-0") == acked["kill9-0"] for _ in range(6)):
                break
            time.sleep(0.2)
        assert all(_history(srv.url, "kill9-0") == acked["kill9-0"] for _ in range(6))
    finally:
        assert srv.proc is not None
        os.killpg(srv.proc.pid, signal.SIGKILL)  # the supervisor and both workers at once
        srv.proc.wait()
        srv.proc = None
        srv.stop()
    log = open_log(log_path)
    assert log is not None
    events = log.read(limit=10_000)
    log.close()
    assert len(events) == 120 and len({e.ts for e in events}) == 120  # each once
    with ServerProcess(releases_dir, workers=2) as again:
        time.sleep(1.0)  # the second worker may become ready a moment after the first
        for user, stamps in acked.items():
            for _ in range(4):  # fresh connections: both workers answer some of them
                assert _history(again.url, user) == stamps
