"""Benchmark: the quality protocols of BENCHMARKS.md on MovieLens 100K for the classical baselines.

For each protocol (default ``stratified``, ``temporal``, ``tfrs``) it runs `run_protocol` on the bundled
ML-100K with hyperparameters chosen on a validation split carved out of train (``--tune``, the default),
prints the table and writes ``benchmarks/results/evaluate_<protocol>.json`` and ``.html`` (the report).

    python benchmarks/bench_evaluate.py [--protocols stratified,temporal,tfrs]
        [--models pop,itemknn,seqknn,rp3beta,ease,time_ease,als,bpr] [--no-tune] [--seed 42]
        [--dataset ml-100k]
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "2")
os.environ.setdefault("OMP_NUM_THREADS", "2")
os.environ.setdefault("MKL_NUM_THREADS", "2")

from rich.console import Console
from rich.table import Table

from recstack.data.loading import load_dataset
from recstack.evaluation.protocols import run_protocol
from recstack.evaluation.report import write_html, write_json

COLUMNS = (
    "precision@10", "recall@10", "ndcg@10", "map@10", "hr@10", "mrr@10", "coverage@10", "novelty@10",
    "diversity@10", "accuracy@1", "accuracy@10", "accuracy@100", "fit_seconds",
)  # fmt: skip


def table_of(result: dict[str, object], wall: float) -> Table:
    results = result["results"]
    assert isinstance(results, dict)
    t = Table(title=f"{result['dataset']} · {result['protocol']} · tuned={result['tuned']} · {wall:.0f} s")
    t.add_column("model", style="bold")
    for c in COLUMNS:
        t.add_column(c.replace("accuracy", "acc").replace("coverage", "cov"), justify="right")
    t.add_column("params")
    for name, r in results.items():
        cells = ["–" if r.get(c) is None else f"{r[c]:.4f}" for c in COLUMNS]
        params = ", ".join(f"{k}={v}" for k, v in r["params"].items())
        t.add_row(name, *cells, params)
        if "cold" in r:
            c = r["cold"]
            t.add_row(
                f"  cold ({c['n_users']} users)",
                *["–" if c.get(k) is None else f"{c[k]:.4f}" for k in COLUMNS[:-1]],
                "",
                "",
            )
    return t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--protocols", default="stratified,temporal,tfrs")
    ap.add_argument("--models", default="pop,itemknn,seqknn,rp3beta,ease,time_ease,als,bpr")
    ap.add_argument("--no-tune", action="store_true", help="default hyperparameters (no validation search)")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--dataset", default="ml-100k")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = ap.parse_args()

    try:
        import torch

        torch.set_num_threads(2)
    except ImportError:  # pragma: no cover
        pass
    console = Console(width=220)
    out_dir = Path(args.out)
    ds = load_dataset(args.dataset)
    models = [m for m in args.models.split(",") if m]
    for protocol in [p for p in args.protocols.split(",") if p]:
        t0 = time.perf_counter()
        result = run_protocol(ds, protocol, models, tune=not args.no_tune, seed=args.seed)
        wall = time.perf_counter() - t0
        result["benchmark"] = {
            "wall_seconds": wall,
            "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
            "note": "timings measured on a shared, busy 2-core machine; noisy",
        }
        console.print(table_of(result, wall))
        write_json(result, out_dir / f"evaluate_{protocol}.json")
        write_html(result, out_dir / f"evaluate_{protocol}.html")
        console.print(f"wrote {out_dir / f'evaluate_{protocol}.json'} and .html")


if __name__ == "__main__":
    main()
