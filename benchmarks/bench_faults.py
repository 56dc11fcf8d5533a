"""Benchmark (issue 17): Redis frozen 20 s, then killed 25 s, under 100 requests/s.

Protocol. A private ``redis-server`` (its own port, ``--save "" --appendonly no``: a restart comes
back empty) and ``recstack serve --workers 2 --store redis`` on a release (default: the ``production``
channel of ``--releases-dir``). Two open loops run for the whole time: ``--rate`` requests/s of a mix
(recommendations of known and unknown users, user pages, events, item pages, similar items) and
20 ``/healthz``/s on their own connections. Timeline (seconds): 0-10 healthy; 10-30 Redis frozen
(SIGSTOP); 30-45 healthy again (SIGCONT); 45-70 Redis killed (SIGKILL); 70 a new Redis on the same
port, empty; 70-95 recovery.

Reported per phase: ``/healthz`` p50 / p99; per request kind, answers by status; failed requests
(no answer or 5xx): all should be 503s of kinds that need Redis (events; the user page of a user
unknown to the release), each answered within the Redis timeout budget; answers served degraded
(200 with ``degraded``: the release's history without the online events); recovery: from the end of
each fault to the first moment after which every request of a Redis-needing kind succeeds and no
answer is degraded. Writes benchmarks/results/faults.json.

    python benchmarks/bench_faults.py --releases-dir /tmp/releases [--rate 100] [--redis-port 18150]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import httpx
from _openloop import Run, Sample, open_loops, summary
from rich.console import Console
from rich.table import Table

from recstack.testing import ServerProcess

HERE = Path(__file__).resolve().parent
#: kinds whose requests cannot be answered without Redis (a write, or a lookup of online-only users)
NEEDS_REDIS = {"event", "user_unknown"}
PHASES = [
    ("healthy", 0, 10),
    ("frozen", 10, 30),
    ("thawed", 30, 45),
    ("killed", 45, 70),
    ("restarted", 70, 95),
]


def start_redis(port: int) -> subprocess.Popen[bytes]:
    exe = shutil.which("redis-server")
    if exe is None:
        raise SystemExit("redis-server is not installed (apt-get install redis-server)")
    proc = subprocess.Popen(
        [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    import redis

    deadline = time.monotonic() + 10
    while True:
        try:
            if redis.Redis(port=port, socket_connect_timeout=0.5).ping():
                return proc
        except redis.RedisError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def mix_for(users: list[Any], items: list[Any]) -> Any:
    def mix(i: int) -> tuple[str, str, str, Any]:
        u = users[i % len(users)]
        it = items[i % len(items)]
        match i % 10:
            case 0 | 1 | 2:
                return "recommend", "GET", f"/v1/users/{u}/recommendations?k=10", None
            case 3:
                return "recommend_unknown", "GET", f"/v1/users/new-{i % 300}/recommendations?k=10", None
            case 4:
                return "user", "GET", f"/v1/users/{u}", None
            case 5:
                return "user_unknown", "GET", f"/v1/users/new-{(i - 3) % 300}", None
            case 6 | 7:
                body = {"user_id": f"new-{i % 300}" if i % 20 < 10 else u, "item_id": it, "type": "click"}
                return "event", "POST", "/v1/events", body
            case 8:
                return "item", "GET", f"/v1/items/{it}", None
            case _:
                return "similar", "GET", f"/v1/items/{it}/similar?k=10", None

    return mix


def healthz(i: int) -> tuple[str, str, str, Any]:
    return "healthz", "GET", "/healthz", None


def _bad(s: Sample) -> bool:
    if s.status == 0 or s.status >= 500:
        return True
    if s.kind == "user_unknown" and s.status == 404:  # warm-up: the user's first event not sent yet
        return False
    return '"degraded":["' in s.body


def recovery(samples: list[Sample], fault_end: float, until: float) -> float | None:
    """Seconds from ``fault_end`` to the due time after which no Redis-dependent request failed or
    was degraded (None: not recovered before ``until``)."""
    relevant = [
        s
        for s in samples
        if fault_end <= s.t < until
        and (s.kind in NEEDS_REDIS or s.kind.startswith("rec") or s.kind == "user")
    ]
    bad = [s.t for s in relevant if _bad(s)]
    if not bad:
        return 0.0
    last = max(bad)
    return None if last > until - 3 else round(last - fault_end, 2)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--releases-dir", type=Path, required=True)
    ap.add_argument("--release", default="production")
    ap.add_argument("--rate", type=float, default=100.0)
    ap.add_argument("--redis-port", type=int, default=18150)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", type=Path, default=HERE / "results" / "faults.json")
    args = ap.parse_args()
    console = Console()
    redis_proc = start_redis(args.redis_port)
    url = f"redis://127.0.0.1:{args.redis_port}/0"
    srv_args = ["--store", "redis", "--redis-url", url]
    events: list[tuple[float, str]] = []
    try:
        with ServerProcess(
            args.releases_dir, release=args.release, workers=args.workers, args=srv_args
        ) as srv:
            with httpx.Client(base_url=srv.url, timeout=30) as c:
                items = [it["item_id"] for it in c.get("/v1/items", params={"limit": 200}).json()["items"]]
                settings = c.get("/v1/release").json()
            users = list(range(1, 301))
            end = PHASES[-1][2]
            t0 = time.monotonic()
            state = {"redis": redis_proc}

            def faults() -> None:
                def at(t: float) -> None:
                    time.sleep(max(0.0, t0 + t - time.monotonic()))

                at(10)
                os.killpg(state["redis"].pid, signal.SIGSTOP)
                events.append((time.monotonic() - t0, "SIGSTOP"))
                at(30)
                os.killpg(state["redis"].pid, signal.SIGCONT)
                events.append((time.monotonic() - t0, "SIGCONT"))
                at(45)
                os.killpg(state["redis"].pid, signal.SIGKILL)
                state["redis"].wait()
                events.append((time.monotonic() - t0, "SIGKILL"))
                at(70)
                state["redis"] = start_redis(args.redis_port)
                events.append((time.monotonic() - t0, "restarted (empty)"))

            ft = threading.Thread(target=faults)
            ft.start()
            runs: list[Run] = open_loops(
                srv.url,
                end,
                [(args.rate, mix_for(users, items)), (20.0, healthz)],
                timeout=10.0,
                keep_bodies=True,
            )
            ft.join()
            redis_proc = state["redis"]
            log_tail = srv.output(3000)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(redis_proc.pid, signal.SIGKILL)
        redis_proc.wait()
    main_run, hz = runs
    phases: dict[str, Any] = {}
    for name, a, b in PHASES:
        by_kind = {}
        for kind in sorted({s.kind for s in main_run.samples}):
            ss = main_run.of(kind, a, b)
            d = summary(ss)
            d["degraded"] = sum(1 for s in ss if '"degraded":["' in s.body)
            by_kind[kind] = d
        phases[name] = {"seconds": [a, b], "healthz": summary(hz.of(None, a, b)), "requests": by_kind}
    failed = [s for s in main_run.samples if s.status == 0 or s.status >= 500]
    failed_kinds = sorted({s.kind for s in failed})
    clear_503 = all(s.status == 503 and '"error":{"code":"unavailable"' in s.body for s in failed)
    out = {
        "benchmark": "faults",
        "protocol": __doc__.split("Protocol. ", 1)[1].split("\n\nReported")[0].replace("\n", " "),
        "release": settings.get("release_id"),
        "store": settings.get("store"),
        "rate": args.rate,
        "fault_events": events,
        "healthz_p99_ms_throughout": summary(hz.samples)["p99_ms"],
        "healthz_max_ms_throughout": summary(hz.samples)["max_ms"],
        "failed_requests": len(failed),
        "failed_kinds": failed_kinds,
        "failed_only_redis_kinds": set(failed_kinds) <= NEEDS_REDIS,
        "failed_all_clear_503": clear_503,
        "failed_max_latency_ms": round(max((s.latency for s in failed), default=0.0) * 1000, 1),
        "failed_examples": [vars(s) for s in failed[:5]],
        "recovery_seconds": {
            "after_freeze": recovery(main_run.samples, 30, 45),
            "after_restart": recovery(main_run.samples, 70, 95),
        },
        "phases": phases,
        "per_second": [
            {
                "t": t,
                "failed": sum(1 for s in main_run.of(None, t, t + 1) if s.status == 0 or s.status >= 500),
                "degraded": sum(1 for s in main_run.of(None, t, t + 1) if '"degraded":["' in s.body),
                "healthz_max_ms": summary(hz.of(None, t, t + 1)).get("max_ms"),
            }
            for t in range(PHASES[-1][2])
        ],
        "targets": {"healthz_p99_ms": 50, "recovery_s": 2},
        "server_log_tail": log_tail,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2))
    t = Table(title=f"Redis frozen 20 s and killed 25 s at {args.rate:.0f} requests/s (2 workers)")
    for col in ("phase", "healthz p99 ms", "failed (503)", "degraded 200", "requests"):
        t.add_column(col)
    for name, p in phases.items():
        reqs = p["requests"].values()
        t.add_row(
            name,
            str(p["healthz"].get("p99_ms")),
            str(sum(r.get("failed", 0) for r in reqs)),
            str(sum(r.get("degraded", 0) for r in reqs)),
            str(sum(r.get("count", 0) for r in reqs)),
        )
    console.print(t)
    console.print(
        f"healthz p99 throughout {out['healthz_p99_ms_throughout']} ms; failed {len(failed)} "
        f"(kinds {failed_kinds}, all clear 503: {clear_503}, max {out['failed_max_latency_ms']} ms); "
        f"recovery {out['recovery_seconds']}"
    )


if __name__ == "__main__":
    main()
