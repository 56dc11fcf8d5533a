"""A small HTTP/1.1 keep-alive load generator (asyncio, raw sockets), run in its own process.

Closed loop (``--connections C``: C connections each sending the next request when the previous
answers) measures the maximum throughput; open loop (``--rate R``: requests scheduled every 1/R s,
latency measured from the scheduled time, so queueing is not hidden) measures latency at a given
load. Prints one JSON object: count, errors, non-2xx, seconds, requests/s, latency percentiles (ms).

    python benchmarks/_loadgen.py --url http://127.0.0.1:8000 --paths paths.txt --seconds 10 --connections 8
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from urllib.parse import urlsplit

import numpy as np


class Conn:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, host: str) -> None:
        self.reader, self.writer, self.host = reader, writer, host

    async def get(self, path: str) -> int:
        self.writer.write(f"GET {path} HTTP/1.1\r\nHost: {self.host}\r\n\r\n".encode())
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = 0
        for line in head.split(b"\r\n"):
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
        if length:
            await self.reader.readexactly(length)
        return status


async def _connect(host: str, port: int) -> Conn:
    r, w = await asyncio.open_connection(host, port)
    return Conn(r, w, f"{host}:{port}")


async def run(
    url: str, paths: list[str], seconds: float, connections: int, rate: float | None
) -> dict[str, float]:
    u = urlsplit(url)
    host, port = u.hostname or "127.0.0.1", u.port or 80
    conns = [await _connect(host, port) for _ in range(connections)]
    lat: list[float] = []
    errors = 0
    non2xx = 0
    n_paths = len(paths)
    t_start = time.perf_counter()
    t_end = t_start + seconds

    if rate is None:

        async def worker(c: Conn, offset: int) -> None:
            nonlocal errors, non2xx
            i = offset
            while time.perf_counter() < t_end:
                t0 = time.perf_counter()
                try:
                    st = await c.get(paths[i % n_paths])
                except (OSError, asyncio.IncompleteReadError, ValueError):
                    errors += 1
                    c = await _connect(host, port)
                    continue
                lat.append(time.perf_counter() - t0)
                non2xx += st >= 300
                i += connections

        await asyncio.gather(*(worker(c, j) for j, c in enumerate(conns)))
    else:
        pool: asyncio.Queue[Conn] = asyncio.Queue()
        for c in conns:
            pool.put_nowait(c)
        tasks: list[asyncio.Task[None]] = []

        async def one(i: int, scheduled: float) -> None:
            nonlocal errors, non2xx
            c = await pool.get()
            try:
                st = await c.get(paths[i % n_paths])
                lat.append(time.perf_counter() - scheduled)
                non2xx += st >= 300
                pool.put_nowait(c)
            except (OSError, asyncio.IncompleteReadError, ValueError):
                errors += 1
                pool.put_nowait(await _connect(host, port))

        i = 0
        while True:
            scheduled = t_start + i / rate
            if scheduled >= t_end:
                break
            delay = scheduled - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(i, scheduled)))
            i += 1
        await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - t_start
    for c in conns:
        c.writer.close()
    arr = np.asarray(lat) * 1e3
    pct = {f"p{q}_ms": float(np.percentile(arr, q)) if len(arr) else float("nan") for q in (50, 90, 99)}
    return {
        "count": len(lat),
        "errors": errors,
        "non_2xx": non2xx,
        "seconds": elapsed,
        "requests_per_s": len(lat) / elapsed,
        "mean_ms": float(arr.mean()) if len(arr) else float("nan"),
        "max_ms": float(arr.max()) if len(arr) else float("nan"),
        **pct,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--paths", required=True, help="file with one request path per line")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--connections", type=int, default=8)
    ap.add_argument("--rate", type=float, default=None, help="open loop at this many requests/s")
    a = ap.parse_args()
    with open(a.paths) as fh:
        paths = [ln.strip() for ln in fh if ln.strip()]
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    print(json.dumps(asyncio.run(run(a.url, paths, a.seconds, a.connections, a.rate))))


if __name__ == "__main__":
    main()
