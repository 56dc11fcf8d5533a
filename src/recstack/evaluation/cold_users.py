"""The ``cold-users`` protocol: users held out entirely, recommended from their profile only, or from
their first 1, 3 or 5 liked items, against global popularity.

Split (seed ``seed``): ``share`` of the users with at least ``max(givens) + 1`` interactions, of which
at least ``max(givens)`` liked (rating >= 4 on a 1-5 scale; every interaction on implicit data), are
held out with all their interactions; the rest is the training set. Conditions, per held-out user:

- ``profile``: nothing but the user's age / gender / occupation; the test set is all their items (no
  item removed from the candidates). Only on data with demographics (ML-100K; ml-latest-small has none).
- ``liked_n`` (n in ``givens``): the user's first n liked items in time are given (as the web onboarding's
  picks: ``liked_items``); the test set is every other item of the user; the given items are removed.

Metrics: NDCG@10 and Recall@20 per user, their means, and the paired bootstrap 95% CI (over users) of
each model's difference from ``popular`` (`recstack.evaluation.metrics.paired_bootstrap_ci`).

Every choice is made on validation users carved the same way out of the training users (a model fitted
on the other training users): the segment model's parameters (`recstack.features.segments`, a grid of
features x shrinkage x combination) and the profile verdict (``personal``: the lower end of the
validation CI of segment minus popular is above 0; otherwise the profile is not used and serving says
"popular"), and, for the liked conditions, which pipeline variant is best (mean validation NDCG@10 over
the ``liked_n`` conditions). The test split is scored once, after the choices.

The liked conditions run **the serving pipeline itself** (`recstack.serving.pipeline.Pipeline` over an
in-memory release of retrievers fitted on the training users, ``liked_items`` requests, the recall order:
no ranker), so what is measured is what a visitor with a few picks gets: each variant is a set of recall
sources (one per named retriever, a history source, plus the ``popular`` source); ``collaborative``
uses the non-content ones together, ``all`` every named retriever. The profile condition runs
`SegmentPopularity` (what serving's ``popular`` source uses for a profile when the verdict says
personal) and, through the pipeline, the served answer.

What is not measured here: the ranker stage (a release's two-stage ranker needs a full build on the
training users) and the two-tower ANN source (`benchmarks/bench_cold_users.py --two-tower` scores its
user tower from a profile alone).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import polars as pl
import scipy.sparse as sp

from recstack._numpy import distinct
from recstack._progress import progress_bar
from recstack.data.dataset import Dataset
from recstack.errors import InvalidArgumentError
from recstack.evaluation.metrics import paired_bootstrap_ci, ranking_metrics
from recstack.features.segments import SegmentPopularity, has_demographics, profile_keys, user_profiles

__all__ = [
    "GIVENS",
    "SEGMENT_GRID",
    "choose_profile_model",
    "cold_user_split",
    "cold_users_protocol",
    "format_cold_users",
    "liked_mask",
    "run_cold_users",
]

log = logging.getLogger(__name__)

IntArray = npt.NDArray[np.int64]
#: the numbers of liked items a visitor gives
GIVENS: tuple[int, ...] = (1, 3, 5)
SHARE = 0.10
KMAX = 20
#: retrievers over item text (no ONNX query encoder needed here)
_CONTENT = ("content", "content_userknn")
#: the segment model's validation grid: features x shrinkage alpha x combination
SEGMENT_GRID: tuple[dict[str, Any], ...] = tuple(
    {"features": list(f), "alpha": a, "combine": c}
    for f in (("age_gender",), ("occupation",), ("age_gender", "occupation"), ("age", "gender", "occupation"))
    for a in (0.0, 10.0, 50.0, 200.0, 1000.0)
    for c in ("mean", "product")
)


# ------------------------------------------------------------------------------------------ split
def liked_mask(inter: pl.DataFrame) -> npt.NDArray[np.bool_]:
    """Which interactions are "liked": rating >= 4 when the ratings go above 1 (explicit 1-5 or
    0.5-5 stars), every interaction otherwise (implicit data)."""
    r = inter["rating"].to_numpy().astype(np.float64)
    if r.size and float(r.max()) > 1.0:
        return r >= 4.0
    return np.ones(inter.height, dtype=bool)


def cold_user_split(
    dataset: Dataset, share: float = SHARE, seed: int = 42, givens: Sequence[int] = GIVENS
) -> tuple[Dataset, IntArray]:
    """(the training dataset: every interaction but the held-out users'; the held-out user indices,
    sorted). Users are drawn (``share`` of all users with interactions, seeded) among those with at
    least ``max(givens)`` liked items and one more interaction."""
    if not 0 < share < 1:
        raise InvalidArgumentError(f"share must be in (0, 1), got {share}")
    inter = dataset.interactions
    need = max(givens) if givens else 0
    users = inter["user"].to_numpy().astype(np.int64)
    n_all = np.bincount(users, minlength=dataset.n_users)
    n_liked = np.bincount(users[liked_mask(inter)], minlength=dataset.n_users)
    eligible = np.flatnonzero((n_liked >= need) & (n_all >= need + 1)).astype(np.int64)
    n_hold = min(len(eligible), max(1, round(share * int((n_all > 0).sum()))))
    if n_hold < 2:
        raise InvalidArgumentError(
            f"{dataset.name}: too few users with {need} liked items to hold out for cold-users"
        )
    rng = np.random.default_rng(seed)
    held = np.sort(rng.choice(eligible, size=n_hold, replace=False)).astype(np.int64)
    train = dataset.with_interactions(inter.filter(~pl.col("user").is_in(held.tolist())))
    return train, held


def _per_user(dataset: Dataset, held: IntArray) -> dict[int, tuple[IntArray, npt.NDArray[np.bool_]]]:
    """Held-out user -> (their items in time order (ties: item index), liked flags)."""
    inter = dataset.interactions.filter(pl.col("user").is_in(held.tolist())).sort(
        ["user", "timestamp", "item"]
    )
    liked = liked_mask(inter)
    u = inter["user"].to_numpy().astype(np.int64)
    it = inter["item"].to_numpy().astype(np.int64)
    out: dict[int, tuple[IntArray, npt.NDArray[np.bool_]]] = {}
    bounds = np.flatnonzero(np.diff(u)) + 1
    for a, b in zip(np.r_[0, bounds], np.r_[bounds, len(u)], strict=True):
        if b > a:
            out[int(u[a])] = (it[a:b], liked[a:b])
    return out


def _given_and_truth(
    hist: dict[int, tuple[IntArray, npt.NDArray[np.bool_]]], users: IntArray, n: int, n_items: int
) -> tuple[list[IntArray], sp.csr_matrix]:
    """Per user the first ``n`` liked items (n = 0: none) and the truth [len(users), n_items] of the
    rest of their items."""
    given: list[IntArray] = []
    rows: list[int] = []
    cols: list[int] = []
    for r, u in enumerate(users.tolist()):
        items, liked = hist[u]
        g = items[liked][:n] if n else np.zeros(0, np.int64)
        rest = np.setdiff1d(items, g)
        given.append(g)
        rows += [r] * len(rest)
        cols += rest.tolist()
    truth = sp.csr_matrix(
        (np.ones(len(rows), np.float32), (np.asarray(rows, np.int64), np.asarray(cols, np.int64))),
        shape=(len(users), n_items),
    )
    truth.sum_duplicates()
    truth.data[:] = 1.0
    return given, truth


def _top(scores: npt.NDArray[Any], given: Sequence[IntArray], k: int) -> IntArray:
    """Top k per row (ties: lower index), the row's given items removed."""
    s = np.array(scores, dtype=np.float64, copy=True)
    for r, g in enumerate(given):
        if len(g):
            s[r, g] = -np.inf
    k = min(k, s.shape[1])
    part = np.argpartition(-s, k - 1, axis=1)[:, :k]
    out = np.empty_like(part)
    for r in range(s.shape[0]):
        p = part[r]
        out[r] = p[np.lexsort((p, -s[r, p]))]
    return out.astype(np.int64)


