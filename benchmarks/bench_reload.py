"""Benchmark (issue 17): 20 hot reloads under load with ``recstack serve --workers 2``.

Protocol. A release A (default: the ``production`` channel of ``--releases-dir``, e.g. the default
pipeline built by ``recstack build``) and B, a copy of A under another id (the same files, so every
reload loads the same amount). The server runs with 2 workers and its own ``--run-dir``; an open
loop sends ``--rate`` requests/s for the whole run (recommendations of known users, of unknown users,
item pages, similar items and events, mixed). Meanwhile ``POST /admin/reload?wait=true`` switches
A -> B -> A ... 20 times, ``--pause`` seconds apart. After each reload: 20 ``/readyz`` calls (new
connections, so both workers answer) must all name the new release, and each worker's RSS is read
from /proc (both workers' pids from the run dir's status files).

Reported: failed requests (no answer or 5xx) over the run, whether every worker served the new
release after each reload, per-worker RSS after each reload, and the RSS after the last reload
against after the first (target: within 10%). Writes benchmarks/results/reload.json.

    python benchmarks/bench_reload.py --releases-dir /tmp/releases [--reloads 20] [--rate 50]
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
from _openloop import Sample, open_loop_until, rss_mb, summary
from rich.console import Console
from rich.table import Table

from recstack.testing import ServerProcess

HERE = Path(__file__).resolve().parent
KEY = "bench-key"


def clone_release(root: Path, rid: str) -> str:
    """A copy of release ``rid`` under a new id (its last character changed; the manifest's id too)."""
    last = rid[-1]
    new = rid[:-1] + ("0" if last != "0" else "1")
    dst = root / new
    if not dst.exists():
        shutil.copytree(root / rid, dst)
        manifest = json.loads((dst / "manifest.json").read_text())
        manifest["id"] = new
        (dst / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return new


def request_mix(users: list[Any], items: list[Any]) -> Any:
    def mix(i: int) -> tuple[str, str, str, Any]:
        u = users[i % len(users)]
        it = items[i % len(items)]
        match i % 10:
            case 0 | 1 | 2 | 3:
                return "recommend", "GET", f"/v1/users/{u}/recommendations?k=10", None
            case 4:
                return "recommend_unknown", "GET", f"/v1/users/new-{i % 500}/recommendations?k=10", None
            case 5:
                return "item", "GET", f"/v1/items/{it}", None
            case 6:
                return "similar", "GET", f"/v1/items/{it}/similar?k=10", None
            case 7:
                return "user", "GET", f"/v1/users/{u}", None
            case 8:
                body = {"user_id": f"new-{i % 500}", "item_id": it, "type": "click"}
                return "event", "POST", "/v1/events", body
            case _:
                return "healthz", "GET", "/healthz", None

    return mix


def catalogue(url: str) -> tuple[list[Any], list[Any]]:
    with httpx.Client(base_url=url, timeout=30) as c:
        items = [it["item_id"] for it in c.get("/v1/items", params={"limit": 200}).json()["items"]]
        users = [h for h in range(1, 301)]
    return users, items


def worker_pids(run_dir: Path) -> list[int]:
    from recstack.serving._target import RunDir

    return sorted(RunDir(run_dir).statuses())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--releases-dir", type=Path, required=True)
    ap.add_argument("--release", default="production")
    ap.add_argument("--reloads", type=int, default=20)
    ap.add_argument("--rate", type=float, default=50.0)
    ap.add_argument("--pause", type=float, default=3.0)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", type=Path, default=HERE / "results" / "reload.json")
    args = ap.parse_args()
    from recstack.release.registry import Registry

    root = args.releases_dir
    a = Registry(root).resolve(args.release)
    b = clone_release(root, a)
    run_dir = Path(tempfile.mkdtemp(prefix="bench-reload-"))
    console = Console()
    env = {"RECSTACK_SERVE_API_KEY": KEY}
    srv_args = ["--run-dir", str(run_dir)]
    reloads: list[dict[str, Any]] = []
    with ServerProcess(root, release=a, workers=args.workers, env=env, args=srv_args) as srv:
        deadline = time.monotonic() + 120
        while len(worker_pids(run_dir)) < args.workers and time.monotonic() < deadline:
            time.sleep(0.5)
        users, items = catalogue(srv.url)
        stop = threading.Event()
        box: dict[str, Any] = {}

        def load() -> None:
            box["run"] = open_loop_until(srv.url, args.rate, stop, request_mix(users, items), timeout=10.0)

        loader = threading.Thread(target=load)
        rss_before = rss_mb(worker_pids(run_dir))
        loader.start()
        time.sleep(args.pause)
        t_start = time.monotonic()
        try:
            with httpx.Client(base_url=srv.url, timeout=300) as c:
                for n in range(1, args.reloads + 1):
                    target = b if n % 2 else a
                    t0 = time.perf_counter()
                    r = c.post(
                        "/admin/reload",
                        params={"wait": "true"},
                        json={"release": target},
                        headers={"X-API-Key": KEY},
                    )
                    took = time.perf_counter() - t0
                    seen: dict[str, int] = {}
                    for _ in range(20):
                        with httpx.Client(base_url=srv.url, timeout=10) as fresh:  # a new connection
                            rid = fresh.get("/readyz").json().get("release_id")
                        seen[rid] = seen.get(rid, 0) + 1
                    time.sleep(args.pause)  # the old state is freed and trimmed in the meantime
                    rss = rss_mb(worker_pids(run_dir))
                    reloads.append(
                        {
                            "n": n,
                            "target": target,
                            "status": r.status_code,
                            "seconds": round(took, 2),
                            "workers": r.json().get("workers") if r.status_code == 200 else r.text[:300],
                            "readyz_releases": seen,
                            "all_workers_on_target": r.status_code == 200 and seen == {target: 20},
                            "rss_mb": {str(k): round(v, 1) for k, v in rss.items()},
                        }
                    )
                    console.print(
                        f"reload {n:2d} -> {target}: {r.status_code} in {took:.1f} s, readyz {seen}, "
                        f"RSS {[round(v) for v in rss.values()]} MB"
                    )
        finally:
            stop.set()
            loader.join()
        elapsed = time.monotonic() - t_start
    samples: list[Sample] = box["run"].samples
    failed = [s for s in samples if s.status == 0 or s.status >= 500]

    def total(entry: dict[str, Any]) -> float:
        return float(sum(entry["rss_mb"].values()))

    first, last = reloads[0], reloads[-1]
    same_release_first = next(e for e in reloads if e["target"] == last["target"])
    out = {
        "benchmark": "reload",
        "protocol": __doc__.split("Protocol. ", 1)[1].split("\n\nReported")[0].replace("\n", " "),
        "releases": {"a": a, "b": b},
        "workers": args.workers,
        "rate": args.rate,
        "reloads": reloads,
        "seconds": round(elapsed, 1),
        "requests": summary(samples),
        "failed_requests": len(failed),
        "failed_examples": [vars(s) for s in failed[:10]],
        "every_worker_on_new_release_after_each": all(e["all_workers_on_target"] for e in reloads),
        "rss_before_mb": round(sum(rss_before.values()), 1),
        "rss_after_first_mb": round(total(first), 1),
        "rss_after_last_mb": round(total(last), 1),
        "rss_last_over_first": round(total(last) / total(first), 4),
        "rss_after_first_on_same_release_mb": round(total(same_release_first), 1),
        "rss_last_over_first_same_release": round(total(last) / total(same_release_first), 4),
        "target_ratio_max": 1.10,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2))
    t = Table(title="20 reloads under load (2 workers)")
    for col in (
        "failed requests",
        "all workers on new release",
        "RSS first (MB)",
        "RSS last (MB)",
        "last/first",
    ):
        t.add_column(col)
    t.add_row(
        str(len(failed)),
        str(out["every_worker_on_new_release_after_each"]),
        str(out["rss_after_first_mb"]),
        str(out["rss_after_last_mb"]),
        str(out["rss_last_over_first"]),
    )
    console.print(t)
    console.print(f"requests: {out['requests']}")
    shutil.rmtree(run_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
