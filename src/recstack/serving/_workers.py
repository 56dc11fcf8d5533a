"""Several uvicorn workers, each listening on its own socket of the same port (``SO_REUSEPORT``).

With uvicorn's ``--workers`` every worker shares one listening socket, and whichever worker wakes
first accepts every connection queued at that moment (asyncio accepts in a loop): the 8 keep-alive
connections a client opens at once all landed on one worker, which served them on one core while
the other worker idled (measured: 619 recommendations/s with the server using 1.0 of 2 cores). With
one socket per worker the kernel spreads new connections over the workers by their address hash.

Each worker binds its socket *without* listening: uvicorn starts listening only once the app's
startup (loading the release) is done, so a worker still loading never receives connections.

The supervisor restarts a worker that dies, stops every worker on SIGINT / SIGTERM, and fails fast
(exit code 3) when a worker cannot start (bad release, port taken).
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import socket
import sys
import threading
import time
from typing import Any

from recstack.errors import ConfigError

__all__ = ["reuse_port_available", "supervise"]

log = logging.getLogger(__name__)

#: uvicorn's exit code when the app's startup fails
STARTUP_FAILURE = 3


def reuse_port_available() -> bool:
    """Whether the kernel balances connections over sockets sharing a port (Linux)."""
    return sys.platform.startswith("linux") and hasattr(socket, "SO_REUSEPORT")


def _bound_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to (host, port) with SO_REUSEPORT, not listening yet."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.set_inheritable(True)
    return sock


def _worker(app: str, host: str, port: int, options: dict[str, Any]) -> None:  # pragma: no cover
    """One worker process (runs in the child): its own socket, then uvicorn until a signal."""
    import uvicorn

    try:
        sock = _bound_socket(host, port)
    except OSError as exc:
        print(f"recstack serve: cannot bind {host}:{port}: {exc}", file=sys.stderr)
        sys.exit(STARTUP_FAILURE)
    from recstack.serving._protocol import configure
    from recstack.serving.settings import ServingSettings

    s = ServingSettings()  # the supervisor's settings, from its RECSTACK_SERVE_* environment
    options = {**options, "http": configure(s.header_timeout, s.max_connections)}
    config = uvicorn.Config(app, host=host, port=port, **options)
    uvicorn.Server(config).run(sockets=[sock])


def supervise(app: str, host: str, port: int, workers: int, options: dict[str, Any]) -> int:
    """Run ``workers`` worker processes of uvicorn app ``app`` (an import string; ``options`` are
    more `uvicorn.Config` keywords) on (host, port) until SIGINT / SIGTERM; returns the exit code."""
    try:  # the port is free for us: fail here, with a clear message, rather than in every worker
        probe = _bound_socket(host, port)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise ConfigError(f"cannot serve on {host}:{port}: {reason}; choose another --port") from None
    ctx = multiprocessing.get_context("spawn")
    stop = threading.Event()

    def start() -> multiprocessing.process.BaseProcess:
        p = ctx.Process(target=_worker, args=(app, host, port, options), daemon=False)
        p.start()
        return p

    def on_signal(signum: int, _frame: Any) -> None:
        stop.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    procs = [start() for _ in range(workers)]
    probe.close()
    code = 0
    try:
        while not stop.is_set():
            for i, p in enumerate(procs):
                if p.is_alive():
                    continue
                _mark_dead(p.pid)
                if p.exitcode == STARTUP_FAILURE:
                    log.error("a worker could not start (exit code %s): stopping", p.exitcode)
                    stop.set()
                    code = STARTUP_FAILURE
                    break
                log.warning("worker %s exited with code %s: restarting it", p.pid, p.exitcode)
                procs[i] = start()
            stop.wait(0.5)
    finally:
        for p in procs:
            if p.is_alive():
                p.terminate()  # SIGTERM: uvicorn finishes the requests in flight
        deadline = time.monotonic() + 15.0
        for p in procs:
            p.join(max(0.0, deadline - time.monotonic()))
            if p.is_alive():
                p.kill()
                p.join()
            _mark_dead(p.pid)
        for s, h in previous.items():
            signal.signal(s, h)
    return code


def _mark_dead(pid: int | None) -> None:
    """Prometheus multiprocess mode: drop a dead worker's live gauges."""
    if pid is None or not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return
    try:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]
    except (ImportError, OSError):  # pragma: no cover
        pass
