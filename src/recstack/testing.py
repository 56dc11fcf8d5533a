"""Helpers shared by the tests and the benchmarks: free ports, a small release, a real server.

- `free_port` / `free_ports`: ports on 127.0.0.1 that nothing listens on (bound then released).
- `build_release` / `build_small_release`: a release built from a build TOML into a releases
  directory and promoted to a channel (ML-100K pop + itemknn + ease builds in a few seconds).
- `RayCluster`: a local 2-node Ray cluster (``ray start`` processes, own process groups).
- `MilvusServer`: a Milvus server on a TCP port without Docker (``python -m milvus_lite server``,
  the gRPC server of the ``milvus-lite`` wheel), own process group, for `recstack.index.milvus`
  with an ``http://`` URI shared by several processes.
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
    "MilvusServer",
    "RayCluster",
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


def _stop_group(proc: subprocess.Popen[bytes], timeout: float) -> None:
    """SIGTERM to ``proc``'s process group, SIGKILL after ``timeout`` s; idempotent."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        except ProcessLookupError:
            proc.wait()
    # the leader is gone: make sure no process of its group survives (raylet, workers, ...)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
        deadline = time.monotonic() + 10.0
        while time.monotonic() < deadline:  # until the kernel has delivered it (raises when none left)
            os.killpg(proc.pid, 0)
            time.sleep(0.2)


class RayCluster:
    """A local multi-node Ray cluster: ``ray start --head --block`` plus ``nodes - 1`` ``ray start
    --address --block`` worker nodes of ``cpus_per_node`` CPUs, each in its own process group with its
    own free ports, under a short temporary directory; ``with`` waits until every node is alive and
    stops the groups on exit (never ``ray stop``, which would stop every Ray on the machine).
    ``address`` is the GCS address (``127.0.0.1:port``) to pass to ``ray.init`` / ``--address``."""

    def __init__(self, nodes: int = 2, cpus_per_node: int = 1, timeout: float = 180.0) -> None:
        self.nodes = nodes
        self.cpus = cpus_per_node
        self.timeout = timeout
        self.procs: list[subprocess.Popen[bytes]] = []
        self._logs: list[IO[bytes]] = []
        self._dir: str | None = None
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        #: environment of the nodes, which drivers of this cluster need too: token authentication off
        #: (a private test cluster on 127.0.0.1; with it on, a token another Ray wrote to the shared
        #: ~/.ray/auth_token between the head's and the node's start locks the node out)
        self.env = {"RAY_AUTH_MODE": "disabled"}

    def _start(self, head: bool) -> None:
        ray = Path(sys.executable).parent / "ray"
        ports = free_ports(8)
        cmd = [str(ray), "start", "--block", f"--num-cpus={self.cpus}", "--node-ip-address=127.0.0.1"]
        cmd += [
            f"--node-manager-port={ports[0]}",
            f"--object-manager-port={ports[1]}",
            f"--metrics-export-port={ports[2]}",
            f"--dashboard-agent-listen-port={ports[3]}",
            f"--dashboard-agent-grpc-port={ports[4]}",
            f"--runtime-env-agent-port={ports[5]}",
        ]
        if head:
            assert self._dir is not None
            cmd += [
                "--head",
                f"--port={self.port}",
                f"--ray-client-server-port={ports[6]}",
                "--include-dashboard=false",
                f"--dashboard-port={ports[7]}",
                f"--temp-dir={self._dir}",
            ]
        else:
            cmd += [f"--address={self.address}"]
        log = tempfile.TemporaryFile(prefix="recstack-ray-")  # noqa: SIM115 - closed by stop()
        self._logs.append(log)
        env = {**os.environ, **self.env, "RAY_gcs_server_port_wait_time_s": "120"}
        self.procs.append(
            subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        )

    def output(self, limit: int = 3000) -> str:
        out = []
        for log in self._logs:
            log.flush()
            log.seek(0)
            out.append(log.read().decode(errors="replace")[-limit:])
        return "\n---\n".join(out)

    def _alive_nodes(self) -> int:
        cmd = [
            sys.executable,
            "-c",
            "import ray, sys; ray.init(address=sys.argv[1], log_to_driver=False); "
            "print(sum(1 for n in ray.nodes() if n['Alive'])); ray.shutdown()",
            self.address,
        ]
        env = {**os.environ, **self.env}
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False, env=env)
        lines = r.stdout.strip().splitlines()
        return int(lines[-1]) if r.returncode == 0 and lines and lines[-1].isdigit() else 0

    def start(self) -> RayCluster:
        self._dir = tempfile.mkdtemp(prefix="rsray-", dir="/tmp")  # short: Ray's socket paths
        try:
            self._start(head=True)
            deadline = time.monotonic() + self.timeout
            for _ in range(self.nodes - 1):
                self._start(head=False)
            while self._alive_nodes() < self.nodes:
                if time.monotonic() > deadline or any(p.poll() is not None for p in self.procs):
                    raise ServerStartError(f"Ray cluster did not come up:\n{self.output()}")
                time.sleep(1.0)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        for proc in reversed(self.procs):
            _stop_group(proc, 10.0)
        self.procs.clear()
        for log in self._logs:
            log.close()
        self._logs.clear()
        if self._dir is not None:
            import shutil

            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def __enter__(self) -> RayCluster:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


