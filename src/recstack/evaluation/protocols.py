"""The protocol runner: split, (tune on validation), fit, recommend, score — under a named protocol.

Protocols (see BENCHMARKS.md) map to functions in `PROTOCOLS`; a new protocol (``ctr``...) is added with
`register_protocol`. The ranking protocols share one runner that differs only in what it removes from
the candidates:

- ``stratified``, ``temporal``, ``leave-last-out``: the user's training items are removed;
- ``tfrs``: nothing is removed (TensorFlow Recommenders' FactorizedTopK).

Every ranking protocol also reports the FactorizedTopK top-K categorical accuracy (on all items, nothing
removed, averaged over test pairs). ``temporal`` reports the users first seen in the test window
(cold-start users, empty training history) in a separate ``"cold"`` sub-dict; its main figures are over
the other (warm) test users.

Tuning (``tune=True``) fits every point of the model's ``tuning_grid`` on the training part of a
validation split carved out of the training data the same way, picks the best NDCG@10 on the
validation test part and refits on the whole training data. The test split is used once, at the end.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp

from recstack._numpy import distinct
from recstack._progress import progress_bar
from recstack.data.dataset import Dataset
from recstack.errors import InvalidArgumentError
from recstack.evaluation._blocks import BlockScorer, EvalBlock, ThreadScorer
from recstack.evaluation.metrics import (
    RankingResult,
    catalog_coverage,
    genre_matrix,
    intra_list_diversity,
    novelty,
    popularity_bins,
    ranking_metrics,
)
from recstack.models.base import Retriever

__all__ = [
    "ACCURACY_KS",
    "PROTOCOLS",
    "REPORT_K",
    "ProtocolFn",
    "RunOptions",
    "compare_models",
    "evaluate_retriever",
    "mean_over_windows",
    "protocol_names",
    "register_protocol",
    "run_protocol",
]

log = logging.getLogger(__name__)

#: the cut-off of the headline figures (``precision@10`` ...)
REPORT_K = 10
#: the cut-offs of the FactorizedTopK accuracy
ACCURACY_KS: tuple[int, ...] = (1, 5, 10, 50, 100)
#: the metric that picks hyperparameters on validation
TUNING_METRIC = "ndcg@10"
CURVE_METRICS: tuple[str, ...] = ("ndcg", "precision", "recall")
_HEADLINE = ("precision", "recall", "ndcg", "map", "hr", "mrr")
#: the per-user figures kept for paired comparisons (``temporal-rolling``)
_PAIRED = ("ndcg", "recall", "hr")


class Splitter(Protocol):
    """``recstack.data.splits.split``-compatible: ``split(dataset, protocol, seed=...) -> Split``."""

    def __call__(self, dataset: Dataset, protocol: str, *, seed: int = 42) -> Any: ...


@dataclass(frozen=True)
class RunOptions:
    """What a protocol function gets besides the dataset and the model names."""

    tune: bool = False
    seed: int = 42
    ks: tuple[int, ...] = tuple(range(1, 51))
    splitter: Splitter | None = None
    #: evaluate a uniform sample of this many test users (95% intervals under ``"sample"``)
    sample_users: int | None = None
    #: the training seed of every model whose config has a ``seed`` (None: each model's own default)
    model_seed: int | None = None

    def split(self, dataset: Dataset, protocol: str) -> Any:
        if self.splitter is not None:
            return self.splitter(dataset, protocol, seed=self.seed)
        from recstack.data.splits import split

        return split(dataset, protocol, seed=self.seed)


#: a protocol: (dataset, model names, options) -> the full result dict of `run_protocol`
ProtocolFn = Callable[[Dataset, Sequence[str], RunOptions], dict[str, Any]]

PROTOCOLS: dict[str, ProtocolFn] = {}


def register_protocol(name: str, fn: ProtocolFn) -> None:
    """Add (or replace) a protocol of `run_protocol`."""
    PROTOCOLS[name] = fn


def protocol_names() -> list[str]:
    return list(PROTOCOLS)


# ------------------------------------------------------------------------------------ evaluation
def _truth_csr(test: Dataset) -> sp.csr_matrix:
    return test.to_csr("binary")


def evaluate_retriever(
    model: Retriever,
    train: Dataset,
    test: Dataset,
    ks: Iterable[int] = range(1, 51),
    exclude_train: bool = True,
    *,
    users: npt.ArrayLike | None = None,
    accuracy_ks: Sequence[int] = ACCURACY_KS,
    report_k: int = REPORT_K,
    batch_size: int = 1024,
    per_user: bool = False,
    scorer: BlockScorer | None = None,
    sample_users: int | None = None,
    sample_seed: int = 0,
) -> dict[str, Any]:
    """Score a fitted retriever on ``test``.

    Recommends top-max(ks) items for each user with at least one test interaction (restricted to
    ``users`` when given), removing the user's ``train`` items when ``exclude_train``. Returns
    ``{"precision@10": x, "recall@10", "ndcg@10", "map@10", "hr@10", "mrr@10", "coverage@10",
    "novelty@10", "diversity@10", "accuracy@K" (K in accuracy_ks), "n_users": n, "curves": {"ndcg":
    [...], "precision": [...], "recall": [...]} (one value per k in ks), "popularity": [...] (share of
    the top-10 recommendations per catalog popularity bin), "n_fallback": users whose scores were all
    equal (an empty history: cold-start users) and who got the training popularity instead}``; with
    ``per_user`` also ``"per_user": {"users": [...], "ndcg@10": [...], "recall@10", "hr@10"}`` (the
    evaluated users' own figures, for paired comparisons).
    ``diversity@10`` is None when the items have no genres. Accuracy (FactorizedTopK) ranks all items,
    nothing removed, and is averaged over the test pairs of the evaluated users.

    Users are scored in blocks of ``batch_size`` by ``scorer`` (`recstack.evaluation._blocks`: threads
    or Ray; default: inline), so memory is bounded by the blocks in flight plus the [n, max(ks)] ids.
    ``sample_users``: evaluate a uniform sample (seed ``sample_seed``) of that many of the eligible
    users instead of all; the result then has ``"sample": {"n_users", "of", "ci95": {"ndcg@10": [lo,
    hi], ...}}``, the normal 95% interval of each headline mean (standard error over the sampled
    users' values with the finite-population correction).
    """
    wanted = tuple(sorted({int(k) for k in ks}))
    ks_t = tuple(sorted(set(wanted) | {report_k}))
    kmax = ks_t[-1]
    truth_all = _truth_csr(test)
    train_csr = train.to_csr("binary")
    test_users = np.flatnonzero(np.diff(truth_all.indptr) > 0).astype(np.int64)
    if users is not None:
        test_users = np.intersect1d(test_users, np.asarray(users, dtype=np.int64))
    n_eligible = test_users.shape[0]
    if sample_users is not None:
        if sample_users < 1:
            raise InvalidArgumentError(f"sample_users must be a positive count, got {sample_users}")
        if sample_users < n_eligible:
            rng = np.random.default_rng(sample_seed)
            test_users = np.sort(rng.choice(test_users, sample_users, replace=False))
    n = test_users.shape[0]
    pop_users = np.asarray((train_csr > 0).sum(axis=0)).ravel()
    pop_scores = pop_users.astype(np.float32)
    ids = np.full((n, kmax), -1, dtype=np.int64)
    acc_ks = tuple(sorted({int(k) for k in accuracy_ks}))
    test_inter = test.interactions
    pair_users = test_inter["user"].to_numpy().astype(np.int64)
    pair_items = test_inter["item"].to_numpy().astype(np.int64)
    order = np.argsort(pair_users, kind="stable")
    pair_users, pair_items = pair_users[order], pair_items[order]

    def blocks() -> Iterator[EvalBlock]:
        for start in range(0, n, batch_size):
            batch = test_users[start : start + batch_size]
            # pairs of this block's users (every test event counts once, as in the TFRS tutorials)
            lo, hi = np.searchsorted(pair_users, [batch[0], batch[-1] + 1])
            pu, pi = pair_users[lo:hi], pair_items[lo:hi]
            pos = np.minimum(np.searchsorted(batch, pu), batch.shape[0] - 1)
            inb = batch[pos] == pu
            exclude = train_csr[batch] if exclude_train else None
            yield EvalBlock(start, batch, exclude, pos[inb].astype(np.int64), pi[inb])

    n_fallback = 0
    acc_hits: dict[int, list[tuple[int, npt.NDArray[np.float64]]]] = {k: [] for k in acc_ks}
    runner = scorer if scorer is not None else ThreadScorer(1)
    for res in runner.map(model, blocks(), pop_scores, kmax, acc_ks):
        ids[res.start : res.start + res.ids.shape[0]] = res.ids
        n_fallback += res.n_fallback
        for k, h in res.hits.items():
            acc_hits[k].append((res.start, h))
    truth = truth_all[test_users]
    rank = ranking_metrics(ids, truth, ks_t)
    out: dict[str, Any] = {f"{m}@{report_k}": rank.mean(m, report_k) for m in _HEADLINE}
    out[f"coverage@{report_k}"] = catalog_coverage(ids, train.n_items, [report_k])[report_k] if n else 0.0
    out[f"novelty@{report_k}"] = (
        novelty(ids, pop_users, max(train.n_users, 1), [report_k])[report_k] if n else 0.0
    )
    genres = train.item_genres()
    if n and any(genres):
        out[f"diversity@{report_k}"] = intra_list_diversity(ids, genre_matrix(genres), [report_k])[report_k]
    else:
        out[f"diversity@{report_k}"] = None
    for k in acc_ks:
        # in block order, as the blocks were cut (completion order differs between runs)
        parts = [h for _, h in sorted(acc_hits[k], key=lambda sh: sh[0])]
        allh = np.concatenate(parts) if parts else np.zeros(0)
        out[f"accuracy@{k}"] = float(allh.mean()) if allh.size else 0.0
    out["n_users"] = int(rank.n_users)
    out["n_fallback"] = n_fallback
    out["curves"] = {m: [rank.mean(m, k) for k in wanted] for m in CURVE_METRICS}
    out["popularity"] = popularity_bins(ids, pop_users, report_k)[0] if n else []
    if per_user:
        col = rank.column(report_k)
        out["per_user"] = {"users": test_users[rank.rows]} | {
            f"{m}@{report_k}": rank.per_user[m][:, col] for m in _PAIRED
        }
    if sample_users is not None:
        out["sample"] = {
            "n_users": int(rank.n_users),
            "of": int(n_eligible),
            "seed": sample_seed,
            "ci95": {f"{m}@{report_k}": _ci95(rank, m, report_k, n_eligible) for m in _HEADLINE},
        }
    return out


def _ci95(rank: RankingResult, metric: str, k: int, population: int) -> list[float]:
    """Normal 95% interval of the mean of ``metric@k`` over a uniform sample of ``population``
    users without replacement: mean +- 1.96 sd / sqrt(n) sqrt((N - n) / (N - 1))."""
    n = rank.n_users
    if n == 0:
        return [0.0, 0.0]
    v = rank.per_user[metric][:, rank.column(k)]
    mean = float(v.mean())
    if n < 2:
        return [mean, mean]
    fpc = np.sqrt(max(population - n, 0) / max(population - 1, 1))
    half = 1.96 * float(v.std(ddof=1)) / np.sqrt(n) * fpc
    return [mean - half, mean + half]


# ---------------------------------------------------------------------------------------- models
def _create(name: str, params: dict[str, Any], seed: int | None = None) -> Retriever:
    """Model ``name`` at ``params``; ``seed``: its training seed when its config has one."""
    from recstack.models.registry import create, get_class

    if seed is not None and "seed" not in params:
        fields = getattr(get_class(name).Config, "model_fields", {})
        if "seed" in fields:
            params = {**params, "seed": seed}
    return create(name, **params)


def _check_models(model_names: Sequence[str]) -> None:
    from recstack.models.registry import get_class

    if not model_names:
        raise InvalidArgumentError("name at least one model, for example --models pop,ease")
    for name in model_names:
        get_class(name)  # raises InvalidArgumentError naming the choices / the missing implementation


def _tuning_grid(name: str) -> tuple[dict[str, Any], ...]:
    from recstack.models.registry import get_class

    return tuple(get_class(name).tuning_grid)


def _fit_timed(model: Retriever, train: Dataset) -> float:
    t0 = time.perf_counter()
    model.fit(train)
    return time.perf_counter() - t0


def _ranking_protocol(protocol: str, exclude_train: bool) -> ProtocolFn:
    def run(dataset: Dataset, model_names: Sequence[str], opts: RunOptions) -> dict[str, Any]:
        return _run_ranking(dataset, protocol, model_names, opts, exclude_train=exclude_train)

    run.__name__ = f"run_{protocol.replace('-', '_')}"
    run.__doc__ = (
        f"The {protocol!r} protocol ({'train items removed' if exclude_train else 'nothing removed'})."
    )
    return run


def _run_ranking(
    dataset: Dataset,
    protocol: str,
    model_names: Sequence[str],
    opts: RunOptions,
    *,
    exclude_train: bool,
) -> dict[str, Any]:
    sp_ = opts.split(dataset, protocol)
    train: Dataset = sp_.train
    test: Dataset = sp_.test
    cold = np.asarray(getattr(sp_, "cold_users", np.empty(0)), dtype=np.int64)
    val = opts.split(train, protocol) if opts.tune else None
    results: dict[str, Any] = {}
    grids = {name: (_tuning_grid(name) if opts.tune else ()) for name in model_names}
    total = sum(len(g) + 1 for g in grids.values())
    with progress_bar() as prog:
        task = prog.add_task(f"evaluate {protocol}", total=total, status="")
        for name in model_names:
            tuning: list[tuple[dict[str, Any], float]] = []
            params: dict[str, Any] = {}
            if val is not None and grids[name]:
                best = -np.inf
                for point in grids[name]:
                    prog.update(task, status=f"{name} tuning {point}")
                    m = _create(name, dict(point), opts.model_seed)
                    m.fit(val.train)
                    score = evaluate_retriever(
                        m, val.train, val.test, [REPORT_K], exclude_train, accuracy_ks=()
                    )[TUNING_METRIC]
                    tuning.append((dict(point), float(score)))
                    log.info("%s %s: validation %s = %.4f", name, point, TUNING_METRIC, score)
                    if score > best:
                        best, params = score, dict(point)
                    prog.advance(task)
            prog.update(task, status=f"{name} fit")
            model = _create(name, params, opts.model_seed)
            fit_seconds = _fit_timed(model, train)
            prog.update(task, status=f"{name} score")
            warm = np.setdiff1d(distinct(test.interactions["user"].to_numpy()), cold) if cold.size else None
            res = evaluate_retriever(
                model,
                train,
                test,
                opts.ks,
                exclude_train,
                users=warm,
                sample_users=opts.sample_users,
                sample_seed=opts.seed,
            )
            if protocol == "temporal":
                cold_res = evaluate_retriever(model, train, test, opts.ks, exclude_train, users=cold)
                res["cold"] = {k: v for k, v in cold_res.items() if k not in ("curves", "popularity")}
            res["fit_seconds"] = fit_seconds
            res["params"] = model.params()
            if opts.tune:
                res["tuning"] = [[p, s] for p, s in tuning]
            results[name] = res
            prog.advance(task)
    return {"results": results, "catalog_popularity": _catalog_popularity(train)}


def _catalog_popularity(train: Dataset) -> list[float]:
    pop_users = np.asarray((train.to_csr("binary") > 0).sum(axis=0)).ravel()
    empty = np.full((0, REPORT_K), -1, dtype=np.int64)
    return popularity_bins(empty, pop_users, REPORT_K)[1]


# --------------------------------------------------------------------------- temporal-rolling
#: the per-window keys averaged into a model's headline figures
_ROLLING_MEAN_KEYS = (*(f"{m}@{REPORT_K}" for m in _HEADLINE), f"coverage@{REPORT_K}", f"novelty@{REPORT_K}")


def mean_over_windows(windows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The mean over windows (with users) of the per-window figures; ``n_users`` summed."""
    used = [w for w in windows if w.get("n_users", 0) > 0]
    out: dict[str, Any] = {
        k: float(np.mean([w[k] for w in used])) if used else 0.0
        for k in _ROLLING_MEAN_KEYS
        if all(k in w for w in windows)
    }
    out["n_users"] = int(sum(w.get("n_users", 0) for w in windows))
    out["n_windows"] = len(used)
    if used and all("sample" in w for w in used):
        out["sample"] = _sample_over_windows([w["sample"] for w in used])
    return out


def _sample_over_windows(samples: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The ``"sample"`` of a mean over windows sampled independently (``sample_users`` per window): the
    95% interval of the mean of the window means, mean +- 1.96 sqrt(sum se_w^2) / W, each window's
    standard error se_w read back from its own normal interval."""
    w = len(samples)
    ci95: dict[str, list[float]] = {}
    for key in samples[0]["ci95"]:
        centres = [(s["ci95"][key][0] + s["ci95"][key][1]) / 2 for s in samples]
        ses = [(s["ci95"][key][1] - s["ci95"][key][0]) / (2 * 1.96) for s in samples]
        mean = float(np.mean(centres))
        half = 1.96 * float(np.sqrt(np.sum(np.square(ses)))) / w
        ci95[key] = [mean - half, mean + half]
    return {
        "n_users": int(sum(s["n_users"] for s in samples)),
        "of": int(sum(s["of"] for s in samples)),
        "seed": samples[0]["seed"],
        "ci95": ci95,
    }


def compare_models(
    per_window: dict[str, list[dict[str, Any]]],
    *,
    metric: str = f"ndcg@{REPORT_K}",
    seed: int = 42,
    n_resamples: int = 2000,
) -> list[dict[str, Any]]:
    """Paired bootstrap 95% CIs of ``metric`` differences between every two models.

    ``per_window[model][w]`` is the ``"per_user"`` dict of window w (`evaluate_retriever` with
    ``per_user``). For models A before B (in the dict's order), the difference is B - A on the users both
    were evaluated on (the same users: same split), the estimate is its mean over windows, and the CI
    resamples users inside each window (`recstack.evaluation.metrics.paired_bootstrap_ci`).
    """
    from recstack.evaluation.metrics import paired_bootstrap_ci

    names = list(per_window)
    out: list[dict[str, Any]] = []
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            diffs = []
            for wa, wb in zip(per_window[a], per_window[b], strict=True):
                _common, ia, ib = np.intersect1d(wa["users"], wb["users"], return_indices=True)
                diffs.append(np.asarray(wb[metric])[ib] - np.asarray(wa[metric])[ia])
            est, low, high = paired_bootstrap_ci(diffs, seed=seed, n_resamples=n_resamples)
            base = float(np.mean([np.mean(w[metric]) for w in per_window[a] if len(w[metric])] or [np.nan]))
            out.append(
                {
                    "a": a,
                    "b": b,
                    "metric": metric,
                    "diff": est,
                    "ci95": [low, high],
                    "ratio": (base + est) / base if base > 0 else None,
                    "n_units": int(sum(d.size for d in diffs)),
                }
            )
    return out


def _run_rolling(dataset: Dataset, model_names: Sequence[str], opts: RunOptions) -> dict[str, Any]:
    """``temporal-rolling``: every model fitted on each fold's train, scored on its window (warm and cold
    users apart); per window, the mean over windows, and paired bootstrap CIs between every two models.
    With ``tune``, each fold's hyperparameters are chosen on the last window of its own training part."""
    from recstack.data.splits import rolling_splits, split

    folds = rolling_splits(dataset, seed=opts.seed)
    grids = {name: (_tuning_grid(name) if opts.tune else ()) for name in model_names}
    per: dict[str, dict[str, list[Any]]] = {
        n: {"warm": [], "cold": [], "warm_units": [], "cold_units": [], "fit": [], "tuning": []}
        for n in model_names
    }
    windows: list[dict[str, Any]] = []
    curves: dict[str, list[dict[str, list[float]]]] = {n: [] for n in model_names}
    last_params: dict[str, Any] = {}
    total = len(folds) * sum(len(g) + 1 for g in grids.values())
    with progress_bar() as prog:
        task = prog.add_task("evaluate temporal-rolling", total=total, status="")
        for w, fold in enumerate(folds):
            ts = fold.test.interactions["timestamp"]
            warm_users, cold = fold.warm_test_users, fold.cold_users
            windows.append(
                {
                    "window": w,
                    "train": fold.train.n_interactions,
                    "test": fold.test.n_interactions,
                    "start": int(ts.min()),  # type: ignore[arg-type]
                    "end": int(ts.max()),  # type: ignore[arg-type]
                    "warm_users": int(warm_users.size),
                    "cold_users": int(cold.size),
                }
            )
            val = split(fold.train, "temporal-rolling", seed=opts.seed) if opts.tune else None
            for name in model_names:
                params: dict[str, Any] = {}
                if val is not None and grids[name]:
                    best = -np.inf
                    for point in grids[name]:
                        prog.update(task, status=f"window {w} {name} tuning {point}")
                        m = _create(name, dict(point), opts.model_seed)
                        m.fit(val.train)
                        score = evaluate_retriever(
                            m,
                            val.train,
                            val.test,
                            [REPORT_K],
                            True,
                            users=val.warm_test_users,
                            accuracy_ks=(),
                        )[TUNING_METRIC]
                        per[name]["tuning"].append([w, dict(point), float(score)])
                        if score > best:
                            best, params = score, dict(point)
                        prog.advance(task)
                prog.update(task, status=f"window {w} {name} fit")
                model = _create(name, params, opts.model_seed)
                per[name]["fit"].append(_fit_timed(model, fold.train))
                prog.update(task, status=f"window {w} {name} score")
                for group, users in (("warm", warm_users), ("cold", cold)):
                    res = evaluate_retriever(
                        model,
                        fold.train,
                        fold.test,
                        opts.ks,
                        True,
                        users=users,
                        per_user=True,
                        accuracy_ks=(),
                        sample_users=opts.sample_users if group == "warm" else None,
                        sample_seed=opts.seed,
                    )
                    per[name][f"{group}_units"].append(res.pop("per_user"))
                    if group == "warm":
                        curves[name].append(res.pop("curves"))
                    else:
                        res.pop("curves")
                    res.pop("popularity")
                    per[name][group].append(res)
                last_params[name] = model.params()
                prog.advance(task)
    results: dict[str, Any] = {}
    for name in model_names:
        p = per[name]
        res = mean_over_windows(p["warm"])
        res["cold"] = mean_over_windows(p["cold"])
        res["windows"] = [{"warm": wr, "cold": cr} for wr, cr in zip(p["warm"], p["cold"], strict=True)]
        res["fit_seconds"] = float(np.mean(p["fit"]))
        res["fit_seconds_windows"] = p["fit"]
        res["params"] = last_params[name]
        res["curves"] = {m: np.mean([c[m] for c in curves[name]], axis=0).tolist() for m in CURVE_METRICS}
        if opts.tune:
            res["tuning"] = p["tuning"]
        results[name] = res
    comparisons = {
        group: compare_models({n: per[n][f"{group}_units"] for n in model_names}, seed=opts.seed)
        for group in ("warm", "cold")
    }
    return {
        "results": results,
        "windows": windows,
        "comparisons": comparisons,
        "catalog_popularity": _catalog_popularity(folds[-1].train),
    }


for _name, _exclude in (("stratified", True), ("temporal", True), ("leave-last-out", True), ("tfrs", False)):
    register_protocol(_name, _ranking_protocol(_name, _exclude))
register_protocol("temporal-rolling", _run_rolling)
register_protocol(
    "ctr", lambda d, m, o: __import__("recstack.models.ranking.ctr", fromlist=["_"]).run_ctr(d, m, o)
)
register_protocol(
    "cold-users",
    lambda d, m, o: __import__("recstack.evaluation.cold_users", fromlist=["_"]).cold_users_protocol(d, m, o),
)


def run_protocol(
    dataset: Dataset,
    protocol: str,
    model_names: Sequence[str],
    tune: bool = False,
    seed: int = 42,
    ks: Iterable[int] = range(1, 51),
    *,
    splitter: Splitter | None = None,
    sample_users: int | None = None,
    model_seeds: Sequence[int] | None = None,
) -> dict[str, Any]:
    """Evaluate ``model_names`` on ``dataset`` under ``protocol``.

    Returns ``{"dataset": name, "protocol": protocol, "seed": seed, "tuned": tune, "results": {model:
    {"precision@10": x, ..., "fit_seconds": s, "params": {...}, "curves": {...}}},
    "catalog_popularity": [...]}`` (see `evaluate_retriever` for the per-model keys; ``"cold"`` for
    temporal, ``"tuning"`` — [[params, validation ndcg@10], ...] — when tuned). ``splitter`` replaces
    `recstack.data.splits.split` (tests). ``sample_users``: the test figures over a uniform sample of
    that many users, with 95% intervals (`evaluate_retriever`). ``model_seeds``: the protocol once per
    training seed (the split stays at ``seed``), figures as mean +- sd (`seed_summary`).
    """
    if protocol not in PROTOCOLS:
        raise InvalidArgumentError(f"unknown protocol {protocol!r}; choose from {', '.join(PROTOCOLS)}")
    names = [n.strip() for n in model_names if n.strip()]
    _check_models(names)
    ks_t = tuple(sorted({int(k) for k in ks}))
    if not ks_t or ks_t[0] < 1:
        raise InvalidArgumentError("ks must be positive cut-offs, for example range(1, 51)")
    if model_seeds is not None and not list(model_seeds):
        raise InvalidArgumentError("model_seeds: give at least one training seed, for example [42, 142, 242]")
    if model_seeds is not None and protocol == "cold-users":
        raise InvalidArgumentError(
            "model_seeds: the cold-users protocol reports one training seed; drop --seeds"
        )
    runs = []
    for ms in list(model_seeds) if model_seeds is not None else [None]:
        opts = RunOptions(
            tune=tune, seed=seed, ks=ks_t, splitter=splitter, sample_users=sample_users, model_seed=ms
        )
        runs.append(PROTOCOLS[protocol](dataset, names, opts))
    body = runs[0] if model_seeds is None else seed_summary(runs, list(model_seeds))
    return {"dataset": dataset.name, "protocol": protocol, "seed": seed, "tuned": tune, **body}


#: the figures of a model that `seed_summary` reports as mean +- sd over training seeds
_SEED_KEYS = (*_ROLLING_MEAN_KEYS, "fit_seconds")


def seed_summary(runs: Sequence[dict[str, Any]], seeds: Sequence[int]) -> dict[str, Any]:
    """One protocol result from runs that differ only in the models' training seed (``seeds``): the
    first run's body, each model's headline figures (and its cold users' under ``"cold"``) replaced by
    their mean over the runs, with ``"seeds": {"seeds": [...], "sd": {...}, "values": {...}}`` beside
    them (sd: the sample standard deviation, 0 for one run). Paired comparisons (``"comparisons"``)
    are those of the first seed's run; every run's under ``"comparisons_by_seed"``."""
    body = dict(runs[0])
    results: dict[str, Any] = {}
    for name, first in runs[0]["results"].items():
        res = dict(first)
        summary: dict[str, Any] = {"seeds": list(seeds), "sd": {}, "values": {}}
        for scope in ("", "cold"):
            got = [r["results"][name].get(scope, {}) if scope else r["results"][name] for r in runs]
            target = dict(res[scope]) if scope and isinstance(res.get(scope), dict) else res
            for key in _SEED_KEYS:
                vals = [g[key] for g in got if isinstance(g.get(key), int | float)]
                if len(vals) != len(runs):
                    continue
                label = f"{scope}.{key}" if scope else key
                target[key] = float(np.mean(vals))
                summary["sd"][label] = float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0
                summary["values"][label] = [float(v) for v in vals]
            if scope and isinstance(res.get(scope), dict):
                res[scope] = target
        res["seeds"] = summary
        results[name] = res
    body["results"] = results
    if "comparisons" in runs[0]:
        body["comparisons_by_seed"] = {str(s): r["comparisons"] for s, r in zip(seeds, runs, strict=True)}
    return body
