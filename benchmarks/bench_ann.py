"""ANN benchmark: faiss HNSW vs exact (numpy) vs milvus-lite on clustered 64-d vectors.

Protocol: ``n`` vectors drawn from a Gaussian mixture (256 centres, unit-normal centres, per-point
noise 0.35, then L2-normalised, like two-tower embeddings), metric cosine; ``--queries`` held-out
queries from the same mixture. Ground truth = the exact index. recall@10 = |ANN top-10 ∩ exact top-10|
/ 10 averaged over queries. Queries/s are single-thread (``faiss.omp_set_num_threads(1)`` and BLAS
limited to 1 thread), one batch of all queries. HNSW is built with ``--build-threads`` threads and
swept over efSearch; the summary picks the smallest efSearch with recall@10 >= 0.95.

    python benchmarks/bench_ann.py --sizes 100000 1000000 [--no-milvus-1m]

Writes benchmarks/results/ann.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import faiss
import numpy as np
from rich.console import Console
from rich.table import Table
from threadpoolctl import threadpool_limits

from recstack.index import create_index

DIM = 64
K = 10
OUT = Path(__file__).parent / "results" / "ann.json"


def mixture(n: int, dim: int, seed: int, centres: int = 256) -> np.ndarray:
    rng = np.random.default_rng(seed)
    c = np.random.default_rng(12345).normal(size=(centres, dim)).astype(np.float32)
    x = np.empty((n, dim), dtype=np.float32)
    step = 200_000
    for lo in range(0, n, step):
        hi = min(n, lo + step)
        x[lo:hi] = c[rng.integers(0, centres, size=hi - lo)] + 0.35 * rng.normal(size=(hi - lo, dim))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def recall(got: np.ndarray, want: np.ndarray) -> float:
    hits = sum(len(set(a) & set(b)) for a, b in zip(got.tolist(), want.tolist(), strict=True))
    return hits / want.size


def timed_search(index: Any, queries: np.ndarray, repeats: int = 1) -> tuple[np.ndarray, float]:
    best = float("inf")
    ids = np.empty(0)
    for _ in range(repeats):
        t = time.perf_counter()
        _, ids = index.search(queries, K)
        best = min(best, time.perf_counter() - t)
    return ids, len(queries) / best


def run_size(n: int, args: argparse.Namespace, console: Console) -> dict[str, Any]:
    console.print(f"[bold]n = {n:,} x {DIM}[/bold]")
    data = mixture(n + args.queries, DIM, seed=n)
    vecs, queries = data[:n], data[n:]
    ids = np.arange(n, dtype=np.int64)
    out: dict[str, Any] = {"n": n, "dim": DIM, "queries": args.queries, "metric": "cosine"}

    # exact (ground truth)
    exact = create_index("exact", DIM, "cosine")
    t = time.perf_counter()
    exact.add(ids, vecs)
    out["exact_build_s"] = time.perf_counter() - t
    with threadpool_limits(1):
        truth, exact_qps = timed_search(exact, queries)
    out["exact_qps"] = exact_qps
    console.print(f"  exact: {exact_qps:,.0f} q/s")
    del exact

    # faiss HNSW
    faiss.omp_set_num_threads(args.build_threads)
    hnsw = create_index("faiss", DIM, "cosine", m=args.m, ef_construction=args.ef_construction)
    t = time.perf_counter()
    hnsw.add(ids, vecs)
    out["hnsw_build_s"] = time.perf_counter() - t
    out["hnsw_m"], out["hnsw_ef_construction"] = args.m, args.ef_construction
    out["hnsw_build_threads"] = args.build_threads
    console.print(f"  hnsw build: {out['hnsw_build_s']:.1f} s ({args.build_threads} threads)")
    faiss.omp_set_num_threads(1)
    sweep = []
    for ef in args.ef:
        hnsw.set_search_params(ef_search=ef)  # type: ignore[attr-defined]
        got, qps = timed_search(hnsw, queries, repeats=2)
        r = recall(got, truth)
        sweep.append({"ef_search": ef, "recall@10": r, "qps": qps, "speedup_vs_exact": qps / exact_qps})
        console.print(f"  hnsw ef={ef}: recall@10 {r:.4f}, {qps:,.0f} q/s ({qps / exact_qps:.1f}x exact)")
    out["hnsw"] = sweep
    ok = [s for s in sweep if s["recall@10"] >= 0.95]
    out["hnsw_chosen"] = min(ok, key=lambda s: s["ef_search"]) if ok else None
    del hnsw

    # milvus-lite
    if n <= args.milvus_max:
        with tempfile.TemporaryDirectory(prefix="bench-milvus-") as tmp:
            mv = create_index(
                "milvus",
                DIM,
                "cosine",
                uri=str(Path(tmp) / "bench.db"),
                index_type=args.milvus_index,
                index_params={"M": args.m, "efConstruction": args.ef_construction}
                if args.milvus_index == "HNSW"
                else {},
                search_params={"ef": args.milvus_ef} if args.milvus_index == "HNSW" else {},
                insert_batch=10_000,
                search_batch=1000,
            )
            t = time.perf_counter()
            mv.add(ids, vecs)
            out["milvus_insert_s"] = time.perf_counter() - t
            mv.search(queries[:10], K)  # first search waits for the index / load
            out["milvus_ready_s"] = time.perf_counter() - t
            mq = queries[: args.milvus_queries]
            got, qps = timed_search(mv, mq)
            out["milvus"] = {
                "index_type": args.milvus_index,
                "ef": args.milvus_ef,
                "queries": len(mq),
                "recall@10": recall(got, truth[: len(mq)]),
                "qps": qps,
                "note": "milvus-lite: separate server process on localhost (gRPC); q/s include the RPC",
            }
            console.print(
                f"  milvus-lite {args.milvus_index}: insert {out['milvus_insert_s']:.1f} s, "
                f"recall@10 {out['milvus']['recall@10']:.4f}, {qps:,.0f} q/s"
            )
            mv.close()  # type: ignore[attr-defined]
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    p.add_argument("--queries", type=int, default=1000)
    p.add_argument("--m", type=int, default=32)
    p.add_argument("--ef-construction", type=int, default=100)
    p.add_argument("--ef", type=int, nargs="+", default=[16, 32, 64, 96, 128, 192, 256])
    p.add_argument("--build-threads", type=int, default=2)
    p.add_argument("--milvus-max", type=int, default=1_000_000, help="largest n run on milvus-lite")
    p.add_argument("--milvus-index", default="HNSW")
    p.add_argument("--milvus-ef", type=int, default=128)
    p.add_argument("--milvus-queries", type=int, default=300, help="queries sent to milvus-lite")
    args = p.parse_args()
    console = Console(width=150)
    results = [run_size(n, args, console) for n in args.sizes]

    table = Table(title=f"ANN, {DIM}-d clustered, cosine, recall@10 vs exact, single-thread queries/s")
    for col in ("n", "index", "params", "build s", "recall@10", "queries/s", "x exact"):
        table.add_column(col, justify="right")
    for r in results:
        table.add_row(
            f"{r['n']:,}", "exact", "", f"{r['exact_build_s']:.1f}", "1.0000", f"{r['exact_qps']:,.0f}", "1.0"
        )
        for s in r["hnsw"]:
            mark = " *" if r["hnsw_chosen"] and s["ef_search"] == r["hnsw_chosen"]["ef_search"] else ""
            table.add_row(
                "",
                "faiss HNSW" + mark,
                f"M={r['hnsw_m']} efC={r['hnsw_ef_construction']} ef={s['ef_search']}",
                f"{r['hnsw_build_s']:.1f}",
                f"{s['recall@10']:.4f}",
                f"{s['qps']:,.0f}",
                f"{s['speedup_vs_exact']:.1f}",
            )
        if "milvus" in r:
            m = r["milvus"]
            table.add_row(
                "",
                "milvus-lite",
                f"{m['index_type']} ef={m['ef']}",
                f"{r['milvus_ready_s']:.1f}",
                f"{m['recall@10']:.4f}",
                f"{m['qps']:,.0f}",
                f"{m['qps'] / r['exact_qps']:.1f}",
            )
    console.print(table)  # this run only; the JSON merges runs by n
    console.print("* smallest efSearch with recall@10 >= 0.95")
    OUT.parent.mkdir(parents=True, exist_ok=True)
    previous = json.loads(OUT.read_text()).get("results", []) if OUT.is_file() else []
    kept = [r for r in previous if r.get("n") not in {x["n"] for x in results}]
    results = sorted(kept + results, key=lambda r: int(r["n"]))
    payload = {
        "benchmark": "ann",
        "protocol": __doc__,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "faiss": faiss.__version__},
        "note": "measured on a shared 2-core machine; noisy",
        "results": results,
    }
    OUT.write_text(json.dumps(payload, indent=2))
    console.print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
