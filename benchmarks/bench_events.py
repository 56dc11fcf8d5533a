"""The durable event log: which embedded log, ingest cost through the API, and kill -9 durability.

Parts (``--parts``, default all):

``log``         the embedded candidates appended to directly (no server): SQLite in WAL mode with
                ``synchronous=FULL`` (the one recstack uses) vs an append-only segment file with
                fdatasync (length + CRC32 framed records, ``flock`` between processes: the minimum a
                hand-written log needs), batch sizes 1 and 32, one and two processes. events/s.
``ingest``      ``recstack serve --workers 2`` on a small ML-100K release; ``POST /v1/events`` with
                the log off, embedded (SQLite) and on Redis Streams (with ``--store redis``, against a
                private redis-server started here): closed loop (16 connections, max events/s) and
                open loop at ``--rate`` (p50 / p99 latency, measured from each request's due time).
``durability``  2 workers under ``--rate`` events/s (open loop); after a random 4-12 s the whole
                server's process group gets SIGKILL. Restart on the same log, then count: every event
                that got 201 must be in the log exactly once, and in the user's history (each user is
                new to the release, so its history is exactly its logged events) on both workers
                (each history is read over 8 fresh connections, spread over the workers by the
                kernel). ``--rounds`` kills.

    nice -n 10 .venv/bin/python benchmarks/bench_events.py [--parts log,ingest,durability]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import random
import shutil
import signal
import struct
import subprocess
import tempfile
import time
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from recstack.events import NewEvent, open_log
from recstack.testing import ServerProcess, build_small_release, free_port

HERE = Path(__file__).resolve().parent
PORTS = (18400, 18499)  # this benchmark's own redis-server port range


# ------------------------------------------------------------------------------ part 1: raw logs
class SegmentLog:
    """An append-only file of ``[len u32][crc32 u32][payload]`` records, fdatasync per batch; offset
    = the record's byte position. ``flock`` serialises appenders of several processes."""

    def __init__(self, path: Path) -> None:
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def append(self, payloads: Sequence[bytes]) -> list[int]:
        import fcntl

        buf = b"".join(struct.pack("<II", len(p), zlib.crc32(p)) + p for p in payloads)
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        try:
            pos = os.lseek(self.fd, 0, os.SEEK_END)
            os.write(self.fd, buf)
            os.fdatasync(self.fd)
        finally:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
        out, off = [], pos
        for p in payloads:
            out.append(off)
            off += 8 + len(p)
        return out


def _raw_worker(kind: str, path: str, batch: int, seconds: float, q: Any) -> None:
    ev = NewEvent("view", "u1", "42", 1_700_000_000, received=1.0)
    payload = ev.to_json().encode()
    log: Any = open_log(path) if kind == "sqlite" else SegmentLog(Path(path))
    n = 0
    t_end = time.perf_counter() + seconds
    t0 = time.perf_counter()
    while time.perf_counter() < t_end:
        if kind == "sqlite":
            log.append([ev] * batch)
        else:
            log.append([payload] * batch)
        n += batch
    q.put((n, time.perf_counter() - t0))


def part_log(tmp: Path, seconds: float) -> dict[str, Any]:
    out: dict[str, Any] = {}
    ctx = mp.get_context("spawn")
    for kind in ("sqlite", "segments"):
        for procs in (1, 2):
            for batch in (1, 32):
                d = Path(tempfile.mkdtemp(dir=tmp))
                path = str(d / ("events.db" if kind == "sqlite" else "events.seg"))
                if kind == "sqlite":
                    open_log(path).close()  # type: ignore[union-attr]
                q = ctx.Queue()
                ps = [
                    ctx.Process(target=_raw_worker, args=(kind, path, batch, seconds, q))
                    for _ in range(procs)
                ]
                for p in ps:
                    p.start()
                res = [q.get(timeout=seconds + 60) for _ in ps]
                for p in ps:
                    p.join()
                n = sum(r[0] for r in res)
                wall = max(r[1] for r in res)
                key = f"{kind}/procs={procs}/batch={batch}"
                out[key] = {"events_per_s": round(n / wall), "fsyncs_per_s": round(n / batch / wall)}
                print(f"  {key:<28} {n / wall:>10,.0f} events/s  ({n / batch / wall:,.0f} commits/s)")
                shutil.rmtree(d, ignore_errors=True)
    return out


