"""Feature fetch benchmark: features of 300 items per batch, embedded store vs Redis.

Protocol: a synthetic catalogue of ``--items`` items with ranking-style features (year int32,
19-genre multi-hot float32, popularity and mean rating float32, 16 title tokens int32: 160 bytes a
row); ``--batches`` batches of 300 distinct random item ids; wall time of ``get_items(ids)`` per batch
(after 100 warm-up batches). Backends: embedded (numpy gather), Redis (one ``MGET`` round trip,
packed rows decoded with ``np.frombuffer``), and for reference the naive Redis pattern of one
``GET`` per item without pipelining (``--naive-batches`` batches). Redis: 127.0.0.1:6379 if it
answers (``--redis-url``), else a private ``redis-server`` on a free port; keys live under a unique
prefix and are deleted afterwards.

Writes benchmarks/results/feature_fetch.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from rich.console import Console
from rich.table import Table

from recstack.store import EmbeddedFeatureStore
from recstack.store import redis as rs

OUT = Path(__file__).parent / "results" / "feature_fetch.json"
BATCH = 300


def catalogue(n_items: int, seed: int = 0) -> EmbeddedFeatureStore:
    rng = np.random.default_rng(seed)
    genres = np.array([f"g{g:02d}" for g in range(19)])
    items = pl.DataFrame(
        {
            "item": np.arange(n_items),
            "year": rng.integers(1920, 2000, n_items).astype(np.int32),
            "genres": [list(genres[rng.random(19) < 0.12]) for _ in range(n_items)],
            "popularity": rng.random(n_items).astype(np.float32),
            "mean_rating": (1 + 4 * rng.random(n_items)).astype(np.float32),
            "title_tokens": [rng.integers(0, 5000, 16).tolist() for _ in range(n_items)],
        }
    ).with_columns(pl.col("title_tokens").cast(pl.List(pl.Int32)))
    users = pl.DataFrame({"user": np.arange(1000), "age": rng.integers(18, 70, 1000)})
    inter = pl.DataFrame(
        {
            "user": rng.integers(0, 1000, 20_000),
            "item": rng.integers(0, n_items, 20_000),
            "rating": rng.integers(1, 6, 20_000).astype(np.float32),
            "timestamp": rng.integers(0, 10**9, 20_000),
        }
    )
    return EmbeddedFeatureStore.from_tables("bench", users, items, inter, n_items=n_items)


def measure(
    fn: Callable[[np.ndarray], Any], batches: list[np.ndarray], warmup: int = 100
) -> dict[str, float]:
    for ids in batches[:warmup]:
        fn(ids)
    times = np.empty(len(batches))
    cpu0 = time.process_time()
    for j, ids in enumerate(batches):
        t = time.perf_counter()
        fn(ids)
        times[j] = time.perf_counter() - t
    cpu_ms = (time.process_time() - cpu0) * 1e3 / len(batches)
    ms = times * 1e3
    return {
        "client_cpu_ms": float(cpu_ms),
        "batches": len(batches),
        "p50_ms": float(np.percentile(ms, 50)),
        "p90_ms": float(np.percentile(ms, 90)),
        "p99_ms": float(np.percentile(ms, 99)),
        "mean_ms": float(ms.mean()),
        "items_per_s": float(BATCH * len(batches) / times.sum()),
    }


def redis_server(url: str | None) -> tuple[str, subprocess.Popen[bytes] | None]:
    candidates = [url] if url else ["redis://127.0.0.1:6379/0"]
    for u in candidates:
        try:
            rs.connect(u).close()
            return u, None
        except Exception:
            if url:
                raise
    exe = shutil.which("redis-server")
    if exe is None:
        raise SystemExit("no Redis answers on 127.0.0.1:6379 and redis-server is not installed")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [exe, "--port", str(port), "--save", "", "--daemonize", "no"], stdout=subprocess.DEVNULL
    )
    u = f"redis://127.0.0.1:{port}/0"
    for _ in range(100):
        try:
            rs.connect(u).close()
            return u, proc
        except Exception:
            time.sleep(0.05)
    proc.terminate()
    raise SystemExit("redis-server did not start")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--items", type=int, default=20_000)
    p.add_argument("--batches", type=int, default=2000)
    p.add_argument("--naive-batches", type=int, default=100)
    p.add_argument("--redis-url", default=None)
    args = p.parse_args()
    console = Console(width=140)
    rng = np.random.default_rng(1)
    batches = [rng.choice(args.items, BATCH, replace=False) for _ in range(args.batches)]

    store = catalogue(args.items)
    row_bytes = sum(a[0].nbytes for a in store.get_items([0]).values())
    results: dict[str, Any] = {"embedded": measure(store.get_items, batches)}

    url, proc = redis_server(args.redis_url)
    prefix = f"bench-{uuid.uuid4().hex[:8]}"
    try:
        client = rs.connect(url)
        u, i, h = store.arrays()
        t = time.perf_counter()
        rstore = rs.bulk_load(client, "bench", u, i, h, store.vocabularies, prefix=prefix, make_current=False)
        load_s = time.perf_counter() - t
        results["redis_mget"] = measure(rstore.get_items, batches)
        results["redis_mget"]["bulk_load_s"] = load_s

        def naive(ids: np.ndarray) -> list[Any]:
            return [client.get(f"{prefix}:bench:item:{x}") for x in ids.tolist()]

        results["redis_naive_get"] = measure(naive, batches[: args.naive_batches], warmup=5)
        # equality check: Redis returns exactly the embedded values
        a, b = store.get_items(batches[0]), rstore.get_items(batches[0])
        assert all(np.array_equal(a[k], b[k]) for k in a)
    finally:
        try:
            rs.delete_release(rs.connect(url), "bench", prefix)
        finally:
            if proc is not None:
                proc.terminate()
                proc.wait()

    table = Table(title=f"get_items of {BATCH} items ({row_bytes} B/row, {args.items:,} items), per batch")
    for col in ("backend", "batches", "p50 ms", "p90 ms", "p99 ms", "client CPU ms", "items/s"):
        table.add_column(col, justify="right")
    names = {
        "embedded": "embedded (numpy)",
        "redis_mget": "Redis, 1 MGET",
        "redis_naive_get": "Redis, GET per item",
    }
    for key, r in results.items():
        table.add_row(
            names[key],
            str(r["batches"]),
            f"{r['p50_ms']:.3f}",
            f"{r['p90_ms']:.3f}",
            f"{r['p99_ms']:.3f}",
            f"{r['client_cpu_ms']:.3f}",
            f"{r['items_per_s']:,.0f}",
        )
    console.print(table)
    console.print(f"load average at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    OUT.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "benchmark": "feature_fetch",
        "protocol": __doc__,
        "batch": BATCH,
        "row_bytes": row_bytes,
        "items": args.items,
        "redis_url": url,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "note": "measured on a shared 2-core machine; noisy",
        "load_average_1m": os.getloadavg()[0],
        "results": results,
    }
    OUT.write_text(json.dumps(payload, indent=2))
    console.print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