class MilvusServer:
    """``python -m milvus_lite server`` (milvus-lite's gRPC server: the Milvus API on TCP, data under
    ``data_dir``) on ``port`` of 127.0.0.1 (default: a free one), in its own process group; ``with``
    waits until a ``pymilvus.MilvusClient`` lists its collections (raises `ServerStartError` with the
    server's output otherwise) and stops the group on exit. ``uri`` is what `MilvusIndexConfig.uri`
    takes."""

    def __init__(
        self, data_dir: str | Path | None = None, port: int | None = None, timeout: float = 120.0
    ) -> None:
        self.port = port or free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.timeout = timeout
        self._own_dir = data_dir is None
        self.data_dir = Path(data_dir) if data_dir is not None else Path(tempfile.mkdtemp(prefix="rsmilvus-"))
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    def output(self, limit: int = 3000) -> str:
        if self._log is None:
            return ""
        self._log.flush()
        self._log.seek(0)
        return self._log.read().decode(errors="replace")[-limit:]

    def _answers(self) -> bool:
        cmd = [
            sys.executable,
            "-c",
            "import sys; from pymilvus import MilvusClient; "
            "c = MilvusClient(uri=sys.argv[1], timeout=5); c.list_collections(); c.close()",
            self.uri,
        ]
        r = subprocess.run(cmd, capture_output=True, timeout=60, check=False)
        return r.returncode == 0

    def start(self) -> MilvusServer:
        cmd = [sys.executable, "-m", "milvus_lite", "server", "--data-dir", str(self.data_dir)]
        cmd += ["--host", "127.0.0.1", "--port", str(self.port)]
        self._log = tempfile.TemporaryFile(prefix="recstack-milvus-")  # noqa: SIM115 - closed by stop()
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + self.timeout
        try:
            while True:
                if self.proc.poll() is not None:
                    raise ServerStartError(
                        f"milvus-lite server exited ({self.proc.returncode}):\n{self.output()}"
                    )
                if _port_open(self.port) and self._answers():
                    return self
                if time.monotonic() > deadline:
                    raise ServerStartError(
                        f"milvus-lite server not answering on {self.uri}:\n{self.output()}"
                    )
                time.sleep(0.5)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None:
            _stop_group(proc, 10.0)
        if self._log is not None:
            self._log.close()
            self._log = None
        if self._own_dir:
            import shutil

            shutil.rmtree(self.data_dir, ignore_errors=True)

    def __enter__(self) -> MilvusServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def _port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0
