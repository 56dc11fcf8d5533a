"""Cold users: recommendations for a visitor from a profile only, or from 1, 3, 5 liked items.

Protocol ``cold-users`` (`recstack.evaluation.cold_users`, seed 42): 10% of the users (among those with
>= 5 liked items and one more interaction) are held out with all their interactions. For each held-out
user: the profile alone (age / gender / occupation; ML-100K only: ml-latest-small has no demographics),
then their first 1, 3, 5 liked items in time (rating >= 4; the rest of their items is the test set, the
given items are removed). NDCG@10 and Recall@20 per model vs global popularity, with the paired bootstrap
95% CI (over users) of each difference. Every choice (the segment model's parameters and the profile
verdict; the liked-items pipeline variant) is made on validation users carved out of the training users.

The liked conditions run the serving pipeline itself (`recstack.serving.pipeline.Pipeline`, recall order,
no ranker) over retrievers fitted on the training users; the variants: each retriever alone (+ popular)
and ``all`` of them. ``--two-tower`` also scores the two-tower's user tower from the profile alone (no
id, no history) on the test users (a candidate; serving uses it only when it wins).

    nice -n 5 .venv/bin/python benchmarks/bench_cold_users.py [--data ml-100k ml-latest-small] [--two-tower]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from recstack import __version__
from recstack.data.loading import load_dataset
from recstack.evaluation.cold_users import (
    KMAX,
    _compare,
    _given_and_truth,
    _per_user,
    _popular_scores,
    _score,
    _strip,
    _top,
    cold_user_split,
    format_cold_users,
    run_cold_users,
)

RESULTS = Path(__file__).resolve().parent / "results" / "cold_users.json"
MODELS = ("itemknn", "ease", "content")
SEED = 42


def two_tower_profile(name: str) -> dict[str, Any]:
    """The two-tower user tower from the profile only (uid = OOV, empty history) on the cold-users
    test users, vs popular (same split as `run_cold_users`)."""
    import scipy.sparse as sp

    from recstack.features.segments import user_profiles
    from recstack.models.registry import create

    ds = load_dataset(name)
    train, users = cold_user_split(ds, seed=SEED)
    t0 = time.perf_counter()
    tt = create("two_tower").fit(train)
    fit_s = time.perf_counter() - t0
    feats = tt._require_net()[1]
    profiles = user_profiles(ds.users, ds.n_users)
    ucat = np.stack([feats.encode_profile(profiles[u]) for u in users.tolist()])
    empty = sp.csr_matrix((len(users), ds.n_items), dtype=np.float32)
    scores = tt.score_history_profile(empty, ucat)
    given, truth = _given_and_truth(_per_user(ds, users), users, 0, ds.n_items)
    models = {
        "popular": _score(_top(np.tile(_popular_scores(train), (len(users), 1)), given, KMAX), truth),
        "two_tower_profile": _score(_top(scores, given, KMAX), truth),
    }
    return {
        "fit_seconds": round(fit_s, 1),
        "models": _strip(models),
        "comparisons": _compare(models, "popular", SEED),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", nargs="+", default=["ml-100k", "ml-latest-small"])
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--two-tower", action="store_true", help="also the two-tower profile-only user tower")
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--key-suffix", default="", help="store under '<data><suffix>' (another model list)")
    ap.add_argument(
        "--popular-weights", default="1", help="comma-separated weights of the popular source per variant"
    )
    args = ap.parse_args(argv)
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    out: dict[str, Any] = json.loads(args.out.read_text()) if args.out.is_file() else {}
    out.update(
        {
            "protocol": "cold-users",
            "seed": SEED,
            "versions": {
                "recstack": __version__,
                "python": platform.python_version(),
                "numpy": np.__version__,
            },
            "cpus": os.cpu_count(),
        }
    )
    out.setdefault("datasets", {})
    for name in args.data:
        load0 = os.getloadavg()[0]
        t0 = time.perf_counter()
        weights = [float(w) for w in args.popular_weights.split(",") if w.strip()]
        res = run_cold_users(load_dataset(name), models, seed=SEED, popular_weights=weights)
        res["seconds"] = round(time.perf_counter() - t0, 1)
        res["models"], res["popular_weights"] = models, weights
        res["command"] = " ".join(
            ["benchmarks/bench_cold_users.py", *(argv if argv is not None else sys.argv[1:])]
        )
        key = f"{name}{args.key_suffix}"
        if args.two_tower and res["demographics"]:
            res["two_tower_profile"] = two_tower_profile(name)
        elif "two_tower_profile" in out["datasets"].get(key, {}):  # measured by an earlier run: kept
            res["two_tower_profile"] = out["datasets"][key]["two_tower_profile"]
        res["load_average_1min"] = [round(load0, 1), round(os.getloadavg()[0], 1)]
        out["datasets"][key] = res
        for line in format_cold_users(res):
            print(line, flush=True)
        if "two_tower_profile" in res:
            print("  two-tower profile:", json.dumps(res["two_tower_profile"]["comparisons"][0]), flush=True)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(out, indent=2, default=float) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