# --------------------------------------------------------------------------- HTTP event client
def _request(port: int, body: bytes) -> bytes:
    return (
        f"POST /v1/events HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


async def _send(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, raw: bytes) -> tuple[int, bytes]:
    writer.write(raw)
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    body = await reader.readexactly(length) if length else b""
    return status, body


def _event(seq: int, run: str, n_users: int, items: Sequence[int], t0: int) -> dict[str, Any]:
    return {
        "user_id": f"{run}-{seq % n_users}",
        "item_id": int(items[seq % len(items)]),
        "type": "view",
        "timestamp": t0 + seq,
    }


async def _closed_loop(port: int, bodies: list[bytes], seconds: float, conns: int) -> dict[str, Any]:
    lat: list[float] = []
    errors = 0
    idx = 0
    t_end = time.perf_counter() + seconds

    async def one() -> None:
        nonlocal idx, errors
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        while time.perf_counter() < t_end:
            i, idx = idx, idx + 1
            t = time.perf_counter()
            status, _ = await _send(reader, writer, _request(port, bodies[i % len(bodies)]))
            lat.append(time.perf_counter() - t)
            errors += status != 201
        writer.close()

    t0 = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(conns)))
    wall = time.perf_counter() - t0
    a = np.asarray(lat) * 1000
    return {"events_per_s": round(len(lat) / wall), "non_201": errors, "p50_ms": float(np.percentile(a, 50)),
            "p99_ms": float(np.percentile(a, 99))}  # fmt: skip


async def _open_loop(
    port: int, bodies: list[bytes], seconds: float, rate: float, conns: int = 32
) -> tuple[dict[str, Any], list[tuple[int, int, bytes]]]:
    """Request i is due at t0 + i / rate; latency from its due time. Returns stats and every
    (i, status, body) answered."""
    n = int(seconds * rate)
    pool: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.Queue()
    for _ in range(conns):
        pool.put_nowait(await asyncio.open_connection("127.0.0.1", port))
    lat: list[float] = []
    answered: list[tuple[int, int, bytes]] = []
    errors = 0
    t0 = time.perf_counter() + 0.05

    async def one(i: int) -> None:
        nonlocal errors
        due = t0 + i / rate
        await asyncio.sleep(max(0.0, due - time.perf_counter()))
        try:  # a dead server: connections are not returned to the pool, so do not wait forever
            r, w = await asyncio.wait_for(pool.get(), timeout=5.0)
        except TimeoutError:
            errors += 1
            return
        try:
            status, body = await asyncio.wait_for(_send(r, w, _request(port, bodies[i % len(bodies)])), 30.0)
        except (ConnectionError, asyncio.IncompleteReadError, TimeoutError):
            errors += 1
            w.close()
            return
        pool.put_nowait((r, w))
        lat.append(time.perf_counter() - due)
        answered.append((i, status, body))

    await asyncio.gather(*(one(i) for i in range(n)), return_exceptions=True)
    a = np.asarray(lat or [0.0]) * 1000
    non = sum(1 for _, s, _ in answered if s != 201)
    stats = {"rate": rate, "sent": n, "answered": len(answered), "non_201": non, "conn_errors": errors,
             "p50_ms": float(np.percentile(a, 50)), "p99_ms": float(np.percentile(a, 99))}  # fmt: skip
    return stats, answered


def _items(root: Path) -> list[int]:
    from recstack.release import load

    rel = load("production", root, verify=False)
    return [int(x) for x in rel.dataset.item_vocab.ids.to_list()[:1500]]


