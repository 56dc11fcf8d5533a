"""A low-overhead HTTP/1.1 keep-alive load generator (asyncio protocols on uvloop when installed),
the fallback of the serving benchmarks when ``wrk`` is not installed.

Closed loop (``--connections C``: C connections, each sending its next request when the previous
one is answered) measures the maximum throughput. Open loop (``--rate R``: request i is due at
``t0 + i / R`` whatever happened before; latency is measured from that due time, so queueing, in
the server or in waiting for a free connection, is never hidden) measures latency at a given load.
``--procs P`` splits the connections (and the rate) over P processes and merges their latencies.

Requests are pre-encoded bytes; responses are parsed from the raw stream (status line and
Content-Length only), so a request costs the generator a few tens of microseconds of CPU. The
generator reports its own CPU time (``cpu_seconds``, ``cpu_us_per_request``) so a run shows whether
it was close to saturating its core. ``--stub-port`` instead serves a canned 200 response (the
counterpart used to measure the generator's own ceiling, with no application behind it).

Prints one JSON object: count, errors, non_2xx, seconds, requests_per_s, mean/max/p50/p90/p99/p99.9
latency (ms), cpu_seconds, cpu_us_per_request.

    python benchmarks/_loadgen.py --url http://127.0.0.1:8000 --paths paths.txt --seconds 10 --connections 8
    python benchmarks/_loadgen.py --url http://127.0.0.1:8000 --paths paths.txt --seconds 10 --rate 300
    python benchmarks/_loadgen.py --stub-port 8999
"""

from __future__ import annotations

import argparse
import array
import asyncio
import json
import multiprocessing as mp
import os
import tempfile
import time
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlsplit

import numpy as np


def _install_uvloop() -> str:
    try:
        import uvloop

        uvloop.install()
        return "uvloop"
    except ImportError:  # pragma: no cover
        return "asyncio"


