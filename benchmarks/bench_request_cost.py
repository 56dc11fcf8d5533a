"""CPU cost of one recommendation request of a release, in process (no HTTP): the serving state a worker
builds (`build_state`, one intra-op thread as a server worker), then ``--requests`` requests of distinct
random known users, timed per stage (resolve / recall / filter / rank / rerank) and in CPU seconds.

Two admission policies of the two-stage ranker's memo are compared in one run, on the same users:
``doorkeeper`` (the default: a user's rows of every item are materialised at its second miss) and
``first_miss`` (every miss materialises them, the policy before). Random users of a large catalogue
rarely come back, so the second policy pays for rows nobody reads.

    python benchmarks/bench_request_cost.py --releases-dir /path/releases [--release latest]
        [--requests 200] [--label NAME]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import time
from pathlib import Path
from typing import Any

import numpy as np
from _results import write_results

RESULTS = Path(__file__).parent / "results" / "request_cost.json"


def _run(pipe: Any, users: list[Any]) -> dict[str, Any]:
    from recstack.serving.pipeline import RecRequest

    walls: list[float] = []
    stages: dict[str, list[float]] = {}
    c0 = time.process_time()
    for u in users:
        t = time.perf_counter()
        res = pipe.recommend(RecRequest(user_id=u))
        walls.append((time.perf_counter() - t) * 1000)
        for k, v in res.timings.items():
            stages.setdefault(k, []).append(v * 1000)
    cpu = (time.process_time() - c0) * 1000 / len(users)
    p50, p99 = np.percentile(walls, [50, 99])
    return {
        "cpu_ms_per_request": round(cpu, 2),
        "wall_ms": {"p50": round(float(p50), 2), "p99": round(float(p99), 2)},
        "stage_ms_mean": {k: round(float(np.mean(v)), 2) for k, v in stages.items()},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--releases-dir", type=Path, required=True)
    ap.add_argument("--release", default="latest")
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--label", default=None)
    ap.add_argument("--out", type=Path, default=RESULTS)
    a = ap.parse_args()

    from recstack import __version__
    from recstack.release import loader
    from recstack.serving._ranker import TwoStageRanker
    from recstack.serving._state import build_state
    from recstack.serving._threads import limit_threads
    from recstack.serving.pipeline import RecRequest
    from recstack.serving.settings import ServingSettings

    settings = ServingSettings(releases_dir=a.releases_dir, store="embedded")
    t0 = time.perf_counter()
    rel = loader.load(a.release, settings.releases_path(), verify=False)
    n_interactions = rel.dataset.n_interactions  # the worker drops the frame once its state is built
    state = build_state(rel, settings)
    load_s = time.perf_counter() - t0
    limit_threads(1)  # as a server worker (one per core)
    pipe = state.pipeline
    ds = pipe.catalog.dataset
    rng = np.random.default_rng(0)
    ids = ds.user_vocab.ids.to_list()
    picks = rng.choice(len(ids), size=2 * a.requests + 1, replace=False)
    users = [ids[i] for i in picks]
    pipe.recommend(RecRequest(user_id=users[-1]))  # warm: imports, sessions
    rankers = [r for r in pipe.rankers.values() if isinstance(r, TwoStageRanker)]
    out: dict[str, Any] = {
        "benchmark": "request_cost",
        "release": rel.id,
        "dataset": {"users": ds.n_users, "items": ds.n_items, "interactions": n_interactions},
        "versions": {"recstack": __version__, "python": platform.python_version(), "numpy": np.__version__},
        "cpus": os.cpu_count(),
        "load_average_start": os.getloadavg(),
        "state_seconds": round(load_s, 1),
        "max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024,
        "sources": [s.name for s in pipe.active_sources],
        "rankers": list(pipe.rankers),
        "default_model": pipe.default_model,
        "runs": {},
    }
    # the same number of distinct users per policy (no user asked twice: every request a first miss)
    halves = {"doorkeeper": users[: a.requests], "first_miss": users[a.requests : 2 * a.requests]}
    for name, group in halves.items():
        for r in rankers:
            r.set_memo(settings.ranker_memo_mb)
            if name == "first_miss":
                r._admit = lambda u: True  # type: ignore[method-assign]
            else:
                r.__dict__.pop("_admit", None)
        out["runs"][name] = _run(pipe, group)
        print(name, json.dumps(out["runs"][name]), flush=True)
    out["load_average_end"] = os.getloadavg()
    write_results(a.out, out, a.label)


if __name__ == "__main__":
    main()
