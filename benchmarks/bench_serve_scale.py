"""Benchmark (issue 23): serving a 62k-item release with Redis as the feature store and a Milvus
server as the index, 2 workers, at 100 requests/s.

Protocol. A synthetic set of ML-25M's catalogue shape (``recstack data synth``: 62,423 items,
162,541 users; ``--interactions`` pairs, 2M by default so that the build takes minutes, not the
25M set's half hour: the serving path depends on the catalogue and the number of users, which
are the 25M set's). A release of pop + ALS (64 factors) whose ANN index (HNSW over the ALS item
factors) is built into a Milvus server (`recstack.testing.MilvusServer`: milvus-lite's gRPC
server on a TCP port, no Docker). Then, in the same run, two servers of 2 workers each:

- ``redis``: ``--store redis`` (a private ``redis-server`` on ``--redis-port``) + the Milvus
  server index (every worker attaches to the build's collection);
- ``embedded``: ``--store embedded`` (each worker holds the release's arrays) + the same index.

Each gets ``--warmup`` s of load, then ``--seconds`` s of an open loop of ``--rate`` requests/s of
``GET /v1/users/{u}/recommendations?k=10`` for random known users. Reported: p50 / p99 / max
latency, failures, and the RSS (MB) of each process of the server's group (the supervisor and
the 2 workers) after the load. Writes benchmarks/results/serve_scale.json.

    nice -n 5 python benchmarks/bench_serve_scale.py --work /tmp/serve-scale [--interactions 2000000]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import numpy as np
from _openloop import group_pids, open_loop, rss_mb, summary
from bench_faults import start_redis

from recstack import __version__
from recstack.testing import MilvusServer, ServerProcess, build_release, recstack_command

RESULTS = Path(__file__).parent / "results" / "serve_scale.json"


def _toml(data: Path, uri: str) -> str:
    return f"""
[dataset]
source = "{data}"
[evaluation]
enabled = false
[index]
backend = "milvus"
source = "als"
params = {{ uri = "{uri}", collection = "serve_scale" }}
[[models]]
name = "pop"
[[models]]
name = "als"
params = {{ factors = 64, iterations = 10 }}
"""


def _serve(
    name: str,
    root: Path,
    args: list[str],
    port: int,
    n_users: int,
    rate: float,
    seconds: float,
    warmup: float,
) -> dict[str, Any]:
    rng = np.random.default_rng(0)
    users = rng.integers(1, n_users + 1, size=int(rate * (seconds + warmup)) + 10)

    def mix(i: int) -> tuple[str, str, str, Any]:
        return "rec", "GET", f"/v1/users/{users[i % len(users)]}/recommendations?k=10", None

    t0 = time.perf_counter()
    with ServerProcess(root, workers=2, port=port, args=args, timeout=900) as server:
        ready = time.perf_counter() - t0
        assert server.proc is not None
        pgid = os.getpgid(server.proc.pid)
        open_loop(server.url, rate, warmup, mix, timeout=10.0)
        run = open_loop(server.url, rate, seconds, mix, timeout=10.0)
        pids = group_pids(pgid)
        rss = rss_mb(pids)
        leader = server.proc.pid
    out = {
        "config": name,
        "args": args,
        "ready_seconds": round(ready, 1),
        "recommendations": summary(run.samples),
        "rss_mb": {
            "supervisor": round(rss.get(leader, 0.0), 1),
            "workers": sorted(round(v, 1) for p, v in rss.items() if p != leader),
        },
    }
    print(json.dumps(out), flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, default=Path("/tmp/recstack-serve-scale"))
    ap.add_argument("--users", type=int, default=162_541)
    ap.add_argument("--items", type=int, default=62_423)
    ap.add_argument("--interactions", type=int, default=2_000_000)
    ap.add_argument("--rate", type=float, default=100.0)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--warmup", type=float, default=10.0)
    ap.add_argument("--port", type=int, default=8550)
    ap.add_argument("--redis-port", type=int, default=8551)
    ap.add_argument("--milvus-port", type=int, default=19650)
    ap.add_argument("--out", type=Path, default=RESULTS)
    a = ap.parse_args()
    a.work.mkdir(parents=True, exist_ok=True)
    data = a.work / f"synth-{a.users}x{a.items}x{a.interactions}"
    t = time.perf_counter()
    if not (data / "interactions.parquet").exists():
        cmd = [*recstack_command(), "-q", "data", "synth", "--out", str(data), "--users", str(a.users)]
        cmd += ["--items", str(a.items), "--interactions", str(a.interactions)]
        subprocess.run(cmd, check=True)
    synth_s = time.perf_counter() - t
    results: dict[str, Any] = {
        "benchmark": "serve_scale",
        "dataset": {"users": a.users, "items": a.items, "interactions": a.interactions},
        "rate": a.rate,
        "seconds": a.seconds,
        "synth_seconds": round(synth_s, 1),
        "load_average_start": os.getloadavg(),
        "versions": {"recstack": __version__, "python": platform.python_version()},
        "runs": [],
    }
    redis = start_redis(a.redis_port)
    try:
        with MilvusServer(data_dir=a.work / "milvus", port=a.milvus_port) as milvus:
            root = a.work / "releases"
            t = time.perf_counter()
            rid = build_release(root, _toml(data, milvus.uri), force=True)
            results["build_seconds"] = round(time.perf_counter() - t, 1)
            results["release"] = rid
            redis_args = ["--store", "redis", "--redis-url", f"redis://127.0.0.1:{a.redis_port}/0"]
            for name, args in (
                ("redis+milvus-server", redis_args),
                ("embedded+milvus-server", ["--store", "embedded"]),
            ):
                results["runs"].append(_serve(name, root, args, a.port, a.users, a.rate, a.seconds, a.warmup))
    finally:
        redis.send_signal(signal.SIGTERM)
        redis.wait(timeout=20)
    results["load_average_end"] = os.getloadavg()
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
