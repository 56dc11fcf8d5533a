"""Helpers shared by the tests and the benchmarks: free ports, a small release, a real server.

- `free_port` / `free_ports`: ports on 127.0.0.1 that nothing listens on (bound then released).
- `build_release` / `build_small_release`: a release built from a build TOML into a releases
  directory and promoted to a channel (ML-100K pop + itemknn + ease builds in a few seconds).
- `ServerProcess`: ``recstack serve`` as a subprocess (own process group) on a free port, as a
  context manager that waits for ``/readyz`` and stops the whole group on exit. Its output goes to
  a temporary file (a pipe nobody reads would block a chatty server), quoted when start-up fails.

Nothing here is used by the library itself; it only needs the core dependencies.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO

import httpx

__all__ = [
    "SMALL_MODELS",
    "ServerProcess",
    "ServerStartError",
    "build_release",
    "build_small_release",
    "free_port",
    "free_ports",
    "recstack_command",
    "small_release_toml",
    "wait_ready",
]

#: retrievers of `build_small_release` (no evaluation, no ANN index: a few seconds on ML-100K)
SMALL_MODELS = ("pop", "itemknn", "ease")


class ServerStartError(RuntimeError):
    """The server exited or did not answer ``/readyz`` in time (the message quotes its output)."""


def free_ports(n: int, host: str = "127.0.0.1") -> list[int]:
    """``n`` distinct ports that were free on ``host`` a moment ago (all bound at once, then released)."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind((host, 0))
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


def free_port(host: str = "127.0.0.1") -> int:
    """One port that was free on ``host`` a moment ago."""
    return free_ports(1, host)[0]


def recstack_command() -> list[str]:
    """The ``recstack`` CLI of the running interpreter's environment (script, else ``-m``)."""
    exe = Path(sys.executable).parent / "recstack"
    return [str(exe)] if exe.is_file() else [sys.executable, "-m", "recstack.cli"]


def small_release_toml(models: Sequence[str] = SMALL_MODELS, dataset: str = "ml-100k") -> str:
    """A build TOML with ``models`` (registry names), no evaluation and no ANN index."""
    text = f'[dataset]\nsource = "{dataset}"\n[evaluation]\nenabled = false\nreport = false\n'
    text += "".join(f'[[models]]\nname = "{m}"\n' for m in models)
    return text + '[index]\nbackend = "none"\n'


def build_release(
    releases_dir: str | Path, config_toml: str, *, channel: str | None = "production", force: bool = False
) -> str:
    """Build the pipeline of ``config_toml`` (the text of a build TOML) into ``releases_dir``, promote
    it to ``channel`` (None: not promoted; ``force``: even when its parent is not that channel's
    release) and return the release id."""
    from recstack.release.build import BuildConfig, build
    from recstack.release.registry import Registry

    root = Path(releases_dir)
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="recstack-build-") as tmp:
        cfg = Path(tmp) / "build.toml"
        cfg.write_text(config_toml)
        manifest = build(BuildConfig.from_toml(cfg), root)
    if channel is not None:
        Registry(root).promote(manifest.id, channel, force=force)
    return manifest.id


def build_small_release(
    releases_dir: str | Path, models: Sequence[str] = SMALL_MODELS, *, channel: str | None = "production"
) -> str:
    """A quick ML-100K release (read from the data dir, `recstack.data.paths`) with ``models`` into
    ``releases_dir``, promoted to ``channel`` -> its id."""
    return build_release(releases_dir, small_release_toml(models), channel=channel)


def wait_ready(
    url: str,
    proc: subprocess.Popen[bytes] | None = None,
    timeout: float = 180.0,
    path: str = "/readyz",
) -> None:
    """Poll ``url + path`` until it answers 200; `ServerStartError` when ``proc`` exits first or after
    ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(url + path, timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if proc is not None and proc.poll() is not None:
            raise ServerStartError(f"the server exited with code {proc.returncode} before {path} answered")
        if time.monotonic() > deadline:
            raise ServerStartError(f"{url}{path} did not answer 200 within {timeout:.0f} s")
        time.sleep(0.2)


class ServerProcess:
    """``recstack -q serve`` on a free port of 127.0.0.1, started by ``with`` (or `start`) and stopped
    (SIGTERM to its process group, SIGKILL after ``stop_timeout`` s) on exit.

    ``env`` is added to a copy of ``os.environ`` from which ``PROMETHEUS_MULTIPROC_DIR`` is removed
    (``recstack serve --workers N`` makes its own; pass one in ``env`` to read the metric files);
    ``RECSTACK_SERVE_LOG_JSON`` defaults to false. ``args`` are extra ``recstack serve`` options.
    """

    def __init__(
        self,
        releases_dir: str | Path,
        *,
        release: str | None = None,
        workers: int = 1,
        port: int | None = None,
        args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        timeout: float = 180.0,
        stop_timeout: float = 20.0,
    ) -> None:
        self.releases_dir = Path(releases_dir)
        self.release = release
        self.workers = workers
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.args = list(args)
        self.extra_env = dict(env or {})
        self.timeout = timeout
        self.stop_timeout = stop_timeout
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    def command(self) -> list[str]:
        cmd = [*recstack_command(), "-q", "serve", "--releases-dir", str(self.releases_dir)]
        if self.release is not None:
            cmd += ["--release", self.release]
        return [*cmd, "--port", str(self.port), "--workers", str(self.workers), *self.args]

    def environment(self) -> dict[str, str]:
        env = {**os.environ, "RECSTACK_SERVE_LOG_JSON": "false"}
        env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        env.update(self.extra_env)
        return env

    def output(self, limit: int = 4000) -> str:
        """The last ``limit`` characters the server wrote to stdout / stderr."""
        if self._log is None:
            return ""
        self._log.flush()
        self._log.seek(0)
        return self._log.read().decode(errors="replace")[-limit:]

    def start(self) -> ServerProcess:
        if self.proc is not None:
            raise RuntimeError("the server is already started")
        self._log = tempfile.TemporaryFile(prefix="recstack-serve-")  # noqa: SIM115 - closed by stop()
        self.proc = subprocess.Popen(
            self.command(),
            env=self.environment(),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            wait_ready(self.url, self.proc, self.timeout)
        except ServerStartError as exc:
            out = self.output()
            self.stop()
            raise ServerStartError(f"recstack serve did not become ready: {exc}\n{out}") from None
        return self

    def stop(self) -> None:
        """Stop the server's process group (idempotent)."""
        proc, self.proc = self.proc, None
        if proc is not None:
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                    proc.wait(timeout=self.stop_timeout)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
                except ProcessLookupError:
                    proc.wait()
            else:  # the leader is gone: make sure no worker of its group survives
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGKILL)
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
