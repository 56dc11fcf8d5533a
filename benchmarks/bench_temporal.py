"""Benchmark: quality forward in time (``temporal-rolling``, BENCHMARKS.md) of the served default against
the recent-popularity baseline, and the validation that chose the default's time-aware settings.

Parts (``--parts``, each merged into ``benchmarks/results/temporal.json`` as soon as it is done):

- ``validate``: model choice WITHOUT the test windows. The data before the protocol's first test window
  (the training period of every fold) is cut again the same way: ``--val-windows`` rolling windows of
  5% of it; every configuration of `CONFIGS` (``--configs``) is fitted on each inner fold and scored on
  its window (warm users); mean NDCG@10 over the inner windows and the paired bootstrap CI against
  recent_pop. The best configuration is what `TwoStageConfig` serves.
- ``test``: the protocol itself on each dataset (``--datasets``): ``--windows`` windows of 5%;
  recent_pop, trending and the served default (``two_stage:ncf``) fitted on everything before each
  window; warm and cold users apart; per window, the mean, the paired bootstrap 95% CI of the
  difference to recent_pop; the default's candidate recall on the test windows (the ranker's
  ceiling) and the training time per model.
- ``stratified``: the default's NDCG@10 on ``stratified`` (ML-100K; a regression check, 0.5016 before).
- ``cold``: the cold users of the test windows: the default's cold-start order (chosen inside each
  window's training data, as `TwoStage.fit` does) against pop, recent_pop and trending.

    nice -n 10 python benchmarks/bench_temporal.py [--parts validate,test,stratified]
        [--datasets /work/shared/data/ml-100k,/work/shared/data/ml-latest-small] [--windows 5]
        [--configs default,time] [--val-windows 2]
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

import numpy as np

from recstack.data.loading import load_dataset
from recstack.data.splits import rolling_splits, split
from recstack.evaluation.protocols import compare_models, evaluate_retriever, mean_over_windows
from recstack.evaluation.report import to_jsonable
from recstack.models.ranking.two_stage import TwoStage
from recstack.models.registry import create

OUT = Path(__file__).parent / "results" / "temporal.json"
DEFAULT = "two_stage:ncf"
#: two-stage configurations compared on temporal validation (params over `TwoStageConfig`'s defaults)
_OLD_SOURCES = ("two_tower", "time_ease", "als", "seqknn", "pop", "window_pop", "rp3beta")
_TIME_SOURCES = (
    "two_tower",
    "time_ease",
    "als",
    "seqknn",
    "trending",
    "genre_trending",
    "window_pop",
    "rp3beta",
)
_FAST_SOURCES = tuple(s for s in _TIME_SOURCES if s != "two_tower")
_DEFAULT_SOURCES = TwoStage.Config().sources
CONFIGS: dict[str, dict[str, Any]] = {
    # the default before issue 19: random holdouts, all-time popularity as a source and cold order
    "before": {"sources": _OLD_SOURCES, "holdout": "random"},
    # trending (decayed) + trending in the user's genres as recall sources and ranker features
    "time_sources": {"sources": _TIME_SOURCES, "holdout": "random"},
    # + ranker examples drawn forward in time: the latest 25% of the training period labels the lists
    "time": {"sources": _TIME_SOURCES, "holdout": "temporal"},
    # random holdouts with the time-aware sources, no two-tower
    "time_sources_fast": {
        "sources": tuple(s for s in _TIME_SOURCES if s != "two_tower"),
        "holdout": "random",
    },
    # each user's latest 25% labels their list (one fold), no two-tower
    "user_fast": {
        "sources": tuple(s for s in _TIME_SOURCES if s != "two_tower"),
        "holdout": "user_latest",
        "holdout_folds": 1,
    },
    # one random fold and one forward in time, no two-tower
    "mixed_fast": {"sources": tuple(s for s in _TIME_SOURCES if s != "two_tower"), "holdout": "mixed"},
    # the same without the two-tower source (two thirds of the two-stage fit time)
    "time_fast": {"sources": tuple(s for s in _TIME_SOURCES if s != "two_tower"), "holdout": "temporal"},
    # the served default (whatever TwoStageConfig holds now)
    "default": {},
    # the default without the two trending sources (diagnosis of the stratified collapse)
    "no_trend": {"sources": tuple(s for s in _FAST_SOURCES if s not in ("trending", "genre_trending"))},
    # issue 21: the ranker's text features (`TwoStageConfig.text_features`), the content retrievers as
    # recall sources (and ranker features), both
    "text": {"text_features": True},
    "content_src": {"sources": (*_DEFAULT_SOURCES, "content")},
    "content_userknn_src": {"sources": (*_DEFAULT_SOURCES, "content_userknn")},
    "content_both_src": {"sources": (*_DEFAULT_SOURCES, "content", "content_userknn")},
    "text_content_src": {"text_features": True, "sources": (*_DEFAULT_SOURCES, "content", "content_userknn")},
}
BASELINES = ("recent_pop", "trending")
#: single retrievers compared on validation next to the configurations (``--retrievers``): label ->
#: (registry name, params); issue 21: the two-tower with and without the item text in its item tower
_TT = TwoStage.Config().source_params["two_tower"]
RETRIEVERS: dict[str, tuple[str, dict[str, Any]]] = {
    # the two-tower as the two-stage model fits it inside its recall stage (cheaper: 6 epochs, no
    # early-stopping split), with and without the text input of its item tower
    "two_tower": ("two_tower", _TT),
    "two_tower_text": ("two_tower", {**_TT, "text": True}),
    "content": ("content", {"export_onnx": False}),
    "content_userknn": ("content_userknn", {}),
}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _candidate_recall(model: TwoStage, train: Any, test: Any, users: Any) -> float:
    truth = test.to_csr("binary")
    cands = model.candidates(users)
    hits = sum(int(truth[u, c].sum()) for u, c in zip(users, cands, strict=True))
    return hits / max(int(truth[users].sum()), 1)


def rolling_eval(folds: list[Any], models: dict[str, tuple[str, dict[str, Any]]]) -> dict[str, Any]:
    """Each model (label -> (registry name, params)) fitted on each fold's train, scored on its window."""
    per: dict[str, dict[str, list[Any]]] = {
        m: {"warm": [], "cold": [], "wu": [], "cu": [], "fit": [], "recall": [], "ranker_val": []}
        for m in models
    }
    for w, fold in enumerate(folds):
        for label, (name, params) in models.items():
            t0 = time.perf_counter()
            model = create(name, **params).fit(fold.train)
            secs = time.perf_counter() - t0
            per[label]["fit"].append(secs)
            for group, users in (("warm", fold.warm_test_users), ("cold", fold.cold_users)):
                res = evaluate_retriever(
                    model, fold.train, fold.test, [10], True, users=users, per_user=True, accuracy_ks=()
                )
                per[label]["wu" if group == "warm" else "cu"].append(res.pop("per_user"))
                per[label][group].append({k: res[k] for k in ("ndcg@10", "recall@10", "hr@10", "n_users")})
            if isinstance(model, TwoStage):
                # the ranker's own validation NDCG@10: its validation users' labelled lists (forward in
                # time), hundreds of users against the window's few dozen warm users
                per[label]["ranker_val"].append(model.fit_result.get("ranker_val_ndcg@10"))
                per[label]["recall"].append(
                    _candidate_recall(model, fold.train, fold.test, fold.warm_test_users)
                )
            log(f"window {w} {label}: fit {secs:.0f} s, warm ndcg@10 {per[label]['warm'][-1]['ndcg@10']:.4f}")
    out: dict[str, Any] = {"models": {}}
    for label, p in per.items():
        r = {
            k: v
            for k, v in mean_over_windows(p["warm"]).items()
            if k in ("ndcg@10", "recall@10", "hr@10", "n_users")
        }
        r["cold"] = {
            k: v for k, v in mean_over_windows(p["cold"]).items() if k in ("ndcg@10", "hr@10", "n_users")
        }
        r["windows_ndcg@10"] = [x["ndcg@10"] for x in p["warm"]]
        r["fit_seconds"] = float(np.mean(p["fit"]))
        if p["recall"]:
            r["candidate_recall_warm"] = float(np.mean(p["recall"]))
            r["ranker_val_ndcg@10_windows"] = p["ranker_val"]
        out["models"][label] = r
    out["comparisons"] = {
        g: [
            c
            for c in compare_models({m: per[m][u] for m in per})
            if c["a"] in ("recent_pop", "default", DEFAULT)  # each against the baseline and the default
        ]
        for g, u in (("warm", "wu"), ("cold", "cu"))
    }
    out["windows"] = [
        {"train": f.train.n_interactions, "test": f.test.n_interactions,
         "warm_users": int(f.warm_test_users.size), "cold_users": int(f.cold_users.size)}
        for f in folds
    ]  # fmt: skip
    return out