def _score(ids: IntArray, truth: sp.csr_matrix) -> dict[str, Any]:
    """Mean NDCG@10 / Recall@20 and the per-user values (rows with a non-empty truth)."""
    res = ranking_metrics(ids, truth, (10, KMAX))
    ndcg = res.per_user["ndcg"][:, res.column(10)]
    rec = res.per_user["recall"][:, res.column(KMAX)]
    return {
        "ndcg@10": float(ndcg.mean()) if ndcg.size else 0.0,
        f"recall@{KMAX}": float(rec.mean()) if rec.size else 0.0,
        "n_users": int(res.n_users),
        "_units": {"ndcg@10": ndcg, f"recall@{KMAX}": rec},
    }


def _compare(models: dict[str, dict[str, Any]], base: str, seed: int) -> list[dict[str, Any]]:
    """Paired bootstrap 95% CI of every model minus ``base`` (same users, same order)."""
    out: list[dict[str, Any]] = []
    for name, res in models.items():
        if name == base:
            continue
        for metric in ("ndcg@10", f"recall@{KMAX}"):
            d = np.asarray(res["_units"][metric]) - np.asarray(models[base]["_units"][metric])
            est, lo, hi = paired_bootstrap_ci([d], seed=seed)
            out.append({"a": base, "b": name, "metric": metric, "diff": est, "ci95": [lo, hi]})
    return out


