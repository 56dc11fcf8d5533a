"""Benchmark: the quality tables of BENCHMARKS.md (``stratified``, ``tfrs``, ``temporal-rolling``) with
the content models (``content``, ``content_userknn``: item text embeddings, issue 21) next to the
classical peers, on ML-100K and ml-latest-small.

Every model's hyperparameters are chosen on validation carved from the training part
(`recstack.evaluation.protocols.run_protocol` with ``tune=True``); one run, seed 42. The JSON
(``benchmarks/results/content_tables.json``) keeps, per data set and protocol, each model's headline
metrics, fit seconds and chosen parameters, and for ``temporal-rolling`` the paired bootstrap CIs of
NDCG@10 differences that involve a content model; the load average before and after each run.
The served default (``two_stage:ncf``) on ``temporal-rolling`` is in ``temporal.json``
(bench_temporal.py) on the same windows: it is not refitted here (5 x 300 s on ml-latest-small).

    nice -n 5 .venv/bin/python benchmarks/bench_content_tables.py [--datasets ml-100k,ml-latest-small]
        [--protocols stratified,tfrs,temporal-rolling] [--models pop,recent_pop,itemknn,ease,content,
        content_userknn]
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
os.environ.setdefault("MKL_NUM_THREADS", "2")

from recstack.data.loading import load_dataset
from recstack.evaluation.protocols import run_protocol
from recstack.evaluation.report import to_jsonable

OUT = Path(__file__).parent / "results" / "content_tables.json"
DATA = {"ml-100k": "/work/shared/data/ml-100k", "ml-latest-small": "/work/shared/data/ml-latest-small"}
CONTENT = ("content", "content_userknn")
KEYS = {
    "stratified": ("precision@10", "recall@10", "ndcg@10", "map@10", "coverage@10"),
    "tfrs": ("accuracy@1", "accuracy@10", "accuracy@50", "accuracy@100"),
    "temporal-rolling": ("ndcg@10", "recall@10", "hr@10", "n_users"),
}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def summarise(protocol: str, result: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"models": {}}
    for name, r in result["results"].items():
        row = {k: r.get(k) for k in KEYS[protocol] if r.get(k) is not None}
        row["fit_seconds"] = round(float(r.get("fit_seconds", 0.0)), 2)
        params = r.get("params", {})
        row["params"] = {k: v for k, v in params.items() if k not in ("encoder", "cache", "cache_dir")}
        if protocol == "temporal-rolling":
            row["windows_ndcg@10"] = [w["warm"]["ndcg@10"] for w in r["windows"]]
            row["cold"] = {k: r["cold"].get(k) for k in ("ndcg@10", "hr@10", "n_users")}
        out["models"][name] = row
    if protocol == "temporal-rolling":
        out["comparisons"] = {
            g: [c for c in cs if c["a"] in CONTENT or c["b"] in CONTENT]
            for g, cs in result["comparisons"].items()
        }
        out["windows"] = result["windows"]
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", default="ml-100k,ml-latest-small")
    ap.add_argument("--protocols", default="stratified,tfrs,temporal-rolling")
    ap.add_argument("--models", default="pop,recent_pop,itemknn,ease,content,content_userknn")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    import torch

    torch.set_num_threads(2)
    models = [m for m in args.models.split(",") if m]
    for name in [d for d in args.datasets.split(",") if d]:
        ds = load_dataset(DATA.get(name, name))
        for protocol in [p for p in args.protocols.split(",") if p]:
            # recent_pop is the baseline of the time protocols; on the random splits it is pop
            ms = [m for m in models if m != "recent_pop" or protocol == "temporal-rolling"]
            log(f"{ds.name} {protocol}: {', '.join(ms)}")
            load0 = os.getloadavg()[0]
            t0 = time.perf_counter()
            res = run_protocol(ds, protocol, ms, tune=True, seed=42)
            row = summarise(protocol, res)
            row["wall_seconds"] = round(time.perf_counter() - t0, 1)
            row["load_average_1min"] = [round(load0, 1), round(os.getloadavg()[0], 1)]
            body: dict[str, Any] = json.loads(args.out.read_text()) if args.out.is_file() else {}
            body.update(
                {
                    "benchmark": "content_tables",
                    "note": "tune=True: hyperparameters chosen on validation carved from train; seed 42",
                    "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                                "torch": torch.__version__},
                }
            )  # fmt: skip
            body.setdefault(protocol, {})[ds.name] = row
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(to_jsonable(body), indent=2) + "\n")
            for m, r in row["models"].items():
                log(f"  {m}: " + ", ".join(f"{k} {v:.4f}" for k, v in r.items() if isinstance(v, float)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
