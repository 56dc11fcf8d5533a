"""Benchmark (issue 17): a 10-minute soak at a fixed rate against ``recstack serve --workers 2``.

Protocol. A release (default: the ``production`` channel of ``--releases-dir``), 2 workers, the
embedded store with ``max_online_users`` lowered to 2,000 so that the bound on users holding online
events is exercised (the soak creates far more). One open loop at ``--rate`` requests/s for
``--minutes`` minutes: recommendations of known users (k = 10; every 4th with a genre filter, every
10th with an exclude list), recommendations and user pages of users unknown to the release (a new id
every few requests: ever more of them), events (views / clicks / ratings of known and unknown
users), item pages, similar items, title searches and POST /v1/recommendations with liked items.
Every 10 s each worker's RSS is read from /proc.

Reported: answers by status (target: no 5xx), p50 / p99 / max latency per kind and overall, RSS per
worker over time, and its growth over the last half of the run (target: < 2%). Writes
benchmarks/results/soak.json.

    python benchmarks/bench_soak.py --releases-dir /tmp/releases [--minutes 10] [--rate 100]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
from _openloop import open_loop, rss_mb, summary
from rich.console import Console
from rich.table import Table

from recstack.serving._target import RunDir
from recstack.testing import ServerProcess

HERE = Path(__file__).resolve().parent


def make_mix(users: list[Any], items: list[Any], genres: list[str], titles: list[str]) -> Any:
    def mix(i: int) -> tuple[str, str, str, Any]:
        u = users[(i * 7) % len(users)]
        it = items[(i * 13) % len(items)]
        visitor = f"visitor-{i // 5}"  # a new unknown user every 5 requests
        match i % 20:
            case 0 | 1 | 2 | 3 | 4 | 5:
                q = "?k=10"
                if i % 4 == 0:
                    q += f"&genres={genres[i % len(genres)]}"
                if i % 10 == 0:
                    q += f"&exclude={items[(i + 1) % len(items)]},{items[(i + 2) % len(items)]}"
                return "recommend", "GET", f"/v1/users/{u}/recommendations{q}", None
            case 6 | 7:
                return "recommend_unknown", "GET", f"/v1/users/{visitor}/recommendations?k=10", None
            case 8:
                return "user_unknown", "GET", f"/v1/users/{visitor}", None
            case 9:
                return "user", "GET", f"/v1/users/{u}?history_limit=100", None
            case 10 | 11:
                return "event", "POST", "/v1/events", {"user_id": visitor, "item_id": it, "type": "click"}
            case 12:
                body = {"user_id": u, "item_id": it, "type": "rating", "rating": float(1 + i % 5)}
                return "event", "POST", "/v1/events", body
            case 13 | 14:
                return "item", "GET", f"/v1/items/{it}", None
            case 15:
                return "similar", "GET", f"/v1/items/{it}/similar?k=10", None
            case 16:
                return "search", "GET", f"/v1/items?q={titles[i % len(titles)]}&limit=20", None
            case 17:
                liked = [items[(i + j) % len(items)] for j in range(3)]
                return "recommend_liked", "POST", "/v1/recommendations", {"liked_items": liked, "k": 10}
            case 18:
                return "release", "GET", "/v1/release", None
            case _:
                return "healthz", "GET", "/healthz", None

    return mix


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--releases-dir", type=Path, required=True)
    ap.add_argument("--release", default="production")
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--rate", type=float, default=100.0)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--max-online-users", type=int, default=2000)
    ap.add_argument("--out", type=Path, default=HERE / "results" / "soak.json")
    args = ap.parse_args()
    console = Console()
    run_dir = Path(tempfile.mkdtemp(prefix="bench-soak-"))
    env = {"RECSTACK_SERVE_MAX_ONLINE_USERS": str(args.max_online_users)}
    rss_series: list[dict[str, Any]] = []
    seconds = args.minutes * 60
    with ServerProcess(
        args.releases_dir,
        release=args.release,
        workers=args.workers,
        env=env,
        args=["--run-dir", str(run_dir)],
    ) as srv:
        deadline = time.monotonic() + 120
        while len(RunDir(run_dir).statuses()) < args.workers and time.monotonic() < deadline:
            time.sleep(0.5)
        time.sleep(5)  # the ranker memo's prewarm runs right after the load
        with httpx.Client(base_url=srv.url, timeout=30) as c:
            info = c.get("/v1/release").json()
            page = c.get("/v1/items", params={"limit": 300}).json()["items"]
        items = [it["item_id"] for it in page]
        titles = [str(it["title"]).split(" ")[0][:6] or "a" for it in page[:50]]
        genres = [g for g in info["genres"] if g.lower() not in ("unknown", "(no genres listed)")]
        users = list(range(1, min(info["n_users"], 600) + 1))
        stop = threading.Event()
        t0 = time.monotonic()

        def sample_rss() -> None:
            while not stop.wait(10.0):
                pids = sorted(RunDir(run_dir).statuses())
                rss = rss_mb(pids)
                rss_series.append(
                    {
                        "t": round(time.monotonic() - t0, 1),
                        "rss_mb": {str(p): round(v, 1) for p, v in rss.items()},
                    }
                )

        sampler = threading.Thread(target=sample_rss, daemon=True)
        sampler.start()
        run = open_loop(srv.url, args.rate, seconds, make_mix(users, items, genres, titles), timeout=10.0)
        stop.set()
        sampler.join()
        log_tail = srv.output(2000)
    samples = run.samples
    by_kind = {k: summary([s for s in samples if s.kind == k]) for k in sorted({s.kind for s in samples})}
    five_xx = [s for s in samples if s.status >= 500 or s.status == 0]

    def total(entry: dict[str, Any]) -> float:
        return float(sum(entry["rss_mb"].values()))

    half = [e for e in rss_series if e["t"] >= seconds / 2]
    mid, end = (half[0], half[-1]) if half else (rss_series[0], rss_series[-1])
    growth = total(end) / total(mid) - 1.0
    out = {
        "benchmark": "soak",
        "protocol": __doc__.split("Protocol. ", 1)[1].split("\n\nReported")[0].replace("\n", " "),
        "release": info["release_id"],
        "rate": args.rate,
        "minutes": args.minutes,
        "max_online_users": args.max_online_users,
        "requests": summary(samples),
        "by_kind": by_kind,
        "five_xx_or_no_answer": len(five_xx),
        "five_xx_examples": [vars(s) for s in five_xx[:10]],
        "rss_series": rss_series,
        "rss_mid_mb": round(total(mid), 1),
        "rss_end_mb": round(total(end), 1),
        "rss_growth_last_half": round(growth, 4),
        "targets": {"five_xx": 0, "rss_growth_last_half_max": 0.02},
        "server_log_tail": log_tail,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2))
    t = Table(title=f"soak: {args.minutes:.0f} min at {args.rate:.0f} requests/s ({args.workers} workers)")
    for col in ("kind", "count", "p50 ms", "p99 ms", "max ms", "statuses"):
        t.add_column(col)
    for k, d in by_kind.items():
        t.add_row(
            k, str(d["count"]), str(d["p50_ms"]), str(d["p99_ms"]), str(d["max_ms"]), str(d["statuses"])
        )
    console.print(t)
    console.print(
        f"all: {out['requests']}; 5xx / no answer: {len(five_xx)}; RSS {out['rss_mid_mb']} -> "
        f"{out['rss_end_mb']} MB over the last half ({growth:+.2%})"
    )


if __name__ == "__main__":
    main()
