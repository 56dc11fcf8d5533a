"""Fixtures for tests that need Redis or PostgreSQL (loaded from tests/conftest.py via pytest_plugins).

Redis: ``RECSTACK_TEST_REDIS_URL`` if set, else 127.0.0.1:6379 if it answers, else a private
``redis-server`` on a free port started for the session and stopped at its end. Each test gets a
client plus a unique key prefix (``redis_prefix``) whose keys are deleted afterwards.

PostgreSQL: ``RECSTACK_TEST_POSTGRES_DSN`` if set, else ``postgresql://postgres@127.0.0.1:5432/test``
(trust auth); if nothing answers, ``pg_ctlcluster --skip-systemctl-redirect <version> main start`` is
tried (and the cluster stopped at the end of the session when this fixture started it). The
database ``test`` is created when missing.

A missing server skips locally and fails in CI (``require_service``).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import require_service

DEFAULT_REDIS = ("127.0.0.1", 6379)
DEFAULT_PG_DSN = "postgresql://postgres@127.0.0.1:5432/test"


def _port_answers(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _redis_ping(url: str) -> bool:
    import redis

    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=1)
        ok = bool(client.ping())
        client.close()
        return ok
    except redis.RedisError:
        return False


# ------------------------------------------------------------------------------------------ Redis


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """URL of a Redis server that answers (started for the session if needed)."""
    env = os.environ.get("RECSTACK_TEST_REDIS_URL")
    if env:
        if not _redis_ping(env):
            require_service("redis", f"RECSTACK_TEST_REDIS_URL={env} does not answer PING")
        yield env
        return
    host, port = DEFAULT_REDIS
    url = f"redis://{host}:{port}/0"
    if _port_answers(host, port) and _redis_ping(url):
        yield url
        return
    exe = shutil.which("redis-server")
    if exe is None:
        require_service("redis", f"nothing answers on {host}:{port} and redis-server is not installed")
    port = _free_port()
    proc = subprocess.Popen(
        [
            str(exe),
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--daemonize",
            "no",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"redis://127.0.0.1:{port}/0"
    try:
        deadline = time.monotonic() + 10
        while not _redis_ping(url):
            if proc.poll() is not None or time.monotonic() > deadline:
                err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
                require_service("redis", f"redis-server on port {port} did not start: {err[-500:]}")
            time.sleep(0.05)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture
def redis_prefix() -> str:
    """A key prefix unique to this test (``rstest-<hex>``)."""
    return f"rstest-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def redis_client(redis_url: str, redis_prefix: str) -> Iterator[Any]:
    """A binary ``redis.Redis`` client; every key under ``redis_prefix`` is deleted afterwards."""
    import redis

    client = redis.Redis.from_url(redis_url, decode_responses=False)
    try:
        yield client
    finally:
        keys = list(client.scan_iter(match=f"{redis_prefix}:*", count=1000))
        for i in range(0, len(keys), 1000):
            client.unlink(*keys[i : i + 1000])
        client.close()


# ------------------------------------------------------------------------------------- PostgreSQL


def _pg_connect(dsn: str) -> Any:
    import psycopg

    return psycopg.connect(dsn, connect_timeout=3, autocommit=True)


def _pg_ok(dsn: str) -> bool:
    import psycopg

    try:
        with _pg_connect(dsn) as conn:
            conn.execute("SELECT 1")
        return True
    except psycopg.Error:
        return False


def _pg_ensure_database(dsn: str) -> None:
    """Create the DSN's database when the server answers but the database is missing."""
    import psycopg
    from psycopg import sql

    info = psycopg.conninfo.conninfo_to_dict(dsn)
    dbname = str(info.get("dbname") or "test")
    admin = psycopg.conninfo.make_conninfo(dsn, dbname="postgres")
    try:
        with _pg_connect(admin) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (dbname,)).fetchone()
            if not exists:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))
    except psycopg.Error:
        pass


def _pg_clusters() -> list[str]:
    root = Path("/etc/postgresql")
    return sorted(p.name for p in root.iterdir() if (p / "main").is_dir()) if root.is_dir() else []


@pytest.fixture(scope="session")
def postgres_dsn() -> Iterator[str]:
    """DSN of a PostgreSQL database ``test`` that answers (cluster started for the session if needed)."""
    dsn = os.environ.get("RECSTACK_TEST_POSTGRES_DSN", DEFAULT_PG_DSN)
    started: str | None = None
    if not _pg_ok(dsn):
        _pg_ensure_database(dsn)
    if not _pg_ok(dsn) and "RECSTACK_TEST_POSTGRES_DSN" not in os.environ:
        exe = shutil.which("pg_ctlcluster")
        versions = _pg_clusters()
        if exe is None or not versions:
            require_service("postgres", "nothing answers on 127.0.0.1:5432 and no local cluster to start")
        version = versions[-1]
        res = subprocess.run(
            [str(exe), "--skip-systemctl-redirect", version, "main", "start"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        if res.returncode == 0:
            started = version
        deadline = time.monotonic() + 20
        while not _pg_ok(dsn) and time.monotonic() < deadline:
            _pg_ensure_database(dsn)
            time.sleep(0.2)
    if not _pg_ok(dsn):
        require_service("postgres", f"{dsn} does not answer")
    try:
        yield dsn
    finally:
        if started is not None:
            subprocess.run(
                ["pg_ctlcluster", "--skip-systemctl-redirect", started, "main", "stop"],
                capture_output=True,
                timeout=60,
            )
