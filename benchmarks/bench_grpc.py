"""Benchmark: recommendation latency through the five gRPC services vs the single-process REST API.

On one release (default: a quick ML-100K release with pop + itemknn + ease built into a temp dir;
or ``--release`` / ``--releases-dir``):

1. ``recstack services start --all`` (five processes: user, item, recall, rank, aggregator) and
   ``AggregatorService.Recommend`` for a known user, k=10 (the chain user || recall -> rank -> item);
2. ``recstack serve --workers 1`` and ``GET /v1/users/{id}/recommendations?k=10`` (one process,
   keep-alive HTTP connection);
3. the in-process ``Pipeline.recommend`` (no transport at all), as the floor.

Closed loop, one client, sequential requests: users cycle over the release's users; ``--warmup``
requests first, then ``--requests`` timed ones. Reports p50 / p90 / p99 / mean latency (ms),
requests/s and the mean time of each gRPC hop as seen by the aggregator. Every process runs on the
same (shared) machine, so the figures include its noise: the load average is recorded.
Writes benchmarks/results/grpc.json.

    python benchmarks/bench_grpc.py [--requests 2000] [--warmup 200] [--release ID] [--releases-dir DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from rich.console import Console
from rich.table import Table

from recstack.testing import ServerProcess, build_small_release, free_ports

HERE = Path(__file__).resolve().parent
NAMES = ("user", "item", "recall", "rank", "aggregator")


def stats(lat_s: list[float]) -> dict[str, float]:
    a = np.asarray(lat_s) * 1000.0
    return {
        "n": len(a),
        "p50_ms": float(np.percentile(a, 50)),
        "p90_ms": float(np.percentile(a, 90)),
        "p99_ms": float(np.percentile(a, 99)),
        "mean_ms": float(a.mean()),
        "requests_per_s": float(len(a) / (a.sum() / 1000.0)),
    }


def run_grpc(
    users: list[str], warmup: int, n: int, ports: dict[str, int]
) -> tuple[dict[str, Any], dict[str, float]]:
    from recstack.serving.grpc.client import GrpcClient, make_user

    lat: list[float] = []
    hops: dict[str, list[float]] = {}
    degraded = 0
    with GrpcClient({k: f"127.0.0.1:{p}" for k, p in ports.items()}, timeout=5.0) as c:
        for j in range(warmup + n):
            u = users[j % len(users)]
            t0 = time.perf_counter()
            r = c.recommend(make_user(u), k=10)
            dt = time.perf_counter() - t0
            if j >= warmup:
                lat.append(dt)
                degraded += int(r.error.degraded)
                for h, ms in r.hop_ms.items():
                    hops.setdefault(h, []).append(ms)
    out = stats(lat)
    out["degraded_answers"] = degraded
    return out, {h: float(np.mean(v)) for h, v in hops.items()}


def run_rest(users: list[str], warmup: int, n: int, port: int) -> dict[str, Any]:
    lat: list[float] = []
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10.0) as c:
        for j in range(warmup + n):
            u = users[j % len(users)]
            t0 = time.perf_counter()
            r = c.get(f"/v1/users/{u}/recommendations", params={"k": 10})
            dt = time.perf_counter() - t0
            r.raise_for_status()
            if j >= warmup:
                lat.append(dt)
    return stats(lat)


def run_inprocess(users: list[str], warmup: int, n: int, releases_dir: Path, release: str) -> dict[str, Any]:
    from recstack.serving._state import build_state, default_loader
    from recstack.serving.pipeline import RecRequest
    from recstack.serving.settings import ServingSettings

    settings = ServingSettings(releases_dir=releases_dir, release=release)
    pipe = build_state(default_loader(settings)(release), settings).pipeline
    lat: list[float] = []
    for j in range(warmup + n):
        t0 = time.perf_counter()
        pipe.recommend(RecRequest(user_id=users[j % len(users)], k=10))
        if j >= warmup:
            lat.append(time.perf_counter() - t0)
    return stats(lat)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--warmup", type=int, default=200)
    ap.add_argument("--release", default=None)
    ap.add_argument("--releases-dir", type=Path, default=None)
    ap.add_argument("--out", type=Path, default=HERE / "results" / "grpc.json")
    args = ap.parse_args()

    from recstack.release.registry import Registry
    from recstack.serving.grpc.launcher import start_services, stop_services

    tmp = Path(tempfile.mkdtemp(prefix="bench-grpc-"))
    if args.releases_dir is None:
        releases_dir = tmp / "releases"
        release = build_small_release(releases_dir)
    else:
        releases_dir = args.releases_dir
        release = Registry(releases_dir).resolve(args.release or "production")
    from recstack.release import load

    users = [str(u) for u in load(release, releases_dir).dataset.user_vocab.ids.to_list()]
    results: dict[str, Any] = {}
    console = Console()

    # 1. gRPC chain
    run_dir = tmp / "run"
    ports = dict(zip(NAMES, free_ports(len(NAMES)), strict=True))
    try:
        start_services([], release=release, releases_dir=releases_dir, ports=ports, run_dir=run_dir)
        results["grpc_chain"], hop_means = run_grpc(users, args.warmup, args.requests, ports)
    finally:
        stop_services(run_dir=run_dir)

    # 2. REST, one process
    with ServerProcess(releases_dir, release=release, workers=1) as srv:
        results["rest_single_process"] = run_rest(users, args.warmup, args.requests, srv.port)

    # 3. in process
    results["pipeline_in_process"] = run_inprocess(users, args.warmup, args.requests, releases_dir, release)

    table = Table(
        title=f"recommendation latency, k=10, {args.requests} sequential requests · release {release}"
    )
    for col in ("path", "p50 ms", "p90 ms", "p99 ms", "mean ms", "req/s"):
        table.add_column(col, justify="left" if col == "path" else "right")
    for name, r in results.items():
        table.add_row(
            name, f"{r['p50_ms']:.2f}", f"{r['p90_ms']:.2f}", f"{r['p99_ms']:.2f}", f"{r['mean_ms']:.2f}",
            f"{r['requests_per_s']:.0f}",
        )  # fmt: skip
    console.print(table)
    console.print(
        "gRPC hop means (ms, as seen by the aggregator): "
        + ", ".join(f"{h} {v:.2f}" for h, v in hop_means.items())
    )
    out = {
        "benchmark": "grpc",
        "protocol": (
            "closed loop, 1 client, sequential recommendations for known users cycling over the "
            f"release's users, k=10, {args.warmup} warm-up + {args.requests} timed requests per path; "
            "grpc_chain = AggregatorService.Recommend over 5 processes (user || recall -> rank -> item), "
            "rest_single_process = recstack serve --workers 1, GET /v1/users/{id}/recommendations, "
            "pipeline_in_process = Pipeline.recommend"
        ),
        "release": release,
        "results": results,
        "grpc_hop_mean_ms": hop_means,
        "grpc_over_rest_p50": results["grpc_chain"]["p50_ms"] / results["rest_single_process"]["p50_ms"],
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "loadavg": list(os.getloadavg()),
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2))
    console.print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
