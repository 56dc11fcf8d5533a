"""A small open-loop HTTP load generator for the robustness benchmarks (faults, reload, soak): requests
are due at a fixed rate whatever happened before (latency counted from the due time, so a stalled
server shows as latency, never as a slower client), each on a keep-alive connection of its own while
it runs (raw asyncio streams, HTTP/1.1), with a per-request timeout. Every request is recorded: (due
time, kind, status or error, latency).

Used in-process by bench_faults.py, bench_reload.py and bench_soak.py; a request mix is a callable
``i -> (kind, method, path, json body or None)``.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

Mix = Callable[[int], tuple[str, str, str, Any]]


@dataclass
class Sample:
    t: float  #: due time, seconds since the start
    kind: str
    status: int  #: HTTP status; 0 = no answer (timeout / connection error)
    latency: float  #: seconds from the due time to the answer
    error: str = ""
    body: str = ""


@dataclass
class Run:
    samples: list[Sample] = field(default_factory=list)

    def of(self, kind: str | None = None, t0: float = -1.0, t1: float = float("inf")) -> list[Sample]:
        return [s for s in self.samples if (kind is None or s.kind == kind) and t0 <= s.t < t1]


def summary(samples: list[Sample]) -> dict[str, Any]:
    """count, statuses, failures, p50 / p99 / max latency (ms) of ``samples``."""
    if not samples:
        return {"count": 0}
    lat = np.array([s.latency for s in samples]) * 1000
    statuses: dict[str, int] = {}
    for s in samples:
        statuses[str(s.status)] = statuses.get(str(s.status), 0) + 1
    return {
        "count": len(samples),
        "statuses": statuses,
        "failed": sum(1 for s in samples if s.status == 0 or s.status >= 500),
        "p50_ms": round(float(np.percentile(lat, 50)), 2),
        "p99_ms": round(float(np.percentile(lat, 99)), 2),
        "max_ms": round(float(lat.max()), 2),
    }


class _Pool:
    """Keep-alive HTTP/1.1 connections to one host (raw asyncio streams: a few tens of microseconds
    of CPU per request, where an httpx pool with thousands of queued requests spent seconds)."""

    def __init__(self, host: str, port: int, timeout: float, keep_alive: bool = True) -> None:
        self.host, self.port, self.timeout = host, port, timeout
        #: False: every request on a new connection (``Connection: close``), as requests of many
        #: clients arrive. A server with one socket per worker (SO_REUSEPORT) spreads connections,
        #: not requests: one client reusing its most recent keep-alive connection sends nearly all
        #: of a moderate rate to one worker
        self.keep_alive = keep_alive
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

    async def request(self, method: str, path: str, body: Any) -> tuple[int, str]:
        """One request; a kept-alive connection that the server closed meanwhile is retried once on
        a new connection (as every HTTP client does)."""
        reused = bool(self.idle)
        try:
            return await self._request(method, path, body)
        except (ConnectionError, asyncio.IncompleteReadError):
            if not reused:
                raise
            self.idle.clear()  # its siblings are as old
            return await self._request(method, path, body)

    async def _request(self, method: str, path: str, body: Any) -> tuple[int, str]:
        payload = b"" if body is None else json.dumps(body).encode()
        head = f"{method} {path} HTTP/1.1\r\nHost: {self.host}\r\nContent-Length: {len(payload)}\r\n"
        if not self.keep_alive:
            head += "Connection: close\r\n"
        if body is not None:
            head += "Content-Type: application/json\r\n"
        raw = (head + "\r\n").encode() + payload
        conn = self.idle.pop() if self.idle else await asyncio.open_connection(self.host, self.port)
        reader, writer = conn
        try:
            writer.write(raw)
            status_line = await asyncio.wait_for(reader.readline(), self.timeout)
            if not status_line:
                raise ConnectionError("connection closed")
            status = int(status_line.split()[1])
            length, close = 0, False
            while True:
                line = await asyncio.wait_for(reader.readline(), self.timeout)
                if line in (b"\r\n", b""):
                    break
                name, _, value = line.decode("latin-1").partition(":")
                if name.lower() == "content-length":
                    length = int(value)
                elif name.lower() == "connection" and value.strip().lower() == "close":
                    close = True
            data = await asyncio.wait_for(reader.readexactly(length), self.timeout)
        except BaseException:
            writer.close()
            raise
        if close or not self.keep_alive:
            writer.close()
        else:
            self.idle.append(conn)
        return status, data.decode(errors="replace")


async def _run(
    url: str,
    rate: float,
    seconds: float,
    mix: Mix,
    timeout: float,
    connections: int,
    keep_bodies: bool,
    stop: Any = None,
    keep_alive: bool = True,
) -> Run:
    from urllib.parse import urlsplit

    run = Run()
    u = urlsplit(url)
    pool = _Pool(u.hostname or "127.0.0.1", u.port or 80, timeout, keep_alive)
    start = time.perf_counter()
    n = int(rate * seconds)
    tasks: list[asyncio.Task[None]] = []

    async def one(i: int, due: float) -> None:
        kind, method, path, body = mix(i)
        try:
            status, text = await asyncio.wait_for(pool.request(method, path, body), timeout)
            s = Sample(due - start, kind, status, time.perf_counter() - due)
            if keep_bodies or status >= 400:
                s.body = text[:300]
        except (
            OSError,
            ConnectionError,
            TimeoutError,
            asyncio.IncompleteReadError,
            ValueError,
            IndexError,
        ) as exc:
            s = Sample(due - start, kind, 0, time.perf_counter() - due, type(exc).__name__)
        run.samples.append(s)

    for i in range(n):
        if stop is not None and stop.is_set():
            break
        due = start + i / rate
        delay = due - time.perf_counter()
        await asyncio.sleep(max(0.0, delay))  # always yield: a late loop never starves the answers
        tasks.append(asyncio.create_task(one(i, due)))
    await asyncio.gather(*tasks)
    for _, w in pool.idle:
        w.close()
    run.samples.sort(key=lambda s: s.t)
    return run


def open_loop(
    url: str,
    rate: float,
    seconds: float,
    mix: Mix,
    *,
    timeout: float = 5.0,
    connections: int = 512,
    keep_bodies: bool = False,
    keep_alive: bool = True,
) -> Run:
    """Send ``rate`` requests/s for ``seconds`` seconds; returns every sample. ``keep_alive=False``:
    a new connection per request (`_Pool.keep_alive`)."""
    return asyncio.run(_run(url, rate, seconds, mix, timeout, connections, keep_bodies, None, keep_alive))


def open_loop_until(url: str, rate: float, stop: Any, mix: Mix, **kw: Any) -> Run:
    """Like `open_loop`, until ``stop`` (a threading.Event) is set (at most an hour)."""
    timeout = kw.get("timeout", 5.0)
    conns = kw.get("connections", 512)
    return asyncio.run(_run(url, rate, 3600.0, mix, timeout, conns, kw.get("keep_bodies", False), stop))


def open_loops(url: str, seconds: float, loops: list[tuple[float, Mix]], **kw: Any) -> list[Run]:
    """Several open loops at once, each with its own connection pool: ``[(rate, mix), ...]``."""

    async def go() -> list[Run]:
        timeout = kw.get("timeout", 5.0)
        conns = kw.get("connections", 512)
        keep = kw.get("keep_bodies", False)
        runs = (_run(url, r, seconds, m, timeout, conns, keep, kw.get("stop")) for r, m in loops)
        return list(await asyncio.gather(*runs))

    return asyncio.run(go())


def status_mb(pids: list[int], field: str) -> dict[int, float]:
    """A memory ``field`` of /proc/<pid>/status (``VmRSS``, ``RssAnon``...), MB, of each live pid."""
    out: dict[int, float] = {}
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith(f"{field}:"):
                        out[pid] = int(line.split()[1]) / 1024
        except OSError:
            continue
    return out


def rss_mb(pids: list[int]) -> dict[int, float]:
    """Resident set size (MB) of each live pid, from /proc."""
    return status_mb(pids, "VmRSS")


def group_pids(pgid: int) -> list[int]:
    """Live pids of process group ``pgid`` (the server and its workers)."""
    import os

    pids = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                if os.getpgid(int(d)) == pgid:
                    pids.append(int(d))
            except OSError:
                continue
    return pids
