"""Benchmark: every quality protocol side by side (BENCHMARKS.md: ``stratified``, ``temporal``,
``temporal-rolling``, ``leave-last-out``) for the given models on ML-100K and ml-latest-small, warm and
cold users apart (cold: the users first seen in the test period of ``temporal`` / ``temporal-rolling``),
optionally mean +- sd over training seeds (``--seeds``, `recstack.evaluation.protocols.seed_summary`).

Writes ``benchmarks/results/protocols.json``: per dataset, protocol and model NDCG@10, Recall@10, HR@10
(warm), the cold users' NDCG@10 / HR@10, the fit seconds and, with seeds, their sd; each (dataset,
protocol) is merged into the file as soon as it is done (``--models`` of a later run are added).

    nice -n 5 .venv/bin/python benchmarks/bench_protocols.py [--models recent_pop,ease,two_stage:ncf]
        [--datasets /work/shared/data/ml-100k,/work/shared/data/ml-latest-small]
        [--protocols stratified,temporal,temporal-rolling,leave-last-out] [--seeds 42,142,242]
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

os.environ.setdefault("OPENBLAS_NUM_THREADS", "2")
os.environ.setdefault("OMP_NUM_THREADS", "2")

from recstack.data.loading import load_dataset
from recstack.evaluation.protocols import run_protocol
from recstack.evaluation.report import to_jsonable

OUT = Path(__file__).parent / "results" / "protocols.json"
KEYS = ("ndcg@10", "recall@10", "hr@10", "n_users", "fit_seconds")


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def summarise(result: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, res in result["results"].items():
        row = {k: res[k] for k in KEYS if k in res}
        if isinstance(res.get("cold"), dict) and res["cold"].get("n_users"):
            row["cold"] = {k: res["cold"][k] for k in ("ndcg@10", "hr@10", "n_users") if k in res["cold"]}
        if "seeds" in res:
            row["seeds"] = res["seeds"]["seeds"]
            row["sd"] = {k: v for k, v in res["seeds"]["sd"].items() if k.split(".")[-1] in KEYS}
        out[name] = row
    if "comparisons" in result:
        out["_comparisons"] = {
            g: [c for c in cs if c["metric"] == "ndcg@10"] for g, cs in result["comparisons"].items()
        }
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="recent_pop,ease")
    ap.add_argument("--datasets", default="/work/shared/data/ml-100k,/work/shared/data/ml-latest-small")
    ap.add_argument("--protocols", default="stratified,temporal,temporal-rolling,leave-last-out")
    ap.add_argument("--seeds", default="", help="training seeds, e.g. 42,142,242 (mean +- sd)")
    args = ap.parse_args()
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()] or None
    models = [m for m in args.models.split(",") if m]
    for path in [d for d in args.datasets.split(",") if d]:
        ds = load_dataset(path)
        for protocol in [p for p in args.protocols.split(",") if p]:
            log(f"{ds.name} {protocol}: {models}")
            t0 = time.perf_counter()
            res = run_protocol(ds, protocol, models, ks=[10], model_seeds=seeds)
            body: dict[str, Any] = json.loads(OUT.read_text()) if OUT.is_file() else {}
            body.update({"benchmark": "protocols", "python": platform.python_version(),
                         "cpus": os.cpu_count(), "load_average_1min": os.getloadavg()[0]})  # fmt: skip
            cell = body.setdefault(ds.name, {}).setdefault(protocol, {})
            comps = cell.pop("_comparisons", None)
            new = summarise(res)
            cell.update(new)
            if "_comparisons" not in new and comps is not None:
                cell["_comparisons"] = comps
            cell.setdefault("_wall_seconds", {})[",".join(models)] = time.perf_counter() - t0
            OUT.parent.mkdir(parents=True, exist_ok=True)
            OUT.write_text(json.dumps(to_jsonable(body), indent=2) + "\n")
            log(f"{ds.name} {protocol}: " + ", ".join(
                f"{m} {r['ndcg@10']:.4f}" + (f" (cold {r['cold']['ndcg@10']:.4f})" if "cold" in r else "")
                for m, r in new.items() if not m.startswith("_")
            ))  # fmt: skip


if __name__ == "__main__":
    main()
