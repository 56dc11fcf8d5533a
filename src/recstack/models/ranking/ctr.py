"""The ``ctr`` protocol: click-through-style prediction of explicit ratings.

Split: a seeded random 8:1:1 of the interactions (train / validation / test); rating >= 4 is a positive,
rating <= 2 a negative, rating 3 is dropped. Rows carry the user and item categorical features and
dense item / user statistics computed on the train part only (popularity, mean ratings, activity,
user-genre affinity against the item's genres, the item's genres). Each ranker is trained pointwise
(BCE) with early stopping on validation AUC; a logistic-regression baseline is always reported beside
them. Metrics: AUC and logloss on the test part.

Model names: ``two_stage:<ranker>`` (the ranker of that two-stage model) or a bare ranker name
(``ncf``, ``widedeep``, ``deepfm``, ``dnn``, ``lr``). Retrieval-only models are skipped.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import polars as pl
import scipy.sparse as sp

from recstack.data.dataset import Dataset
from recstack.features.tables import build_features, user_genre_affinity
from recstack.models.ranking._base import RankingData, auc
from recstack.models.ranking.two_stage import RANKERS, ranker_class

__all__ = ["ctr_data", "logloss", "run_ctr"]


def logloss(label: npt.ArrayLike, prob: npt.ArrayLike, eps: float = 1e-15) -> float:
    """Mean binary cross-entropy (natural log) of probabilities."""
    y = np.asarray(label, dtype=np.float64)
    p = np.clip(np.asarray(prob, dtype=np.float64), eps, 1 - eps)
    return float(-(y * np.log(p) + (1 - y) * np.log(1 - p)).mean())


def ctr_data(dataset: Dataset, seed: int = 42) -> tuple[RankingData, RankingData, RankingData]:
    """(train, validation, test) rows of the ``ctr`` protocol; features from the train part only."""
    inter = dataset.interactions
    perm = np.random.default_rng(seed).permutation(inter.height)
    n_tr, n_va = round(0.8 * inter.height), round(0.1 * inter.height)
    part = np.empty(inter.height, dtype=np.int8)
    part[perm[:n_tr]], part[perm[n_tr : n_tr + n_va]], part[perm[n_tr + n_va :]] = 0, 1, 2
    train_inter = inter.filter(pl.Series(part == 0))
    feats = build_features(dataset, train_inter)
    hist = sp.csr_matrix(
        (
            np.ones(train_inter.height, dtype=np.float32),
            (train_inter["user"].to_numpy(), train_inter["item"].to_numpy()),
        ),
        shape=(dataset.n_users, dataset.n_items),
    )
    hist.data[:] = 1.0
    aff = user_genre_affinity(hist, feats.genres)
    cards = [
        feats.n_users + 1,
        feats.n_items + 1,
        *feats.user_cardinalities(),
        feats.cardinality("year_bucket"),
    ]
    out = []
    for k in range(3):
        sel = inter.filter(pl.Series(part == k)).filter(pl.col("rating") != 3.0)
        u = sel["user"].to_numpy().astype(np.int64)
        i = sel["item"].to_numpy().astype(np.int64)
        label = (sel["rating"].to_numpy() >= 4).astype(np.float32)
        cat = np.column_stack([u + 1, i + 1, feats.users_cat[u], feats.year_bucket[i]]).astype(np.int64)
        g = feats.genres[i]
        dense = np.column_stack(
            [
                feats.popularity[i],
                feats.item_mean_rating[i],
                feats.activity[u],
                feats.user_mean_rating[u],
                (g * aff[u]).sum(axis=1) / np.maximum(g.sum(axis=1), 1.0),
                g,
            ]
        ).astype(np.float32)
        out.append(RankingData(cat, dense, label, None, cards))
    return out[0], out[1], out[2]


def run_ctr(dataset: Dataset, model_names: Sequence[str], opts: Any) -> dict[str, Any]:
    """Protocol function for `recstack.evaluation.protocols.register_protocol` (``opts.seed``)."""
    seed = int(getattr(opts, "seed", 42))
    tr, va, te = ctr_data(dataset, seed)
    wanted: list[tuple[str, str]] = []
    for name in model_names:
        ranker = name.split(":", 1)[1] if ":" in name else name
        if ranker in RANKERS:
            wanted.append((name, ranker))
    if not any(r == "lr" for _, r in wanted):
        wanted.append(("lr", "lr"))
    results: dict[str, Any] = {}
    for name, ranker in wanted:
        t0 = time.perf_counter()
        model = ranker_class(ranker)(loss="bce", batch_size=1024, epochs=20, patience=3, seed=seed)
        model.fit(dataset, tr, validation=va)
        fit_s = time.perf_counter() - t0
        logit = model.score({"cat": te.cat, "dense": te.dense})
        prob = 1.0 / (1.0 + np.exp(-logit.astype(np.float64)))
        results[name] = {
            "auc": auc(te.label, logit),
            "logloss": logloss(te.label, prob),
            "val_auc": float(model.fit_result.get("best_val", float("nan"))),
            "fit_seconds": fit_s,
            "params": model.config.dump_config(),
            "n_test": len(te.label),
        }
    skipped = [n for n in model_names if n not in results]
    return {"results": results, "skipped": skipped, "positive_rate": float(tr.label.mean())}