def validate(
    ds: Any,
    configs: list[str],
    n_windows: int,
    val_windows: int,
    retrievers: list[str] = (),  # type: ignore[assignment]
) -> dict[str, Any]:
    period = rolling_splits(ds, n_windows=n_windows)[0].train  # before the first test window
    folds = rolling_splits(period, n_windows=val_windows)
    models = {b: (b, {}) for b in BASELINES}
    models |= {c: (DEFAULT, CONFIGS[c]) for c in configs if c}
    models |= {r: RETRIEVERS[r] for r in retrievers}
    return {"dataset": ds.name, "training_period": period.n_interactions, **rolling_eval(folds, models)}


def test(ds: Any, n_windows: int, configs: list[str]) -> dict[str, Any]:
    folds = rolling_splits(ds, n_windows=n_windows)
    models = {b: (b, {}) for b in BASELINES} | {DEFAULT: (DEFAULT, {})}
    models |= {c: (DEFAULT, CONFIGS[c]) for c in configs if c != "default"}
    return {"dataset": ds.name, **rolling_eval(folds, models)}


def stratified(ds: Any) -> dict[str, Any]:
    sp_ = split(ds, "stratified", seed=42)
    t0 = time.perf_counter()
    model = create(DEFAULT).fit(sp_.train)
    secs = time.perf_counter() - t0
    res = evaluate_retriever(model, sp_.train, sp_.test, [10], True, accuracy_ks=())
    return {"dataset": ds.name, "ndcg@10": res["ndcg@10"], "fit_seconds": secs, "before": 0.5016}


