"""Benchmark: the neural models' quality figures of issue 3 on MovieLens 100K.

Parts (each a protocol of BENCHMARKS.md, peers side by side in the same run, same split):

- ``stratified``: EASE vs two_tower vs the two-stage variants; for the two-stage models also the
  candidate-union Recall@300 on the test split (the ranker's ceiling) and the ranker's validation figures.
- ``tfrs``: two_tower vs MostPopular (top-K categorical accuracy, nothing removed).
- ``temporal``: two-stage (temporal holdout) vs EASE vs recent popularity, warm and cold-start users.
- ``ctr``: AUC / logloss of the four rankers and logistic regression.
- ``tuning``: the two-stage model's own hyperparameters (candidates per source, holdout folds, recall
  sources) chosen on a validation split carved out of ``stratified``'s train part by the same protocol;
  the test figure of the chosen point is the ``stratified`` part's.
- ``ablation``: ``stratified`` test NDCG@10 of two_stage:ncf with groups of ranker features held at 0
  (why the ranker beats EASE: which inputs carry it).

Writes ``benchmarks/results/neural.json`` (parts merged into the existing file).

    python benchmarks/bench_neural.py [--parts stratified,tfrs,temporal,ctr,tuning,ablation]
                                      [--rankers deepfm,ncf]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np
from rich.console import Console
from rich.table import Table

from recstack.data.loading import load_dataset
from recstack.data.splits import split
from recstack.evaluation.protocols import evaluate_retriever
from recstack.models.ranking import two_stage as two_stage_mod
from recstack.models.ranking.ctr import run_ctr
from recstack.models.ranking.two_stage import TwoStage
from recstack.models.registry import create

OUT = Path(__file__).parent / "results" / "neural.json"
KEYS = ("ndcg@10", "precision@10", "recall@10", "map@10", "accuracy@10", "accuracy@100", "fit_seconds")


def _candidate_recall(model: TwoStage, train: Any, test: Any) -> dict[str, float]:
    truth = test.to_csr("binary")
    users = np.flatnonzero(np.diff(truth.indptr) > 0)
    cands = model.candidates(users)
    hits = sum(int(truth[u, c].sum()) for u, c in zip(users, cands, strict=True))
    return {
        "candidate_recall": hits / max(int(truth[users].sum()), 1),
        "candidates_per_user": float(np.mean([len(c) for c in cands])),
    }


def _fit_eval(
    name: str, params: dict[str, Any], sp_: Any, exclude: bool, users: Any = None
) -> tuple[Any, dict]:
    t0 = time.perf_counter()
    model = create(name, **params).fit(sp_.train)
    fit_s = time.perf_counter() - t0
    res = evaluate_retriever(model, sp_.train, sp_.test, [10], exclude, users=users)
    out = {k: res.get(k) for k in KEYS if k in res}
    out["fit_seconds"] = fit_s
    out["params"] = model.params()
    if isinstance(model, TwoStage):
        out["fit_result"] = model.fit_result
    return model, out


def stratified(ds: Any, rankers: list[str]) -> dict[str, Any]:
    sp_ = split(ds, "stratified", seed=42)
    res: dict[str, Any] = {}
    for name in ["ease", "two_tower"] + [f"two_stage:{r}" for r in rankers]:
        model, out = _fit_eval(name, {}, sp_, True)
        if isinstance(model, TwoStage):
            out.update(_candidate_recall(model, sp_.train, sp_.test))
        res[name] = out
        Console(stderr=True).print(f"stratified {name}: {out}")
    return res


def tfrs(ds: Any) -> dict[str, Any]:
    sp_ = split(ds, "tfrs", seed=42)
    return {name: _fit_eval(name, {}, sp_, False)[1] for name in ("pop", "two_tower")}


def temporal(ds: Any, rankers: list[str]) -> dict[str, Any]:
    sp_ = split(ds, "temporal", seed=42)
    warm, cold = sp_.warm_test_users, sp_.cold_users
    res: dict[str, Any] = {}
    specs: list[tuple[str, str, dict[str, Any]]] = [
        ("recent_pop", "pop", {"window_days": 30.0}),
        ("ease", "ease", {}),
    ] + [
        (f"two_stage:{r}", f"two_stage:{r}", {"holdout": "temporal", "holdout_fraction": 0.1})
        for r in rankers[:1]
    ]
    for label, name, params in specs:
        model, out = _fit_eval(name, params, sp_, True, users=warm)
        c = evaluate_retriever(model, sp_.train, sp_.test, [10], True, users=cold)
        out["cold"] = {k: c.get(k) for k in ("ndcg@10", "recall@10", "hr@10", "n_users")}
        res[label] = out
    return res


_SOURCE_FITS: dict[tuple[str, str], Any] = {}


def _share_source_fits() -> None:
    """The recall sources are seeded and deterministic given (data, sources config): the runs of one
    part fit them once per holdout fold and share them (the ranker is what the runs vary)."""
    fit = two_stage_mod._fit_sources
    if getattr(fit, "shared", False):
        return

    def shared(cfg: Any, dataset: Any) -> Any:
        key = (dataset.fingerprint(), json.dumps([cfg.sources, cfg.source_params], sort_keys=True))
        if key not in _SOURCE_FITS:
            _SOURCE_FITS[key] = fit(cfg, dataset)
        return _SOURCE_FITS[key]

    shared.shared = True  # type: ignore[attr-defined]
    two_stage_mod._fit_sources = shared


FIVE = ["two_tower", "ease", "als", "itemknn", "pop"]
SIX = [*FIVE, "window_pop"]

#: (label, two_stage params) of the validation grid; the best point is TwoStageConfig's default
TUNING_GRID: list[tuple[str, dict[str, Any]]] = [
    ("5 sources, per_source 100, 2 folds", {"sources": FIVE, "per_source": 100, "holdout_folds": 2}),
    ("5 sources, per_source 150, 2 folds", {"sources": FIVE, "per_source": 150, "holdout_folds": 2}),
    ("5 sources, per_source 100, 3 folds", {"sources": FIVE, "per_source": 100, "holdout_folds": 3}),
    ("5 sources, per_source 150, 3 folds", {"sources": FIVE, "per_source": 150, "holdout_folds": 3}),
    ("+ window_pop, per_source 100, 2 folds", {"sources": SIX, "per_source": 100, "holdout_folds": 2}),
    ("+ window_pop, per_source 150, 3 folds", {"sources": SIX, "per_source": 150, "holdout_folds": 3}),
]

#: (label, dense features held at 0) of the ablation part
ABLATIONS: list[tuple[str, list[str]]] = [
    ("all features", []),
    ("- time context", ["local_popularity", "item_age"]),
    ("- item/user statistics", ["popularity", "item_mean_rating", "activity", "user_mean_rating"]),
    ("- genres and affinity", ["genre_", "affinity"]),
    ("- two_tower scores", ["two_tower_"]),
    ("- ease scores", ["ease_"]),
    ("- window_pop scores", ["window_pop_"]),
    ("- every source score (flags kept)", [f"{src}_{x}" for src in SIX for x in ("z", "rank")]),
]


def tuning(ds: Any) -> dict[str, Any]:
    _share_source_fits()
    val = split(ds, "stratified", seed=42).validation()
    res: dict[str, Any] = {}
    for label, params in TUNING_GRID:
        _, out = _fit_eval("two_stage:ncf", params, val, True)
        out["grid_params"] = params
        res[label] = out
        Console(stderr=True).print(f"tuning {label}: ndcg@10 {out['ndcg@10']:.4f}")
    best = max(res, key=lambda k: res[k]["ndcg@10"])
    res[best]["chosen"] = True
    return res


def ablation(ds: Any) -> dict[str, Any]:
    _share_source_fits()
    sp_ = split(ds, "stratified", seed=42)
    res: dict[str, Any] = {}
    for label, cut in ABLATIONS:
        _, out = _fit_eval("two_stage:ncf", {"ablate": cut}, sp_, True)
        out["ablate"] = cut
        res[label] = out
        Console(stderr=True).print(f"ablation {label}: ndcg@10 {out['ndcg@10']:.4f}")
    return res


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--parts", default="stratified,tfrs,temporal,ctr")
    ap.add_argument("--rankers", default="deepfm,ncf,dnn,widedeep")
    ap.add_argument("--out", default=str(OUT), help="JSON file (parts are merged into it)")
    args = ap.parse_args()
    out_path = Path(args.out)
    ds = load_dataset("ml-100k")
    rankers = [r for r in args.rankers.split(",") if r]
    result: dict[str, Any] = json.loads(out_path.read_text()) if out_path.is_file() else {}
    for part in args.parts.split(","):
        t0 = time.perf_counter()
        if part == "stratified":
            body = stratified(ds, rankers)
        elif part == "tfrs":
            body = tfrs(ds)
        elif part == "temporal":
            body = temporal(ds, rankers)
        elif part == "tuning":
            body = tuning(ds)
        elif part == "ablation":
            body = ablation(ds)
        elif part == "ctr":
            body = run_ctr(ds, [f"two_stage:{r}" for r in rankers], None)["results"]
        else:
            raise SystemExit(f"unknown part {part!r}")
        result[part] = {"results": body, "wall_seconds": time.perf_counter() - t0}
        out_path.parent.mkdir(parents=True, exist_ok=True)
        out_path.write_text(json.dumps(result, indent=2, default=str))
        t = Table(title=f"ml-100k · {part}")
        t.add_column("model", style="bold")
        cols = ("auc", "logloss", "fit_seconds") if part == "ctr" else (*KEYS, "candidate_recall")
        for c in cols:
            t.add_column(c, justify="right")
        for name, r in body.items():
            t.add_row(name, *("–" if r.get(c) is None else f"{r[c]:.4f}" for c in cols))
        Console().print(t)
        for name, r in body.items():
            if "cold" in r:
                Console().print(f"cold-start users {name}: {r['cold']}")
    print(f"wrote {out_path}")


if __name__ == "__main__":
    main()