def _strip(models: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {n: {k: v for k, v in r.items() if k != "_units"} for n, r in models.items()}


# --------------------------------------------------------------------------------- profile model
def _popular_scores(train: Dataset) -> npt.NDArray[np.float64]:
    X = train.to_csr("binary")
    return np.asarray((X > 0).sum(axis=0), dtype=np.float64).ravel()


def _segment_base(train: Dataset) -> SegmentPopularity:
    inter = train.interactions
    return SegmentPopularity.fit(
        inter["user"].to_numpy(),
        inter["item"].to_numpy(),
        user_profiles(train.users, train.n_users),
        train.n_items,
    )


def choose_profile_model(
    dataset: Dataset, *, share: float = SHARE, seed: int = 42, grid: Sequence[dict[str, Any]] = SEGMENT_GRID
) -> dict[str, Any]:
    """The profile-only model and its verdict, chosen on validation users carved out of ``dataset``
    (`cold_user_split`; the segment counts from the other users): ``{"model": "segment" | "popular",
    "personal": bool, "params": {...}, "validation": {"n_users", "popular": ndcg@10, "segment":
    ndcg@10, "diff", "ci95", "grid": [[params, ndcg@10], ...]}, "reason": str}``. ``personal`` only when
    the lower end of the 95% CI of segment minus popular NDCG@10 is above 0."""
    if not has_demographics(dataset.users):
        return {
            "model": "popular",
            "personal": False,
            "params": {},
            "validation": None,
            "reason": f"{dataset.name} has no demographics: a profile cannot be used",
        }
    fit, val_users = cold_user_split(dataset, share=share, seed=seed + 1)
    hist = _per_user(dataset, val_users)
    _, truth = _given_and_truth(hist, val_users, 0, dataset.n_items)
    profiles = user_profiles(dataset.users, dataset.n_users)
    # a profile alone: users with the same segment keys get the same list, so each distinct one is
    # ranked once ([distinct profiles, n_items] scores, not [users, n_items]: 16k validation users x
    # 62k items would be 8 GB at ML-25M size)
    keys = [tuple(sorted(profile_keys(profiles[u]).items())) for u in val_users.tolist()]
    first: dict[tuple[tuple[str, str], ...], int] = {}  # profile -> its first validation user's row
    for r, k in enumerate(keys):
        first.setdefault(k, r)
    pos = {k: i for i, k in enumerate(first)}
    row = np.array([pos[k] for k in keys], dtype=np.int64)
    distinct = [profiles[int(val_users[r])] for r in first.values()]
    no_items = [np.zeros(0, np.int64)] * len(distinct)
    pop = _score(np.tile(_top(_popular_scores(fit)[None, :], no_items[:1], KMAX), (len(val_users), 1)), truth)
    base = _segment_base(fit)
    tried: list[tuple[dict[str, Any], dict[str, Any]]] = []
    for point in grid:
        seg = base.with_params(**point)
        tried.append((dict(point), _score(_top(seg.scores_many(distinct), no_items, KMAX)[row], truth)))
    best_params, best = max(tried, key=lambda pr: pr[1]["ndcg@10"])
    d = best["_units"]["ndcg@10"] - pop["_units"]["ndcg@10"]
    est, lo, hi = paired_bootstrap_ci([d], seed=seed)
    personal = bool(lo > 0)
    return {
        "model": "segment" if personal else "popular",
        "personal": personal,
        "params": best_params,
        "validation": {
            "n_users": int(pop["n_users"]),
            "popular": pop["ndcg@10"],
            "segment": best["ndcg@10"],
            "diff": est,
            "ci95": [lo, hi],
            "grid": [[p, r["ndcg@10"]] for p, r in tried],
        },
        "reason": (
            "segment popularity beats global popularity on validation users"
            if personal
            else "a profile does not beat global popularity on validation users"
        )
        + f": NDCG@10 {best['ndcg@10']:.4f} vs {pop['ndcg@10']:.4f}, difference 95% CI [{lo:.4f}, {hi:.4f}]",
    }


# ----------------------------------------------------------------------------- pipeline variants
#: a pipeline variant: (history sources, weight of the popular source)
Variant = tuple[tuple[str, ...], float]


def _variants(names: Sequence[str], popular_weights: Sequence[float] = (1.0,)) -> dict[str, Variant]:
    base: dict[str, tuple[str, ...]] = {n: (n,) for n in names}
    collab = tuple(n for n in names if n not in _CONTENT)
    if 1 < len(collab) < len(names):
        base["collaborative"] = collab  # the collaborative sources together (the served default's kind)
    if len(names) > 1:
        base["all"] = tuple(names)
    return {
        (v if w == 1.0 else f"{v}+popular x{w:g}"): (srcs, float(w))
        for w in popular_weights
        for v, srcs in base.items()
    }


def _fit_retrievers(train: Dataset, names: Sequence[str], progress: Callable[[str], None]) -> dict[str, Any]:
    from recstack.models.registry import create

    fitted: dict[str, Any] = {}
    for n in names:
        progress(f"fit {n}")
        t0 = time.perf_counter()
        # content models: no ONNX query encoder (the pipeline scores histories, it does not search)
        params = {"export_onnx": False} if n in _CONTENT else {}
        fitted[n] = create(n, **params).fit(train)
        log.info("cold-users: fitted %s in %.1f s", n, time.perf_counter() - t0)
    return fitted


def _pipeline(
    train: Dataset,
    retrievers: dict[str, Any],
    sources: Sequence[str],
    policy: dict[str, Any],
    popular_weight: float = 1.0,
) -> Any:
    """The serving pipeline over an in-memory release of ``retrievers`` with history sources
    ``sources`` plus ``popular`` (weight ``popular_weight``; no ranker: the recall order)."""
    from recstack.serving._release import MemoryRelease
    from recstack.serving.pipeline import Pipeline, PipelineConfig, SourceConfig

    srcs = [SourceConfig(name=s, kind="history", quota=200, recent=50) for s in sources]
    srcs.append(SourceConfig(name="popular", kind="popular", quota=100, weight=popular_weight))
    rel = MemoryRelease(
        id="cold-users", dataset=train, retrievers={s: retrievers[s] for s in sources}, cold_start=policy
    )
    return Pipeline(rel, PipelineConfig(sources=tuple(srcs), k_max=max(100, KMAX)))


def _pipeline_ids(
    pipe: Any, dataset: Dataset, given: Sequence[IntArray], profiles: Sequence[Any] | None
) -> IntArray:
    """Top `KMAX` item indices [n, KMAX] (-1 padded) the pipeline returns for each visitor."""
    from recstack.serving.pipeline import RecRequest

    ext = dataset.item_vocab
    out = np.full((len(given), KMAX), -1, dtype=np.int64)
    for r, g in enumerate(given):
        req = RecRequest(
            liked_items=ext.external(g) if len(g) else None,
            profile=(profiles[r] or None) if profiles is not None else None,
            k=KMAX,
        )
        res = pipe.recommend(req)
        out[r, : len(res.items)] = res.items
    return out


def _liked_conditions(
    dataset: Dataset,
    train: Dataset,
    users: IntArray,
    retrievers: dict[str, Any],
    variants: dict[str, Variant],
    givens: Sequence[int],
    policy: dict[str, Any],
) -> dict[str, dict[str, dict[str, Any]]]:
    """Per ``liked_n`` condition, per model (``popular`` and each pipeline variant) the `_score`."""
    hist = _per_user(dataset, users)
    pop = _popular_scores(train)
    out: dict[str, dict[str, dict[str, Any]]] = {}
    pipes = {v: _pipeline(train, retrievers, srcs, policy, w) for v, (srcs, w) in variants.items()}
    for n in givens:
        given, truth = _given_and_truth(hist, users, n, dataset.n_items)
        res = {"popular": _score(_top(np.tile(pop, (len(users), 1)), given, KMAX), truth)}
        for v, pipe in pipes.items():
            res[v] = _score(_pipeline_ids(pipe, train, given, None), truth)
        out[f"liked_{n}"] = res
    return out


# ------------------------------------------------------------------------------------- protocol
def run_cold_users(
    dataset: Dataset,
    model_names: Sequence[str],
    *,
    seed: int = 42,
    share: float = SHARE,
    givens: Sequence[int] = GIVENS,
    popular_weights: Sequence[float] = (1.0,),
) -> dict[str, Any]:
    """The ``cold-users`` protocol (module docstring). ``model_names``: the retrievers of the liked
    conditions' pipeline variants (``itemknn``, ``ease``, ``content``...); ``popular_weights``: each
    variant also with the popular source at these weights (the merged score's share of popularity).
    Returns ``{"dataset",
    "protocol", "seed", "share", "n_test_users", "demographics", "validation": {"profile": the
    `choose_profile_model` result on the training users, "pipelines": {variant: {liked_n: ndcg@10}},
    "chosen_pipeline"}, "conditions": {"profile" | "liked_n": {"models": {name: {"ndcg@10",
    "recall@20", "n_users"}}, "comparisons": [{"a": "popular", "b", "metric", "diff", "ci95"}]}},
    "verdict": {...}}``."""
    names = [n for n in model_names if n != "pop"]
    train, test_users = cold_user_split(dataset, share=share, seed=seed, givens=givens)
    variants = _variants(names, popular_weights)
    demo = has_demographics(dataset.users)
    out: dict[str, Any] = {
        "dataset": dataset.name,
        "protocol": "cold-users",
        "seed": seed,
        "share": share,
        "givens": list(givens),
        "n_test_users": len(test_users),
        "n_train_users": int(distinct(train.interactions["user"].to_numpy()).size),
        "demographics": demo,
        "validation": {},
        "conditions": {},
    }
    steps = 2 * len(names) + 4
    with progress_bar() as prog:
        task = prog.add_task("evaluate cold-users", total=steps, status="")

        def step(status: str) -> None:
            prog.update(task, advance=1, status=status)

        # -- validation: carved out of the training users, models fitted on the other training users
        prog.update(task, status="profile model on validation users")
        policy = choose_profile_model(train, share=share, seed=seed)
        out["validation"]["profile"] = policy
        step("profile model chosen")
        chosen = None
        if names:
            fit, val_users = cold_user_split(train, share=share, seed=seed + 1, givens=givens)
            val_retr = _fit_retrievers(fit, names, lambda s: step(f"validation: {s}"))
            val = _liked_conditions(train, fit, val_users, val_retr, variants, givens, policy)
            del val_retr
            table = {v: {c: r[v]["ndcg@10"] for c, r in val.items()} for v in variants}
            table["popular"] = {c: r["popular"]["ndcg@10"] for c, r in val.items()}
            out["validation"]["pipelines"] = table
            out["validation"]["n_users"] = len(val_users)
            chosen = max(variants, key=lambda v: float(np.mean(list(table[v].values()))))
            out["validation"]["chosen_pipeline"] = chosen
        step("validation done")

        # -- test: fitted on all training users, scored once
        retr = _fit_retrievers(train, names, lambda s: step(f"test: {s}"))
        if demo:
            prog.update(task, status="profile condition")
            hist = _per_user(dataset, test_users)
            given, truth = _given_and_truth(hist, test_users, 0, dataset.n_items)
            profiles = user_profiles(dataset.users, dataset.n_users)
            tprof = [profiles[u] for u in test_users.tolist()]
            seg = _segment_base(train).with_params(**policy["params"])
            models = {
                "popular": _score(
                    _top(np.tile(_popular_scores(train), (len(test_users), 1)), given, KMAX), truth
                ),
                "segment": _score(_top(seg.scores_many(tprof), given, KMAX), truth),
            }
            served = _pipeline(train, {}, (), policy)
            models["served"] = _score(_pipeline_ids(served, train, given, tprof), truth)
            out["conditions"]["profile"] = {
                "models": _strip(models),
                "comparisons": _compare(models, "popular", seed),
            }
        step("profile condition")
        if names:
            liked = _liked_conditions(dataset, train, test_users, retr, variants, givens, policy)
            for c, models in liked.items():
                out["conditions"][c] = {
                    "models": _strip(models),
                    "comparisons": _compare(models, "popular", seed),
                }
        step("liked conditions")
    out["verdict"] = {
        "profile_personal": bool(policy["personal"]),
        "profile_reason": policy["reason"],
        "liked_pipeline": chosen,
    }
    return out


def cold_users_protocol(dataset: Dataset, model_names: Sequence[str], opts: Any) -> dict[str, Any]:
    """`recstack.evaluation.run_protocol`'s form of `run_cold_users` (``results``: per model, the test
    figures of every condition as ``"<condition>:ndcg@10"``...)."""
    body = run_cold_users(dataset, model_names, seed=int(opts.seed))
    results: dict[str, dict[str, Any]] = {}
    for cond, block in body["conditions"].items():
        for model, res in block["models"].items():
            for metric in ("ndcg@10", f"recall@{KMAX}"):
                results.setdefault(model, {})[f"{cond}:{metric}"] = res[metric]
    return {k: v for k, v in body.items() if k not in ("dataset", "protocol", "seed")} | {"results": results}


def format_cold_users(result: dict[str, Any]) -> list[str]:
    """Plain lines of a cold-users result: per condition, each model's NDCG@10 / Recall@20 and its
    difference from popular with the 95% CI; then the verdict."""
    lines = [
        f"cold-users on {result.get('dataset', '?')}: {result['n_test_users']} held-out users "
        f"({result['n_train_users']} training users), seed {result.get('seed')}"
    ]
    for cond, block in result["conditions"].items():
        cmp = {(c["b"], c["metric"]): c for c in block["comparisons"]}
        lines.append(f"  {cond}:")
        for model, res in block["models"].items():
            line = f"    {model:<12} ndcg@10 {res['ndcg@10']:.4f}  recall@{KMAX} {res[f'recall@{KMAX}']:.4f}"
            c = cmp.get((model, "ndcg@10"))
            if c is not None:
                lo, hi = c["ci95"]
                line += f"  vs popular ndcg@10 {c['diff']:+.4f} [{lo:+.4f}, {hi:+.4f}]"
            lines.append(line)
    v = result["verdict"]
    lines.append(
        f"  profile: {'personal' if v['profile_personal'] else 'NOT personal'} ({v['profile_reason']})"
    )
    if v.get("liked_pipeline"):
        lines.append(f"  liked items: pipeline variant {v['liked_pipeline']!r} chosen on validation")
    return lines
