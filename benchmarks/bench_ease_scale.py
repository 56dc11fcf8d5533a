"""Benchmark: EASE / time_ease head-tail approximation (``mode="auto"`` above ``exact_max_items``)
against exact EASE on the ``temporal`` protocol (BENCHMARKS.md), with the head forced small.

For each dataset (ML-100K from ``/work/shared/data/ml-100k`` or the bundled copy, ml-latest-small) and
each model (ease, time_ease at their default points) it fits ``mode="exact"`` and ``mode="auto"``
with ``exact_max_items`` = each of ``--heads`` (fractions of the catalogue), evaluates warm test users
(train items removed) and reports NDCG@10, the ratio auto / exact, fit seconds and the weights' size.
Writes ``benchmarks/results/ease_scale.json``.

    python benchmarks/bench_ease_scale.py [--datasets ml-100k,ml-latest-small] [--heads 0.25,0.5]
        [--protocol temporal | stratified] [--out benchmarks/results/ease_scale.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np

from recstack.data.loading import load_dataset
from recstack.data.splits import split
from recstack.evaluation.protocols import evaluate_retriever
from recstack.models.retrieval.ease import EASE, TimeEASE

RESULTS = Path(__file__).parent / "results" / "ease_scale.json"
DATA = {"ml-100k": "/work/shared/data/ml-100k", "ml-latest-small": "/work/shared/data/ml-latest-small"}


def _bytes(m: EASE) -> int:
    if m.weights is not None:
        return int(m.weights.nbytes)
    assert m.head_weights is not None and m.tail_weights is not None
    t = m.tail_weights
    return int(m.head_weights.nbytes + t.data.nbytes + t.indices.nbytes + t.indptr.nbytes)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--datasets", default="ml-100k,ml-latest-small")
    ap.add_argument("--heads", default="0.25,0.5")
    ap.add_argument("--protocol", default="temporal", help="temporal (warm users) or stratified")
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args()
    rows: list[dict[str, Any]] = []
    for name in args.datasets.split(","):
        path = DATA.get(name, name)
        ds = load_dataset(path if Path(path).exists() else name)
        sp_ = split(ds, args.protocol, seed=42)
        cold = np.asarray(getattr(sp_, "cold_users", np.empty(0)), dtype=np.int64)
        warm = np.setdiff1d(np.unique(sp_.test.interactions["user"].to_numpy()), cold)
        n_items = sp_.train.n_items
        for cls in (EASE, TimeEASE):
            variants: list[tuple[str, dict[str, Any]]] = [("exact", {"mode": "exact"})]
            for frac in (float(f) for f in args.heads.split(",")):
                variants.append((f"head {frac:g}", {"mode": "auto", "exact_max_items": int(frac * n_items)}))
            base = None
            for label, params in variants:
                m = cls(**params)
                t0 = time.perf_counter()
                m.fit(sp_.train)
                fit_s = time.perf_counter() - t0
                res = evaluate_retriever(m, sp_.train, sp_.test, [10], True, users=warm, accuracy_ks=())
                ndcg = float(res["ndcg@10"])
                base = ndcg if base is None else base
                row = {
                    "dataset": name,
                    "n_items": n_items,
                    "model": cls.name,
                    "variant": label,
                    "head_items": params.get("exact_max_items", n_items),
                    "ndcg@10": round(ndcg, 5),
                    "recall@10": round(float(res["recall@10"]), 5),
                    "ratio_to_exact": round(ndcg / base, 4) if base else None,
                    "n_users": res["n_users"],
                    "fit_seconds": round(fit_s, 2),
                    "weights_mb": round(_bytes(m) / 1e6, 1),
                }
                rows.append(row)
                print(json.dumps(row))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"protocol": f"{args.protocol} (warm users, train items removed)", "machine": platform.platform()}
    out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
