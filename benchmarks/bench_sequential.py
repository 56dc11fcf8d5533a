"""Benchmark: the sequential retriever (SASRec) on ``leave-last-out``, and serving with it as a source.

1. Quality: `run_protocol` with the ``leave-last-out`` protocol (each user's last interaction by time is
   the test item; full ranking over every item, the user's training items removed, no sampled
   negatives) on ML-100K read from ``--data`` (default /work/shared/data/ml-100k): HR@10 and NDCG@10 of
   ``sasrec`` next to EASE, item-kNN, recent_pop and the two-stage model, with each model's fit time
   on the 2-core machine (BLAS 2 threads; SASRec's default is 1 torch thread, see `SASRecConfig`).
   Hyperparameters are the defaults (chosen on validation, never on this test split); SASRec picks its
   epoch on the last training item of 10% of the users (validation carved from the training data).
   The machine's load average is recorded: on a shared machine every wall time is longer.
2. Serving: the in-process `Pipeline` over a release fitted on all the data (pop, itemknn, ease, sasrec),
   requests of known users cycling over the users (k=10), recall merged score (no ranker): latency
   p50 / p99 with the default history sources alone and with the SASRec source (ONNX Runtime, the
   user's latest 50 items from the history store, most recent first) added.

3. (``--feature``) SASRec as a ranker feature: ``two_stage:ncf`` with ``sasrec`` added to its recall
   sources (its candidate scores become ranker inputs), on the same split; added to the JSON as the
   row ``two_stage:ncf+sasrec`` (``--feature-only`` adds it to an existing JSON without the rest).

Writes ``benchmarks/results/sequential.json``.

    python benchmarks/bench_sequential.py [--models sasrec,ease,itemknn,recent_pop,two_stage:ncf]
        [--data /work/shared/data/ml-100k] [--requests 2000] [--skip-serving] [--feature [--feature-only]]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OPENBLAS_NUM_THREADS", "2")
os.environ.setdefault("OMP_NUM_THREADS", "2")
os.environ.setdefault("MKL_NUM_THREADS", "2")

import numpy as np
from rich.console import Console
from rich.table import Table

from recstack.data.loading import load_dataset
from recstack.evaluation.protocols import run_protocol

HERE = Path(__file__).parent


def quality(ds: Any, models: list[str], seed: int) -> dict[str, Any]:
    res = run_protocol(ds, "leave-last-out", models, tune=False, seed=seed, ks=(10,))
    out: dict[str, Any] = {}
    for name, r in res["results"].items():
        out[name] = {
            "hr@10": r["hr@10"],
            "ndcg@10": r["ndcg@10"],
            "n_users": r["n_users"],
            "fit_seconds": r["fit_seconds"],
            "params": r["params"],
        }
    return out


def feature_row(ds: Any, seed: int) -> dict[str, Any]:
    """``two_stage:ncf`` with SASRec among its recall sources (so among the ranker's inputs)."""
    from recstack.data.splits import split
    from recstack.evaluation.protocols import evaluate_retriever
    from recstack.models.ranking.two_stage import TwoStageConfig
    from recstack.models.registry import create

    s = split(ds, "leave-last-out", seed=seed)
    sources = (*TwoStageConfig().sources, "sasrec")
    model = create("two_stage:ncf", sources=sources)
    t0 = time.perf_counter()
    model.fit(s.train)
    fit = time.perf_counter() - t0
    r = evaluate_retriever(model, s.train, s.test, [10], True, accuracy_ks=())
    return {"hr@10": r["hr@10"], "ndcg@10": r["ndcg@10"], "n_users": r["n_users"], "fit_seconds": fit,
            "params": {"sources": list(sources)}}  # fmt: skip


def serving(ds: Any, n_requests: int, seed: int) -> dict[str, Any]:
    from recstack.models.registry import create
    from recstack.serving._release import MemoryRelease
    from recstack.serving.pipeline import Pipeline, PipelineConfig, RecRequest, SourceConfig

    t0, c0 = time.perf_counter(), time.process_time()
    sasrec = create("sasrec").fit(ds)
    fit_all = {
        "wall_seconds": time.perf_counter() - t0,
        # CPU seconds of the process (all its threads): the fit's cost without other load's waits
        "cpu_seconds": time.process_time() - c0,
        **sasrec.fit_result,  # type: ignore[attr-defined]
    }
    retr = {name: create(name).fit(ds) for name in ("itemknn", "ease")}
    rel = MemoryRelease(id="bench-seq", dataset=ds, retrievers={**retr, "sasrec": sasrec})
    base = (
        SourceConfig(name="itemknn", kind="history", quota=200, recent=50),
        SourceConfig(name="ease", kind="history", quota=200, recent=50),
        SourceConfig(name="popular", kind="popular", quota=100),
    )
    seq = SourceConfig(name="sasrec", kind="history", quota=200, recent=50)
    users = ds.user_vocab.ids.to_list()
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(users))
    out: dict[str, Any] = {"sasrec_fit_all_data": fit_all}
    for label, sources in (("without_sasrec", base), ("with_sasrec", (*base, seq))):
        # the recall memo off: every request computes its sources (a user's first request)
        pipe = Pipeline(rel, PipelineConfig(sources=sources, recall_memo_mb=0.0, rank={"ranker": "recall"}))
        for i in range(50):  # warm-up
            pipe.recommend(RecRequest(user_id=users[order[i % len(users)]], k=10))
        lat = np.empty(n_requests)
        for i in range(n_requests):
            req = RecRequest(user_id=users[order[i % len(users)]], k=10)
            t = time.perf_counter()
            pipe.recommend(req)
            lat[i] = time.perf_counter() - t
        out[label] = {
            "requests": n_requests,
            "p50_ms": float(np.percentile(lat, 50) * 1e3),
            "p90_ms": float(np.percentile(lat, 90) * 1e3),
            "p99_ms": float(np.percentile(lat, 99) * 1e3),
            "mean_ms": float(lat.mean() * 1e3),
        }
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="sasrec,ease,itemknn,recent_pop,two_stage:ncf")
    ap.add_argument("--data", default="/work/shared/data/ml-100k")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--skip-serving", action="store_true")
    ap.add_argument("--feature", action="store_true", help="also two_stage:ncf with sasrec as a source")
    ap.add_argument("--feature-only", action="store_true", help="add only that row to an existing --out")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "sequential.json")
    a = ap.parse_args()

    import torch

    torch.set_num_threads(2)
    con = Console(width=160)
    ds = load_dataset(a.data)
    if a.feature_only:
        prev = json.loads(a.out.read_text())
        row = feature_row(ds, a.seed)
        prev["quality"]["two_stage:ncf+sasrec"] = {**row, "load_avg": os.getloadavg()}
        a.out.write_text(json.dumps(prev, indent=2) + "\n")
        con.print(f"two_stage:ncf+sasrec: HR@10 {row['hr@10']:.4f} NDCG@10 {row['ndcg@10']:.4f}")
        return
    load0 = os.getloadavg()
    t0 = time.perf_counter()
    q = quality(ds, [m for m in a.models.split(",") if m], a.seed)
    if a.feature:
        q["two_stage:ncf+sasrec"] = feature_row(ds, a.seed)
    out: dict[str, Any] = {
        "benchmark": "sequential",
        "dataset": ds.name,
        "protocol": "leave-last-out (full ranking over all items, training items removed)",
        "seed": a.seed,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "load_start": load0},
        "quality": q,
    }
    t = Table(title=f"{ds.name} · leave-last-out · full ranking · {time.perf_counter() - t0:.0f} s")
    for col in ("model", "HR@10", "NDCG@10", "users", "fit s"):
        t.add_column(col, justify="left" if col == "model" else "right")
    for name, r in q.items():
        cells = (f"{r['hr@10']:.4f}", f"{r['ndcg@10']:.4f}", str(r["n_users"]), f"{r['fit_seconds']:.1f}")
        t.add_row(name, *cells)
    con.print(t)
    if not a.skip_serving:
        s = serving(ds, a.requests, a.seed)
        out["serving"] = s
        st = Table(title="in-process pipeline, known users, k=10, recall memo off")
        for col in ("sources", "p50 ms", "p90 ms", "p99 ms"):
            st.add_column(col, justify="left" if col == "sources" else "right")
        for label in ("without_sasrec", "with_sasrec"):
            r = s[label]
            st.add_row(label, f"{r['p50_ms']:.2f}", f"{r['p90_ms']:.2f}", f"{r['p99_ms']:.2f}")
        con.print(st)
    out["machine"]["load_end"] = os.getloadavg()
    out["wall_seconds"] = time.perf_counter() - t0
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(out, indent=2) + "\n")
    con.print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