class _Conn(asyncio.Protocol):
    """One keep-alive connection; `send` returns a future of the response status."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.need = -1  # bytes of the current response (head + body), -1 = head not parsed yet
        self.status = 0
        self.waiter: asyncio.Future[int] | None = None
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def send(self, raw: bytes) -> asyncio.Future[int]:
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        if self.closed or self.transport is None:
            fut.set_exception(ConnectionError("connection closed"))
            return fut
        self.waiter = fut
        self.transport.write(raw)
        return fut

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while True:
            if self.need < 0:
                end = self.buf.find(b"\r\n\r\n")
                if end < 0:
                    return
                head = bytes(self.buf[:end]).lower()
                self.status = int(head[9:12])
                i = head.find(b"content-length:")
                if i < 0:
                    self._fail(ValueError("response without Content-Length"))
                    return
                j = head.find(b"\r\n", i)
                length = int(head[i + 15 : j if j >= 0 else len(head)])
                self.need = end + 4 + length
            if len(self.buf) < self.need:
                return
            del self.buf[: self.need]
            self.need = -1
            w, self.waiter = self.waiter, None
            if w is not None and not w.done():
                w.set_result(self.status)

    def _fail(self, exc: Exception) -> None:
        self.closed = True
        w, self.waiter = self.waiter, None
        if w is not None and not w.done():
            w.set_exception(exc)
        if self.transport is not None:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(ConnectionError(str(exc) if exc else "connection closed by the server"))


async def _connect(host: str, port: int) -> _Conn:
    _, proto = await asyncio.get_running_loop().create_connection(_Conn, host, port)
    return proto


async def run(
    url: str, paths: list[str], seconds: float, connections: int, rate: float | None, offset: int = 0
) -> dict[str, Any]:
    """Drive the server for ``seconds``; returns counts, the latencies (seconds) and CPU time."""
    u = urlsplit(url)
    host, port = u.hostname or "127.0.0.1", u.port or 80
    hdr = f"Host: {host}:{port}\r\nUser-Agent: recstack-loadgen\r\n\r\n"
    reqs = [f"GET {p} HTTP/1.1\r\n{hdr}".encode() for p in paths]
    n_req = len(reqs)
    conns = [await _connect(host, port) for _ in range(connections)]
    lat = array.array("d")
    errors = 0
    non2xx = 0
    cpu0 = time.process_time()
    t_start = time.perf_counter()
    t_end = t_start + seconds
    clock = time.perf_counter

    if rate is None:

        async def worker(c: _Conn, i: int) -> None:
            nonlocal errors, non2xx
            while clock() < t_end:
                t0 = clock()
                try:
                    st = await c.send(reqs[i % n_req])
                except (OSError, ValueError):
                    errors += 1
                    c = await _connect(host, port)
                    continue
                lat.append(clock() - t0)
                if st >= 300:
                    non2xx += 1
                i += connections

        await asyncio.gather(*(worker(c, offset + j) for j, c in enumerate(conns)))
    else:
        freed: asyncio.Queue[_Conn] = asyncio.Queue()
        for c0 in conns:
            freed.put_nowait(c0)
        pending: set[asyncio.Task[None]] = set()

        async def one(i: int, due: float) -> None:
            nonlocal errors, non2xx
            c = freed.get_nowait() if not freed.empty() else await freed.get()
            try:
                st = await c.send(reqs[i % n_req])
            except (OSError, ValueError):
                errors += 1
                c = await _connect(host, port)
            else:
                lat.append(clock() - due)
                if st >= 300:
                    non2xx += 1
            freed.put_nowait(c)

        i = 0
        loop = asyncio.get_running_loop()
        while True:
            due = t_start + i / rate
            if due >= t_end:
                break
            delay = due - clock()
            if delay > 0:  # never early: latency counts from the due time
                await asyncio.sleep(delay)
            t = loop.create_task(one(offset + i, due))
            pending.add(t)
            t.add_done_callback(pending.discard)
            i += 1
        if pending:
            await asyncio.gather(*pending)
    elapsed = time.perf_counter() - t_start
    cpu = time.process_time() - cpu0
    for c in conns:
        if c.transport is not None:
            c.transport.close()
    return {"lat": lat, "errors": errors, "non_2xx": non2xx, "seconds": elapsed, "cpu_seconds": cpu}


def summarise(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """Merge the results of one or more generator processes."""
    arr = np.concatenate([np.frombuffer(p["lat"], dtype=np.float64) for p in parts]) * 1e3
    seconds = max(p["seconds"] for p in parts)
    cpu = sum(p["cpu_seconds"] for p in parts)
    n = len(arr)

    def pct(q: float) -> float:
        return float(np.percentile(arr, q)) if n else float("nan")

    return {
        "count": n,
        "errors": sum(p["errors"] for p in parts),
        "non_2xx": sum(p["non_2xx"] for p in parts),
        "seconds": seconds,
        "requests_per_s": n / seconds if seconds > 0 else float("nan"),
        "mean_ms": float(arr.mean()) if n else float("nan"),
        "max_ms": float(arr.max()) if n else float("nan"),
        "p50_ms": pct(50),
        "p90_ms": pct(90),
        "p99_ms": pct(99),
        "p99.9_ms": pct(99.9),
        "procs": len(parts),
        "cpu_seconds": cpu,
        "cpu_us_per_request": 1e6 * cpu / n if n else float("nan"),
    }


def _child(args: tuple[str, list[str], float, int, float | None, int, str]) -> None:
    url, paths, seconds, connections, rate, offset, out = args
    _install_uvloop()
    res = asyncio.run(run(url, paths, seconds, connections, rate, offset))
    lat = res.pop("lat")
    np.save(out + ".npy", np.frombuffer(lat, dtype=np.float64))
    Path(out + ".json").write_text(json.dumps(res))


def run_procs(
    url: str, paths: list[str], seconds: float, connections: int, rate: float | None, procs: int
) -> dict[str, Any]:
    """Run the generator in ``procs`` processes (connections and rate split evenly) and merge."""
    if procs <= 1:
        _install_uvloop()
        return summarise([asyncio.run(run(url, paths, seconds, connections, rate))])
    ctx = mp.get_context("fork")
    with tempfile.TemporaryDirectory(prefix="loadgen-") as tmp:
        jobs = []
        for j in range(procs):
            conns = max(1, connections // procs + (j < connections % procs))
            r = rate / procs if rate is not None else None
            out = os.path.join(tmp, f"p{j}")
            p = ctx.Process(target=_child, args=((url, paths, seconds, conns, r, j * 7919, out),))
            p.start()
            jobs.append((p, out))
        parts = []
        for p, out in jobs:
            p.join()
            if p.exitcode != 0:
                raise RuntimeError(f"load generator process exited with {p.exitcode}")
            res = json.loads(Path(out + ".json").read_text())
            res["lat"] = np.load(out + ".npy").tobytes()
            parts.append(res)
    return summarise(parts)


# ------------------------------------------------------------------------------- the stub server
_STUB_BODY = b'{"status":"ok"}'
_STUB_RESPONSE = (
    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: "
    + str(len(_STUB_BODY)).encode()
    + b"\r\n\r\n"
    + _STUB_BODY
)


class _Stub(asyncio.Protocol):
    """Answers every request (head ending in a blank line, no body) with a canned 200."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self.buf = b""

    def data_received(self, data: bytes) -> None:
        self.buf += data
        n = self.buf.count(b"\r\n\r\n")
        if n:
            self.buf = self.buf[self.buf.rfind(b"\r\n\r\n") + 4 :]
            self.transport.write(_STUB_RESPONSE * n)


async def serve_stub(port: int) -> None:
    server = await asyncio.get_running_loop().create_server(_Stub, "127.0.0.1", port)
    async with server:
        await server.serve_forever()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url")
    ap.add_argument("--paths", help="file with one request path per line")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--connections", type=int, default=8)
    ap.add_argument("--rate", type=float, default=None, help="open loop at this many requests/s")
    ap.add_argument("--procs", type=int, default=1, help="generator processes")
    ap.add_argument("--stub-port", type=int, default=None, help="serve a canned 200 on this port instead")
    a = ap.parse_args()
    if a.stub_port is not None:
        _install_uvloop()
        asyncio.run(serve_stub(a.stub_port))
        return
    if not a.url or not a.paths:
        ap.error("--url and --paths are required")
    with open(a.paths) as fh:
        paths = [ln.strip() for ln in fh if ln.strip()]
    print(json.dumps(run_procs(a.url, paths, a.seconds, a.connections, a.rate, a.procs)))


if __name__ == "__main__":
    main()
