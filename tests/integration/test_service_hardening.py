"""A real ``recstack serve`` (issue 17): a reload reaches every worker, a restarted worker serves
the reloaded release (not the channel), connections have a request deadline and a limit, an error
keeps the client's connection, and a tampered release is refused at start in one line."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from recstack.serving._target import RunDir
from recstack.testing import ServerProcess, build_small_release, free_port, recstack_command

pytestmark = [pytest.mark.slow, pytest.mark.ml100k]


@pytest.fixture(scope="module")
def two_releases(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, str]:
    """(releases dir, A promoted to production, B built but not promoted)."""
    root = tmp_path_factory.mktemp("releases")
    a = build_small_release(root, ("pop", "itemknn"))
    time.sleep(1.1)  # release ids carry the second they were built in
    b = build_small_release(root, ("pop", "itemknn"), channel=None)
    return root, a, b


def _readyz_releases(url: str, n: int = 20) -> dict[str, int]:
    """The release named by ``n`` /readyz calls, each on a new connection (so every worker answers)."""
    seen: dict[str, int] = {}
    for _ in range(n):
        with httpx.Client(base_url=url, timeout=10) as c:
            rid = c.get("/readyz").json()["release_id"]
        seen[rid] = seen.get(rid, 0) + 1
    return seen


def _wait_workers(
    run_dir: Path, n: int, exclude: set[int] = frozenset(), timeout: float = 120
) -> dict[int, dict]:  # type: ignore[assignment, type-arg]
    deadline = time.monotonic() + timeout
    while True:
        ws = {pid: w for pid, w in RunDir(run_dir).statuses().items() if pid not in exclude}
        if len(ws) >= n and all(w.get("release") for w in ws.values()):
            return ws
        assert time.monotonic() < deadline, f"only {len(ws)} of {n} workers reported: {ws}"
        time.sleep(0.2)


def test_reload_reaches_every_worker_and_a_restarted_one(
    two_releases: tuple[Path, str, str], tmp_path: Path
) -> None:
    """Issue 17, item 3: /readyz showed the new release on 2 of 10 calls after a reload, and a
    restarted worker loaded the channel instead of the reloaded release."""
    root, a, b = two_releases
    run_dir = tmp_path / "run"
    env = {"RECSTACK_SERVE_API_KEY": "k"}
    with ServerProcess(root, workers=2, env=env, args=["--run-dir", str(run_dir)]) as srv:
        _wait_workers(run_dir, 2)
        assert _readyz_releases(srv.url) == {a: 20}
        r = httpx.post(
            srv.url + "/admin/reload",
            params={"wait": "true"},
            json={"release": b},
            headers={"X-API-Key": "k"},
            timeout=120,
        )
        assert r.status_code == 200, r.text
        assert {w["release"] for w in r.json()["workers"].values()} == {b} and len(r.json()["workers"]) == 2
        assert _readyz_releases(srv.url) == {b: 20}
        assert json.loads((run_dir / "target.json").read_text())["release"] == b
        victim = min(RunDir(run_dir).statuses())
        os.kill(victim, signal.SIGKILL)
        ws = _wait_workers(run_dir, 2, exclude={victim})
        assert {w["release"] for w in ws.values()} == {b}  # the replacement loaded the target, not A
        assert _readyz_releases(srv.url) == {b: 20}


def _closed_within(sock: socket.socket, seconds: float) -> bool:
    """Whether the server closes ``sock`` (recv returns b"" or resets) within ``seconds``."""
    sock.settimeout(seconds)
    try:
        return sock.recv(1024) == b""
    except (ConnectionResetError, BrokenPipeError):
        return True
    except TimeoutError:
        return False


@pytest.fixture(scope="module")
def guarded_server(two_releases: tuple[Path, str, str]) -> Iterator[ServerProcess]:
    root, _, _ = two_releases
    env = {"RECSTACK_SERVE_HEADER_TIMEOUT": "3", "RECSTACK_SERVE_MAX_CONNECTIONS": "8"}
    with ServerProcess(root, workers=1, env=env) as srv:
        yield srv


def test_half_open_connections_are_closed(guarded_server: ServerProcess) -> None:
    """Issue 17, item 2: 4,000 half-open connections were all kept."""
    port = guarded_server.port
    silent = socket.create_connection(("127.0.0.1", port))
    partial = socket.create_connection(("127.0.0.1", port))
    partial.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\n")  # the head never ends
    try:
        assert _closed_within(silent, 15.0)  # the request deadline is 3 s
        assert _closed_within(partial, 15.0)
    finally:
        silent.close()
        partial.close()


def test_connection_limit(guarded_server: ServerProcess) -> None:
    port = guarded_server.port
    held = [socket.create_connection(("127.0.0.1", port)) for _ in range(8)]
    try:
        extra = socket.create_connection(("127.0.0.1", port))
        # the 9th connection is closed without an answer (the 8 held ones live for the 3 s deadline)
        extra.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
        assert _closed_within(extra, 2.5)
        extra.close()
    finally:
        for s in held:
            s.close()
    time.sleep(0.3)
    assert httpx.get(guarded_server.url + "/healthz", timeout=5).status_code == 200


def test_keep_alive_survives_errors(guarded_server: ServerProcess) -> None:
    """Issue 17, item 1: each 500 dropped the client's keep-alive connection. Errors are answered on
    the same connection now (a 404, a 422 and a 200 on one socket)."""
    with socket.create_connection(("127.0.0.1", guarded_server.port), timeout=10) as s:
        f = s.makefile("rb")
        for path in ("/v1/items/999999", "/v1/items?offset=-1", "/healthz"):
            s.sendall(f"GET {path} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
            status = f.readline()
            length = 0
            while (line := f.readline()) not in (b"\r\n", b""):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            f.read(length)
            assert status.split()[1] in (b"404", b"422", b"200"), status


def test_tampered_release_is_refused_at_start_in_one_line(
    two_releases: tuple[Path, str, str], tmp_path: Path
) -> None:
    """Issue 17, item 6: reported after "serving release ... on http://" inside ~135 traceback lines."""
    import shutil

    root, a, _ = two_releases
    copy = tmp_path / "releases"
    shutil.copytree(root, copy)
    victim = next(
        p for p in (copy / a).rglob("*") if p.is_file() and p.name != "manifest.json" and p.stat().st_size > 0
    )
    victim.write_bytes(victim.read_bytes()[:-1] + b"!")
    port = free_port()
    res = subprocess.run(
        [*recstack_command(), "serve", "--releases-dir", str(copy), "--port", str(port)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    out = (res.stdout + res.stderr).strip()
    assert res.returncode == 2, out
    assert "serving release" not in out and "Traceback" not in out
    assert out.startswith("error:") and victim.name in out and len(out.splitlines()) <= 3, out
