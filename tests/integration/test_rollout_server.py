"""Automatic roll-out on a real ``recstack serve --workers 2``: promoting a release to the served
channel makes every worker serve it without any reload call; a rollback is the same path; a server
of a pinned ``--release`` does not move."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from recstack.release import Registry
from recstack.serving._target import RunDir
from recstack.testing import ServerProcess, build_small_release

pytestmark = [pytest.mark.slow, pytest.mark.ml100k]


def _all_on(run_dir: Path, release: str, workers: int = 2, timeout: float = 120.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        st = RunDir(run_dir).statuses()
        if len(st) >= workers and all(s.get("release") == release for s in st.values()):
            return True
        time.sleep(0.1)
    return False


def test_channel_moves_roll_out_by_themselves(tmp_path: Path) -> None:
    root = tmp_path / "releases"
    a = build_small_release(root, ("pop",))
    b = build_small_release(root, ("pop", "itemknn"), channel=None)
    run = tmp_path / "run"
    pinned_run = tmp_path / "pinned"
    with (
        ServerProcess(root, workers=2, args=["--run-dir", str(run)]) as srv,
        ServerProcess(root, workers=1, release=a, args=["--run-dir", str(pinned_run)]) as pinned,
    ):
        assert _all_on(run, a)
        Registry(root).promote(b, force=True)
        assert _all_on(run, b), RunDir(run).statuses()
        for _ in range(8):  # fresh connections: both workers answer with the new release
            assert httpx.get(f"{srv.url}/v1/release", timeout=30).json()["release_id"] == b
        Registry(root).rollback()
        assert _all_on(run, a), RunDir(run).statuses()
        assert httpx.get(f"{pinned.url}/v1/release", timeout=30).json()["release_id"] == a
