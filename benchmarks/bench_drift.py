"""Benchmark: drift of live events against the training data, through a real server (issue 22).

The release of bench_ab.py (the default pipeline built from the train part of a temporal split of
``--dataset``; built here when missing) is served by ``recstack serve`` with a fresh event log per
scenario. The scenario's events are posted through ``POST /v1/events`` (ratings of the test period,
in time order); the server's drift monitor reads them from the log, and the figures come from
``GET /v1/monitoring/drift`` and the ``recstack_drift_psi`` gauges of ``/metrics``:

- ``unshifted``: ``--events`` interactions drawn at random from the held-out test period;
- ``one_genre``: as many of the test period's interactions with items of one genre only (``--genre``);
- ``new_users_popular``: only users unknown to the release, on the 20 most popular items.

PSI > the threshold (0.25) on a feature = drifted. Writes benchmarks/results/drift.json.

    python benchmarks/bench_drift.py [--dataset ml-100k] [--work /tmp/bench-ab] [--events 2000]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from rich.console import Console
from rich.table import Table

from recstack.data.loading import load_dataset
from recstack.experiments.replay import Population, post_events
from recstack.ops.drift import FEATURES
from recstack.testing import ServerProcess

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_ab import _port, _release

RESULTS = Path(__file__).resolve().parent / "results"


def _scenario(
    releases: Path, work: Path, name: str, events: list[tuple[str, str, float | None]]
) -> dict[str, Any]:
    log = work / f"drift-{name}.db"
    log.unlink(missing_ok=True)
    env = {"RECSTACK_SERVE_DRIFT_WINDOW": str(len(events)), "RECSTACK_SERVE_DRIFT_MIN_EVENTS": "100"}
    args = ["--event-log", f"sqlite:///{log}", "--api-key", "k"]
    with (
        ServerProcess(releases, port=_port(), args=args, env=env, timeout=600) as srv,
        httpx.Client(base_url=srv.url, timeout=60.0) as c,
    ):
        t0 = time.perf_counter()
        post_events(c, events, concurrency=4)
        secs = time.perf_counter() - t0
        deadline = time.monotonic() + 30
        while True:  # the monitor reads the log every second
            st = c.get("/v1/monitoring/drift").json()
            if st["window_events"] >= len(events) or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        gauges = [ln for ln in c.get("/metrics").text.splitlines() if ln.startswith("recstack_drift")]
    return {
        "events": len(events),
        "post_seconds": round(secs, 2),
        "window_events": st["window_events"],
        "psi": st["psi"],
        "threshold": st["threshold"],
        "drifted": st["drifted"],
        "metrics": gauges,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="ml-100k")
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "bench-ab")
    ap.add_argument("--events", type=int, default=2000)
    ap.add_argument("--genre", default="Horror")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=RESULTS / "drift.json")
    args = ap.parse_args()
    console = Console()
    args.work.mkdir(parents=True, exist_ok=True)
    ds = load_dataset(args.dataset)
    pop = Population.from_split(ds)
    releases, _ = _release(args.work, args.dataset, pop, console)
    rng = np.random.default_rng(args.seed)

    test = pop.test.interactions.sort("timestamp")
    uids, iids = ds.user_vocab.ids.to_list(), ds.item_vocab.ids.to_list()
    rows = [
        (str(uids[u]), str(iids[i]), float(r))
        for u, i, r in test.select("user", "item", "rating").iter_rows()
    ]
    genres = ds.item_genres()
    train_users = set(pop.train.interactions["user"].unique().to_list())

    def sample(pool: list[int], n: int) -> list[tuple[str, str, float | None]]:
        pick = np.sort(rng.choice(len(pool), size=min(n, len(pool)), replace=False))
        return [rows[pool[j]] for j in pick.tolist()]

    all_idx = list(range(len(rows)))
    items = test["item"].to_list()
    users = test["user"].to_list()
    genre_idx = [j for j in all_idx if args.genre in genres[items[j]]]
    pop_items = set(np.argsort(-pop.train.item_popularity())[:20].tolist())
    new_pop = [
        (f"new-{j % 300}", str(iids[int(rng.choice(list(pop_items)))]), 4.0) for j in range(args.events)
    ]
    scenarios = {
        "unshifted": sample(all_idx, args.events),
        "one_genre": sample(genre_idx, args.events),
        "new_users_popular": new_pop,
    }
    result: dict[str, Any] = {
        "benchmark": "drift of live events (PSI against the training data)",
        "dataset": args.dataset,
        "release": "the default pipeline built from the train part of the temporal split (bench_ab.py)",
        "protocol": (
            "recstack serve with a fresh event log per scenario; events POSTed through /v1/events; "
            "PSI of the server's drift window (= the scenario's events) from /v1/monitoring/drift; "
            "reference = the last 10% of the training data binned against the 90% before it"
        ),
        "test_period": {
            "interactions": len(rows),
            f"{args.genre}_interactions": len(genre_idx),
            "users_new_to_release": len({u for u in users if u not in train_users}),
        },
        "genre": args.genre,
        "scenarios": {},
    }
    table = Table(title="drift: PSI per feature (threshold 0.25)")
    table.add_column("scenario")
    for f in FEATURES:
        table.add_column(f, justify="right")
    table.add_column("drifted")
    for name, evs in scenarios.items():
        console.print(f"scenario {name}: {len(evs)} events ...")
        res = _scenario(releases, args.work, name, evs)
        result["scenarios"][name] = res
        table.add_row(name, *(f"{res['psi'][f]:.3f}" for f in FEATURES), ", ".join(res["drifted"]) or "no")
    console.print(table)
    result.update(cpus=os.cpu_count(), load_average_1m=os.getloadavg()[0], python=platform.python_version())
    args.out.write_text(json.dumps(result, indent=2))
    console.print(f"-> {args.out}")


if __name__ == "__main__":
    sys.exit(main())