# ------------------------------------------------------------------------------ part 2: ingest
def start_redis(tmp: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = next(p for p in range(*PORTS) if p != 18400 and _port_free(p))
    proc = subprocess.Popen(
        [
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(tmp),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    import redis

    url = f"redis://127.0.0.1:{port}/0"
    for _ in range(100):
        try:
            if redis.Redis.from_url(url).ping():
                return proc, url
        except redis.RedisError:
            time.sleep(0.05)
    raise RuntimeError("redis-server did not start")


def _port_free(port: int) -> bool:
    import socket

    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def part_ingest(root: Path, tmp: Path, seconds: float, rate: float) -> dict[str, Any]:
    items = _items(root)
    out: dict[str, Any] = {}
    redis_proc, redis_url = start_redis(tmp)
    try:
        configs = {
            "off": ["--event-log", "off"],
            "embedded (SQLite WAL)": ["--event-log", f"sqlite:///{tmp / 'ingest.db'}"],
            "redis store, log off": ["--store", "redis", "--redis-url", redis_url, "--event-log", "off"],
            "redis store + Redis Streams": [
                "--store",
                "redis",
                "--redis-url",
                redis_url,
                "--event-log",
                f"{redis_url}?prefix=bench-{os.getpid()}",
            ],
        }
        for name, args in configs.items():
            run = f"ing{len(out)}"
            bodies = [json.dumps(_event(i, run, 500, items, 1_700_000_000)).encode() for i in range(20_000)]
            with ServerProcess(root, workers=2, args=args, port=free_port()) as srv:
                closed = asyncio.run(_closed_loop(srv.port, bodies, seconds, 16))
                opened, _ = asyncio.run(_open_loop(srv.port, bodies[::-1], seconds, rate))
                del srv
            out[name] = {"closed_loop": closed, "open_loop": opened}
            print(f"  {name:<30} max {closed['events_per_s']:>6,}/s (p99 {closed['p99_ms']:.1f} ms) | "
                  f"at {rate:.0f}/s p50 {opened['p50_ms']:.2f} ms p99 {opened['p99_ms']:.2f} ms "
                  f"non-201 {closed['non_201'] + opened['non_201']}")  # fmt: skip
    finally:
        os.killpg(redis_proc.pid, signal.SIGKILL)
        redis_proc.wait()
    return out


# -------------------------------------------------------------------------- part 3: durability
def _history_reads(port: int, user: str, reads: int) -> list[list[int]]:
    import http.client

    out = []
    for _ in range(reads):  # a fresh connection each time: the kernel spreads them over the workers
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        try:
            c.request("GET", f"/v1/users/{user}?history_limit=10000")
            r = c.getresponse()
            body = json.loads(r.read())
        finally:
            c.close()
        out.append([int(h["timestamp"]) for h in body["history"]] if r.status == 200 else [])
    return out


async def _load_and_kill(
    port: int, pgid: int, bodies: list[bytes], rate: float, kill_after: float
) -> list[tuple[int, int, bytes]]:
    async def killer() -> None:
        await asyncio.sleep(kill_after)
        os.killpg(pgid, signal.SIGKILL)  # the whole server: supervisor and both workers

    k = asyncio.create_task(killer())
    _, answered = await _open_loop(port, bodies, 20.0, rate)
    await k
    return answered


def part_durability(root: Path, tmp: Path, rate: float, rounds: int, seed: int) -> dict[str, Any]:
    items = _items(root)
    rng = random.Random(seed)
    log_url = f"sqlite:///{tmp / 'durable.db'}"
    args = ["--event-log", log_url]
    results = []
    for rnd in range(rounds):
        run = f"dur{seed}r{rnd}"
        n_users = 200
        kill_after = rng.uniform(4.0, 12.0)
        t_base = int(time.time()) - 86_400
        bodies = [json.dumps(_event(i, run, n_users, items, t_base)).encode() for i in range(int(rate * 20))]
        srv = ServerProcess(root, workers=2, args=args, port=free_port()).start()
        assert srv.proc is not None
        pgid = srv.proc.pid

        answered = asyncio.run(_load_and_kill(srv.port, pgid, bodies, rate, kill_after))
        srv.proc.wait()
        srv.proc = None
        acked = {i: json.loads(b)["offset"] for i, s, b in answered if s == 201}
        sent_before_kill = int(kill_after * rate)
        # restart on the same log
        with ServerProcess(root, workers=2, args=args, port=free_port()) as srv2:
            time.sleep(1.0)  # both workers up (the second may answer /readyz a moment later)
            log = open_log(log_url)
            assert log is not None
            logged = [
                e for e in log.to_frame()["user_id", "ts", "offset"].iter_rows() if e[0].startswith(run + "-")
            ]
            log.close()
            by_key: dict[tuple[str, int], list[int]] = {}
            for u, ts, off in logged:
                by_key.setdefault((u, ts), []).append(off)
            twice = sum(1 for v in by_key.values() if len(v) > 1)
            missing_log = 0
            for i in acked:
                ev = _event(i, run, n_users, items, t_base)
                if (ev["user_id"], ev["timestamp"]) not in by_key:
                    missing_log += 1
            # histories: each user's history must be exactly its logged events, on every read
            expect: dict[str, list[int]] = {}
            for u, ts, _ in logged:
                expect.setdefault(u, []).append(ts)
            users = sorted({f"{run}-{i % n_users}" for i in acked})
            bad_hist = missing_hist = double_hist = 0
            acked_by_user: dict[str, set[int]] = {}
            for i in acked:
                ev = _event(i, run, n_users, items, t_base)
                acked_by_user.setdefault(ev["user_id"], set()).add(ev["timestamp"])
            checked = 0
            for u in users:
                for h in _history_reads(srv2.port, u, 8):
                    checked += 1
                    if sorted(h) != sorted(expect.get(u, [])):
                        bad_hist += 1
                    missing_hist += len(acked_by_user[u] - set(h))
                    double_hist += len(h) - len(set(h))
        res = {
            "round": rnd,
            "kill_after_s": round(kill_after, 2),
            "sent_before_kill": sent_before_kill,
            "acknowledged_201": len(acked),
            "in_log": len(logged),
            "acked_missing_from_log": missing_log,
            "logged_twice": twice,
            "unacknowledged_but_logged": len(logged) - len(acked) + missing_log,
            "history_reads": checked,
            "history_reads_not_equal_to_log": bad_hist,
            "acked_missing_from_histories": missing_hist,
            "history_entries_twice": double_hist,
        }
        results.append(res)
        print(
            f"  round {rnd}: kill after {kill_after:.1f}s, {len(acked)} acknowledged, {len(logged)} logged, "
            f"missing {missing_log}, twice {twice}; {checked} history reads: {bad_hist} differ from the "
            f"log, {missing_hist} acked events missing, {double_hist} doubled"
        )
    return {"rate": rate, "workers": 2, "rounds": results}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--parts", default="log,ingest,durability")
    ap.add_argument("--seconds", type=float, default=15.0)
    ap.add_argument("--rate", type=float, default=300.0)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seed", type=int, default=20)
    ap.add_argument("--out", type=Path, default=HERE / "results" / "events.json")
    a = ap.parse_args()
    parts = set(a.parts.split(","))
    result: dict[str, Any] = json.loads(a.out.read_text()) if a.out.is_file() else {}
    result["machine"] = {"cpus": os.cpu_count(), "loadavg_start": os.getloadavg()}
    with tempfile.TemporaryDirectory(prefix="bench-events-", dir=os.environ.get("BENCH_TMP")) as tmp_s:
        tmp = Path(tmp_s)
        if "log" in parts:
            print("part log: SQLite WAL vs segment files, appended directly")
            result["log"] = part_log(tmp, min(a.seconds, 5.0))
        if parts & {"ingest", "durability"}:
            root = tmp / "releases"
            print("building a small ML-100K release (pop, itemknn, ease)")
            build_small_release(root)
            if "ingest" in parts:
                print(
                    f"part ingest: 2 workers, closed loop 16 connections {a.seconds:.0f}s, "
                    f"open loop {a.rate:.0f}/s"
                )
                result["ingest"] = part_ingest(root, tmp, a.seconds, a.rate)
            if "durability" in parts:
                print(f"part durability: 2 workers at {a.rate:.0f} events/s, kill -9 of the whole server")
                result["durability"] = part_durability(root, tmp, a.rate, a.rounds, a.seed)
    result["machine"]["loadavg_end"] = os.getloadavg()
    a.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"-> {a.out}")


if __name__ == "__main__":
    main()