def stratified_validation(ds: Any, configs: list[str], retrievers: list[str] = ()) -> dict[str, Any]:  # type: ignore[assignment]
    """The configurations on ``stratified`` validation (carved from its train part): the regression check
    of the choice, without the test split."""
    val = split(ds, "stratified", seed=42).validation()
    out: dict[str, Any] = {"dataset": ds.name}
    models = {c: (DEFAULT, CONFIGS[c]) for c in configs if c} | {r: RETRIEVERS[r] for r in retrievers}
    for c, (name, params) in models.items():
        model = create(name, **params).fit(val.train)
        out[c] = evaluate_retriever(model, val.train, val.test, [10], True, accuracy_ks=())["ndcg@10"]
        log(f"stratified validation {c}: ndcg@10 {out[c]:.4f}")
    return out


def cold(ds: Any, n_windows: int) -> dict[str, Any]:
    """Cold users on the protocol's test windows: the default's cold-start order (`TwoStageConfig.cold_order`
    = auto: chosen inside each window's training data, on the cold users of the model's own holdout folds,
    exactly as `TwoStage.fit` does) against all-time popularity, recent_pop and trending. The default
    answers a user without history with that order alone, so its cold figures are the chosen order's."""
    from recstack.models.ranking.two_stage import _COLD, TwoStageConfig, _cold_scores, _holdout, _order_ndcg

    c = TwoStageConfig()
    folds = rolling_splits(ds, n_windows=n_windows)
    per: dict[str, list[Any]] = {m: [] for m in ("chosen", *_COLD)}
    figures: dict[str, list[float]] = {m: [] for m in per}
    results: dict[str, list[dict[str, Any]]] = {m: [] for m in per}
    chosen: list[dict[str, Any]] = []
    for w, fold in enumerate(folds):
        val: dict[str, list[float]] = {o: [] for o in _COLD}
        for f in range(c.holdout_folds):
            part_a, part_b = _holdout(
                fold.train, c.holdout, c.holdout_fraction, c.seed + f, f, c.holdout_folds
            )
            a_csr, b_csr = part_a.to_csr("binary"), part_b.to_csr("binary")
            users = np.flatnonzero((np.diff(b_csr.indptr) > 0) & (np.diff(a_csr.indptr) == 0))
            if len(users):
                for o in _COLD:
                    val[o].append(_order_ndcg(_cold_scores(part_a, o), b_csr[users]))
        means = {o: float(np.mean(v)) for o, v in val.items() if v}
        pick = max(means, key=lambda o: means[o]) if means else "trending"
        chosen.append({"window": w, "chosen": pick, "validation_ndcg@10": means})
        for label, name in [("chosen", pick), *((o, o) for o in _COLD)]:
            model = create(name).fit(fold.train)
            res = evaluate_retriever(
                model, fold.train, fold.test, [10], True, users=fold.cold_users, per_user=True, accuracy_ks=()
            )
            per[label].append(res.pop("per_user"))
            figures[label].append(float(res["ndcg@10"]))
            results[label].append({k: res[k] for k in ("ndcg@10", "hr@10", "n_users")})
        log(f"cold window {w}: chosen {pick} (validation {means}); test ndcg@10 "
            f"{ {k: round(v[-1], 4) for k, v in figures.items()} }")  # fmt: skip
    return {
        "dataset": ds.name,
        "cold_users": [int(f.cold_users.size) for f in folds],
        "choice": chosen,
        # the protocol's mean over windows (`mean_over_windows`, as the test part reports)
        "ndcg@10": {k: mean_over_windows(v)["ndcg@10"] for k, v in results.items()},
        "windows_ndcg@10": figures,
        "comparisons": [x for x in compare_models(per) if "recent_pop" in (x["a"], x["b"])],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--parts", default="validate,test,stratified")
    ap.add_argument("--datasets", default="/work/shared/data/ml-100k,/work/shared/data/ml-latest-small")
    ap.add_argument("--windows", type=int, default=5)
    ap.add_argument("--val-windows", type=int, default=2)
    ap.add_argument("--configs", default="before,time", help="configurations compared on validation")
    ap.add_argument("--test-configs", default="", help="more configurations on the test windows (ablations)")
    ap.add_argument("--out", type=Path, default=OUT, help="the JSON file the parts are merged into")
    ap.add_argument(
        "--retrievers", default="", help=f"single retrievers validated too: {', '.join(RETRIEVERS)}"
    )
    args = ap.parse_args()
    out_path: Path = args.out
    body: dict[str, Any] = json.loads(out_path.read_text()) if out_path.is_file() else {}
    body.update({"benchmark": "temporal", "protocol": "temporal-rolling", "windows": args.windows,
                 "python": platform.python_version(), "cpus": os.cpu_count()})  # fmt: skip
    datasets = [d for d in args.datasets.split(",") if d]
    retrievers = [r for r in args.retrievers.split(",") if r]
    for part in args.parts.split(","):
        for path in datasets if not part.startswith("stratified") else datasets[:1]:
            ds = load_dataset(path)
            log(f"{part} on {ds.name}")
            t0 = time.perf_counter()
            if part == "validate":
                res = validate(ds, args.configs.split(","), args.windows, args.val_windows, retrievers)
            elif part == "stratified_validation":
                res = stratified_validation(ds, args.configs.split(","), retrievers)
            elif part == "cold":
                res = cold(ds, args.windows)
            elif part == "test":
                res = test(ds, args.windows, args.test_configs.split(",") if args.test_configs else [])
            else:
                res = stratified(ds)
            res["wall_seconds"] = time.perf_counter() - t0
            # merge into the file as it is now (another part may have written it meanwhile)
            now: dict[str, Any] = json.loads(out_path.read_text()) if out_path.is_file() else {}
            body = {**now, **{k: v for k, v in body.items() if not isinstance(v, dict)}}
            body.setdefault(part, {})[ds.name] = res
            out_path.parent.mkdir(parents=True, exist_ok=True)
            out_path.write_text(json.dumps(to_jsonable(body), indent=2) + "\n")
            log(f"{part} on {ds.name}: {json.dumps(to_jsonable(res))[:1500]}")


if __name__ == "__main__":
    main()
