"""Benchmark: ranking 300 candidates with ONNX Runtime vs PyTorch eager, per ranker, single thread.

Each ranker is trained (as a two-stage model trains it: id features off) for one epoch on random rows
of the default two-stage layout (7 categorical fields, 47 dense features) — speed does not depend on
the weights. Reports ms per request (p50 / p99)
of the exported whole-row graph (``ranker.onnx``), of the factorised graph serving runs (`FactorisedNet`:
the rows' pair columns, item index and user columns as inputs) and of PyTorch eager, and the ratio
eager / served. Also ensembles (`RankerEnsemble`, TwoStageConfig's ``ranker_seeds`` /
``ranker_mix``: one ONNX graph of k nets) to put their serving cost next to one net's. Writes
``benchmarks/results/ranker.json``.

    python benchmarks/bench_ranker.py [--candidates 300] [--requests 300]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from rich.table import Table

from recstack._progress import console
from recstack.models.ranking._base import NeuralRanker, RankingData
from recstack.models.ranking.ensemble import RankerEnsemble
from recstack.models.ranking.factorised import export_factorised
from recstack.models.ranking.two_stage import TwoStageConfig, ranker_class
from recstack.serving._ranker import factorised_feed

OUT = Path(__file__).parent / "results" / "ranker.json"
#: (label, member architectures) of the ensembles measured after the single nets
ENSEMBLES: list[tuple[str, list[str]]] = [
    ("ensemble ncf x 3", ["ncf"] * 3),
    ("ensemble ncf x 5", ["ncf"] * 5),
    ("ensemble ncf + dnn + widedeep", ["ncf", "dnn", "widedeep"]),
    ("ensemble (ncf + dnn + widedeep) x 2", ["ncf", "dnn", "widedeep"] * 2),
]
CARDS = [944, 1683, 8, 3, 22, 20, 17]
#: what each column depends on, as `CandidateFeaturizer.column_scopes` gives for the default model
#: (7 sources, time features, 19 genres)
DENSE_SCOPES = (
    ["pair"] * 21 + ["pair", "item", "item", "user", "user", "pair", "pair", "pair"] + ["item"] * 19
)
CAT_SCOPES = ["user", "item", "user", "user", "user", "user", "item"]
N_DENSE = len(DENSE_SCOPES)


def _rows(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    cat = np.stack([rng.integers(0, c, size=n) for c in CARDS], axis=1).astype(np.int64)
    return cat, rng.normal(size=(n, N_DENSE)).astype(np.float32)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--candidates", type=int, default=300)
    ap.add_argument("--requests", type=int, default=300)
    args = ap.parse_args()
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    cat, dense = _rows(64 * 20, rng)
    data = RankingData(
        cat.reshape(64, 20, -1),
        dense.reshape(64, 20, -1),
        np.eye(20, dtype=np.float32)[rng.integers(0, 20, 64)],
        np.ones((64, 20), bool),
        CARDS,
    )
    reqs = [_rows(args.candidates, rng) for _ in range(args.requests)]
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    results = {}
    pc, ic, uc = ([j for j, s in enumerate(DENSE_SCOPES) if s == k] for k in ("pair", "item", "user"))
    cic, cuc = ([j for j, s in enumerate(CAT_SCOPES) if s == k] for k in ("item", "user"))
    with tempfile.TemporaryDirectory() as tmp:
        # every net as a two-stage model trains it: TwoStageConfig's ranker_params and its first
        # ranker_grid point (id features off); ncf 256-128: the wider net validation scored best
        # (hidden 256-128, dropout 0.3), whose cost kept it out of the default
        default = TwoStageConfig().ranker_params | TwoStageConfig().ranker_grid[0]
        rankers: list[tuple[str, NeuralRanker | RankerEnsemble]] = [
            (name, ranker_class(name)(epochs=1, num_threads=1, **default).fit(None, data))
            for name in ("ncf", "widedeep", "deepfm", "dnn")
        ]
        wide = default | {"hidden": (256, 128), "dropout": 0.3}
        rankers.append(("ncf 256-128", ranker_class("ncf")(epochs=1, num_threads=1, **wide).fit(None, data)))
        rankers += [
            (
                label,
                RankerEnsemble(
                    [ranker_class(a)(epochs=1, num_threads=1, seed=i, **default) for i, a in enumerate(archs)]
                ).fit(None, data),
            )
            for label, archs in ENSEMBLES
        ]
        for name, r in rankers:
            sess = ort.InferenceSession(
                str(r.export_onnx(Path(tmp) / f"{name}.onnx")), so, providers=["CPUExecutionProvider"]
            )
            net = r.net() if isinstance(r, RankerEnsemble) else r.net
            assert net is not None
            item_dense = rng.normal(size=(CARDS[1] - 1, len(ic))).astype(np.float32)
            item_cat = np.stack([rng.integers(0, CARDS[f], CARDS[1] - 1) for f in cic], axis=1)
            item_cat[:, 0] = np.arange(1, CARDS[1])
            path = export_factorised(
                net, (DENSE_SCOPES, CAT_SCOPES), item_dense, item_cat, Path(tmp) / "f.onnx"
            )
            served = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
            parts = [
                factorised_feed(d[:, pc], rng.integers(0, CARDS[1] - 1, len(d)), c[0, cuc], d[0, uc])
                for c, d in reqs
            ]
            times: dict[str, list[float]] = {"ort": [], "served": [], "torch": []}
            for (c, d), f in zip(reqs[:10], parts, strict=False):  # warm-up
                sess.run(["score"], {"cat": c, "dense": d})
                served.run(["score"], f)
            for (c, d), f in zip(reqs, parts, strict=True):
                t0 = time.perf_counter()
                sess.run(["score"], {"cat": c, "dense": d})
                t1 = time.perf_counter()
                served.run(["score"], f)
                t2 = time.perf_counter()
                with torch.inference_mode():
                    net(torch.from_numpy(c), torch.from_numpy(d))
                t3 = time.perf_counter()
                times["ort"].append((t1 - t0) * 1e3)
                times["served"].append((t2 - t1) * 1e3)
                times["torch"].append((t3 - t2) * 1e3)
            row = {
                f"{k}_{q}_ms": float(np.percentile(v, p))
                for k, v in times.items()
                for q, p in (("p50", 50), ("p99", 99))
            }
            row["ratio_torch_over_ort_p50"] = row["torch_p50_ms"] / row["ort_p50_ms"]
            row["ratio_torch_over_served_p50"] = row["torch_p50_ms"] / row["served_p50_ms"]
            row["ort_p50_over_ncf"] = row["ort_p50_ms"] / results["ncf"]["ort_p50_ms"] if results else 1.0
            results[name] = row
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(
        json.dumps(
            {"candidates": args.candidates, "requests": args.requests, "threads": 1, "results": results},
            indent=2,
        )
    )
    t = Table(title=f"ranking {args.candidates} candidates, 1 thread")
    cols = ("ORT p50 ms", "ORT p99 ms", "served p50 ms", "served p99 ms", "torch p50 ms", "torch p99 ms")
    for c in ("ranker", *cols, "torch/ORT", "torch/served", "ORT/ncf"):
        t.add_column(c, justify="right")
    keys = ("ort_p50_ms", "ort_p99_ms", "served_p50_ms", "served_p99_ms", "torch_p50_ms", "torch_p99_ms")
    for name, r in results.items():
        t.add_row(
            name,
            *(f"{r[k]:.3f}" for k in keys),
            f"{r['ratio_torch_over_ort_p50']:.2f}x",
            f"{r['ratio_torch_over_served_p50']:.2f}x",
            f"{r['ort_p50_over_ncf']:.2f}x",
        )
    console(stderr=False).print(t)
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
