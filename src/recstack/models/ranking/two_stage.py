"""Two-stage recommender: recall (union of several retrievers' top-N) -> neural ranker -> top-k.

Training, the industrial way:

1. hold out part of the training data (``holdout="random"``: a random ``holdout_fraction`` of each
   user's interactions, like ``stratified``; ``"temporal"``: the latest ``holdout_fraction`` of the
   interactions by time, like ``temporal``);
2. fit the retrievers on the rest, recall candidates for the users of the held-out part and label them
   (positive = the user then interacted with the item; negatives = the other recalled candidates plus
   ``random_negatives`` random items);
3. train the ranker on those lists (early stopping and the ranker's hyperparameters chosen on a
   validation share of the users, NDCG@10); the lists' feature arrays are written to ``.npy`` memmaps in
   a scratch directory 256 users at a time and read a mini-batch at a time (`RankingStore`,
   ``ranker_data``), so that their size (folds x up to ``max_holdout_users`` lists x candidates x
   features) is not held in memory;
4. refit the retrievers on the whole training data for serving.

Features of a (user, candidate) row (see `CandidateFeaturizer`): per source the score standardised
over the user's candidate list, the rank among all items (as 1 / log2(rank + 2)) and a recall flag; the
number of sources that recalled the item; item popularity, mean rating, genres; user activity, mean
rating; user-genre affinity against the item's genres; when the data has timestamps, the time context of
`FeatureTables.time_features` (the item's popularity inside the user's active window, and the item's age
at the user's last activity). Categorical: user id, item id, age bucket,
gender, occupation, zip prefix, year bucket.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import polars as pl
import scipy.sparse as sp
from pydantic import Field

from recstack._progress import progress_bar
from recstack.config import ComponentConfig
from recstack.data.dataset import Dataset
from recstack.errors import ArtifactError, InvalidArgumentError, NotFittedError
from recstack.features.tables import (
    NO_GENRE,
    FeatureTables,
    TimeWindows,
    build_features,
    user_genre_affinity,
)
from recstack.models.base import Retriever
from recstack.models.ranking._base import (
    BLOCK_ROWS,
    NeuralRanker,
    RankerConfig,
    RankingData,
    RankingStore,
    ndcg_per_list,
    release,
)
from recstack.models.ranking._text import ItemText
from recstack.models.ranking.ensemble import RankerEnsemble
from recstack.models.retrieval._arrays import load_array
from recstack.text.encoder import TextEncoderConfig

__all__ = ["RANKERS", "CandidateFeaturizer", "TwoStage", "TwoStageConfig", "UserState", "ranker_class"]

log = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float32]
IntArray = npt.NDArray[np.int64]

RANKERS: dict[str, str] = {
    "ncf": "recstack.models.ranking.ncf:NCF",
    "widedeep": "recstack.models.ranking.widedeep:WideDeep",
    "deepfm": "recstack.models.ranking.deepfm:DeepFM",
    "dnn": "recstack.models.ranking.mlp:DNN",
    "lr": "recstack.models.ranking.widedeep:LogisticRegression",
}


def ranker_class(name: str) -> type[NeuralRanker]:
    import importlib

    if name not in RANKERS:
        raise InvalidArgumentError(f"unknown ranker {name!r}; choose from {', '.join(RANKERS)}")
    module, cls = RANKERS[name].split(":")
    klass: type[NeuralRanker] = getattr(importlib.import_module(module), cls)
    return klass


class TwoStageConfig(ComponentConfig):
    """``sources``: retrievers of the recall stage (registry names); ``source_params`` overrides their
    configs; ``per_source``: top-N taken from each (the union is the candidate list, ~210 on ML-100K);
    ``ranker_grid``: ranker hyperparameter points tried, the best on validation NDCG@10 is kept;
    ``holdout_folds`` holdouts (seeds seed, seed + 1, ...) each give one labelled list per user."""

    ranker: Literal["ncf", "widedeep", "deepfm", "dnn", "lr"] = "deepfm"
    # sources / per_source / holdout_folds / holdout_fraction: the best point of bench_neural.py's validation
    # grid (stratified, validation carved from train; NDCG@10 of two_stage:ncf). Single seed: 5 sources
    # 0.2628, + window_pop 0.2643, + rp3beta 0.2650, holdout_fraction 0.2 / 0.25 0.2642 / 0.2648, both
    # (this point) 0.2647, EASE l2 300 / 800 / 1200 inside the sources 0.2601 / 0.2621 / 0.2629 (500 kept),
    # 150 per source and 3 folds 0.2634. Points within seed noise were re-run at seeds 42, 142, 242 and
    # chosen on the mean (tuning_seeds): this point 0.2650 +- 0.0009, holdout_fraction 0.25 alone
    # 0.2645, + rp3beta alone 0.2636, the previous default (6 sources, 10% holdout) 0.2625 +- 0.0018.
    # More folds (more labelled lists, same ranker; tuning_ranker, seeds 42 / 142 / 242): 2 folds
    # 0.2661 +- 0.0020, 3 folds 0.2643 +- 0.0025, 4 folds 0.2625 +- 0.0029. The time-aware sources
    # (tuning_ranker, five seeds 42 .. 442): time_ease and seqknn in place of ease and itemknn (this
    # default) 0.2707 +- 0.0035; the previous sources (ease, itemknn) 0.2674 +- 0.0041; time_ease in
    # place of ease 0.2694 +- 0.0037; added to them: + time_ease 0.2689 +- 0.0033, + seqknn 0.2684 +-
    # 0.0018, both 0.2696 +- 0.0026 (all on stratified validation).
    # Issue 19, forward in time (bench_temporal.py part validate: temporal-rolling validation carved from
    # the training period, the last 5% of the 75% of ML-100K before the first test window, warm NDCG@10
    # over 38 users): the sources above with random holdouts 0.0864; trending + genre_trending in place of
    # pop and ranker lists labelled forward in time (holdout temporal) 0.0962; the same without two_tower
    # (this default) 0.1699; recent_pop 0.1522. The two-tower source costs two thirds of the fit time.
    sources: tuple[str, ...] = (
        "time_ease",
        "als",
        "seqknn",
        "trending",
        "genre_trending",
        "window_pop",
        "rp3beta",
    )
    source_params: dict[str, dict[str, Any]] = Field(
        default_factory=lambda: {
            # a cheaper two-tower inside the recall stage (it is fitted once per fold and once on all);
            # 6 epochs against 3: 0.2674 +- 0.0041 against 0.2663 +- 0.0018; 10: 0.2664 +- 0.0035
            # (tuning_ranker, five seeds)
            "two_tower": {"epochs": 6, "val_fraction": 0.0, "max_history": 32, "hidden": 128},
            # the ALS point the baselines' validation tuning chose on `stratified`
            "als": {"regularization": 30.0, "alpha": 5.0},
            # time_ease's l2 inside the recall stage (tuning_ranker, five seeds): 400 0.2709 +- 0.0029,
            # 200 (time_ease's own validation point) 0.2707 +- 0.0035, 100 0.2696 +- 0.0022
            "time_ease": {"l2": 400.0},
            # the content retrievers as recall sources (issue 21): the release's own ``content`` model
            # carries the query encoder that search needs
            "content": dict[str, Any](export_onnx=False),
        }
    )
    per_source: int = 100
    #: how the lists the ranker learns from are labelled: ``random`` holdouts of each user's interactions,
    #: or ``temporal``: forward in time (with F folds, fold f fits the sources on everything before the
    #: f-th of F windows cut from the latest ``holdout_fraction`` of the data, and labels that window);
    #: ``mixed``: even folds random, odd folds the latest ``holdout_fraction`` of the data; ``user_latest``:
    #: each user's latest ``holdout_fraction`` of their own interactions (the same cut in every fold)
    holdout: Literal["random", "temporal", "mixed", "user_latest"] = "temporal"
    # the share of each user's training interactions held out to label candidate lists (the test holds 25%)
    holdout_fraction: float = 0.25
    holdout_folds: int = Field(default=2, ge=1)
    #: labelled lists per holdout fold: above this many eligible users a uniform sample of them (the
    #: ranker's training data is about users x candidates x features values: 10,000 users x 2 folds x
    #: ~700 candidates x ~80 features is ~5 GB, on disk with ``ranker_data="disk"``); ML-100K /
    #: ml-latest-small are below it
    max_holdout_users: int = Field(default=10_000, ge=1)
    #: where the ranker's training lists live (issue 23): ``disk``: ``.npy`` memmaps in a scratch
    #: directory (`RankingStore`; written block by block, training reads a mini-batch at a time, removed
    #: after the fit, also on failure), ``memory``: arrays in memory. The same lists, the same ranker
    #: (bit for bit: one code path reads both)
    ranker_data: Literal["disk", "memory"] = "disk"
    #: the parent of the scratch directory of ``ranker_data="disk"`` (None: the Ray Train storage
    #: inside `distributed_training`, which every worker reaches, else the system's temporary directory)
    scratch_dir: str | None = None
    # random items added to each list as negatives (tuning_ranker, seeds 42 / 142 / 242): 20 0.2661 +-
    # 0.0020, none 0.2627 +- 0.0019, 50 0.2643 +- 0.0037
    random_negatives: int = 20
    val_users_fraction: float = 0.2
    # ranker_params / ranker_seeds / ranker_mix: bench_neural.py's tuning_ranker grid (stratified
    # validation split, NDCG@10 of two_stage:ncf, mean +- sd over seeds 42 / 142 / 242), chosen with the
    # serving cost held fixed (the served pipeline is CPU-bound and ranking is its largest stage): the
    # best point among single nets of the previous size (hidden 128-64), weight decay 1e-3, 0.2661 +-
    # 0.0020; the previous default 0.2650 +- 0.0009, dropout 0.3 0.2658 +- 0.0010, cosine lr 0.2656 +-
    # 0.0022, average of the best 3 epochs 0.2651 +- 0.0008, batch 32 lists 0.2645 +- 0.0007. Costlier
    # points were within one sd of it: hidden 256-128 + dropout 0.3 0.2669 +- 0.0011 (1.7x the ranking
    # time), hidden 256-128 alone 0.2661 +- 0.0026; ensembles (about 3x): ncf x 3 seeds 0.2656 +-
    # 0.0008, ncf + dnn + widedeep 0.2662 +- 0.0002 (with weight decay 1e-3 0.2665 +- 0.0009), ncf x 3
    # bagged over validation users 0.2645 +- 0.0012
    ranker_params: dict[str, Any] = Field(default_factory=lambda: {"weight_decay": 1e-3})
    # id features lost on validation in every ML-100K run (0.1783 vs 0.1729 NDCG@10 on the holdout
    # lists); add {"id_features": True} here to let validation choose again
    ranker_grid: tuple[dict[str, Any], ...] = ({"id_features": False},)
    #: an ensemble ranker (`RankerEnsemble`: one ONNX graph, its serving cost the members' summed):
    #: ``ranker_seeds`` nets (seeds seed, seed + 1, ...) of each architecture of (``ranker``,
    #: *``ranker_mix``), their logits standardised and averaged; 1 and () = the single ``ranker`` net
    ranker_seeds: int = Field(default=1, ge=1)
    ranker_mix: tuple[Literal["ncf", "widedeep", "deepfm", "dnn", "lr"], ...] = ()
    #: ensemble only: member i is early-stopped on its own block of validation users (the i-th
    #: ``val_users_fraction`` of a permutation, cyclic) and trained on the others (bagging over users)
    ranker_bagging: bool = False
    #: single net only: after validation picked the point and its best epoch, train that point again
    #: for that many epochs on every list, the validation users' too (no early stopping). Off: 0.2658
    #: +- 0.0014 against 0.2664 +- 0.0003 (tuning_ranker, seeds 42 / 142 / 242)
    refit_all: bool = False
    #: after the ranker is trained, fit the recall sources again on the whole training data for serving
    #: (they then know the latest ``holdout_fraction`` of it). False: serve the last holdout fold's
    #: sources, the ones the ranker's lists came from; it saves one fit of every source, but they miss
    #: the newest items and interactions: NDCG@10 0.159 against 0.194 refitted on a 200k synthetic set
    refit_sources: bool = True
    #: dense features held at 0, by name or name prefix of `CandidateFeaturizer.dense_names` (feature
    #: ablations: ``["local_popularity", "item_age"]``, ``["genre_", "affinity"]``, ``["two_tower_"]``)
    ablate: tuple[str, ...] = ()
    #: the order of users without history (cold start; also the order below the candidates): all-time
    #: popularity (``pop``), the last 30 days' (``recent_pop``), decayed with a 14-day half-life
    #: (``trending``), or ``auto``: the one of them with the best NDCG@10 on the holdout folds' cold users
    #: (users first seen in a fold's labelled part; ``holdout="temporal"`` has them). Without such users:
    #: ``pop`` for ``holdout="random"`` (a world without time, as before issue 19), else ``trending``
    cold_order: Literal["auto", "pop", "recent_pop", "trending"] = "auto"
    seed: int = 42
    # ---- issue 21: text features (`recstack.models.ranking._text.ItemText`) -------------------------
    #: add the item text embeddings' features to the ranker's rows: ``text_cos`` (the candidate's cosine
    #: with the user's text profile) and ``text_components`` principal components of the candidate's
    #: embedding (`ItemText`); the embeddings come from `recstack.text.embed_items` (``text_encoder``,
    #: cached on disk in ``text_cache_dir``; None: ``RECSTACK_TEXT_CACHE`` or ``<home>/cache/text``)
    text_features: bool = False
    text_components: int = Field(default=8, ge=0, le=64)
    text_encoder: TextEncoderConfig = Field(default_factory=TextEncoderConfig)
    text_cache_dir: str | None = None


@dataclass
class _Candidates:
    items: IntArray  # [n, L] candidate item indices, -1 padding
    cat: IntArray  # [n, L, C]
    dense: FloatArray  # [n, L, D]
    mask: npt.NDArray[np.bool_]  # [n, L]


@dataclass
class _FoldPlan:
    """The users a holdout fold labels (ascending), their random negatives, and (until the fold is
    built) the holdout's parts (A: the sources learn from it, B: it labels the lists)."""

    users: IntArray
    extra: list[IntArray]
    parts: tuple[Dataset, Dataset] | None


@dataclass
class UserState:
    """The user side of `CandidateFeaturizer._features` for n users (`CandidateFeaturizer.user_state`):
    the sources' scores [S, n, n_items] (history items -inf), their mean / std [S, n, 1] (float64)
    over the list the z-scores standardise over, and optionally every item's stable rank
    [S, n, n_items]; activity / mean rating [n], genre affinity [n, G], categorical codes [n, C] and
    ids [n]; the user side of the time context (`FeatureTables.user_windows`)."""

    users: IntArray | None
    scores: FloatArray
    mu: npt.NDArray[np.float64]
    sd: npt.NDArray[np.float64]
    act: FloatArray
    umean: FloatArray
    aff: FloatArray
    ucat: IntArray
    uid: IntArray
    ranks: npt.NDArray[np.integer[Any]] | None = None
    windows: TimeWindows | None = None
    #: [n, d] the users' text profiles (`ItemText.profiles`) when the ranker has text features
    text_profile: FloatArray | None = None


class CandidateFeaturizer:
    """Recall + feature rows for users, from fitted sources and feature tables."""

    def __init__(
        self,
        sources: dict[str, Retriever],
        features: FeatureTables,
        per_source: int,
        ablate: tuple[str, ...] = (),
        text: ItemText | None = None,
    ) -> None:
        self.sources = sources
        self.features = features
        self.per_source = per_source
        self.ablate = tuple(ablate)
        #: the item text features (issue 21), None when the ranker has none
        self.text = text
        names = self.dense_names()
        unknown = [a for a in self.ablate if not any(n == a or n.startswith(a) for n in names)]
        if unknown:
            raise InvalidArgumentError(f"ablate {unknown}: no such dense feature; features are {names}")
        #: dense columns held at 0 (feature ablations: names or name prefixes of `dense_names`)
        self._ablated = np.array(
            [j for j, n in enumerate(names) if any(n == a or n.startswith(a) for a in self.ablate)], np.int64
        )

    @property
    def cat_cards(self) -> list[int]:
        f = self.features
        return [f.n_users + 1, f.n_items + 1, *f.user_cardinalities(), f.cardinality("year_bucket")]

    def dense_names(self) -> list[str]:
        names = []
        for s in self.sources:
            names += [f"{s}_z", f"{s}_rank", f"{s}_flag"]
        names += ["n_sources", "popularity", "item_mean_rating", "activity", "user_mean_rating", "affinity"]
        if self.features.has_time:
            names += ["local_popularity", "item_age"]
        genres = self.features.genre_columns  # one per column of `features.genres` (`rows`)
        names += [f"genre_{g}" for g in genres]
        # the user's genre shares (user columns: computed once per request when served); validation
        # (tuning_ranker, seeds 42 / 142 / 242): 0.2664 +- 0.0003, held at 0 0.2648 +- 0.0026
        names += [f"user_genre_{g}" for g in genres]
        # per source, how its scores spread for the user: log of their sd over the list, z of the top
        # (user columns); validation: 0.2668 +- 0.0016, held at 0 0.2638 +- 0.0026; at five seeds (42 ..
        # 442) both groups 0.2663 +- 0.0018, genre shares only 0.2638 +- 0.0031, neither 0.2625 +-
        # 0.0036. The largest item-kNN similarity of the item to one of the user's items (a pair
        # column) lost at five seeds: 0.2647 +- 0.0037 (held at 0: 0.2647). The user's taste
        # (mean popularity / item rating of the history, year-bucket affinity, popularity gap) lost:
        # 0.2647 +- 0.0021
        for src in self.sources:
            names += [f"uscore_{src}_logsd", f"uscore_{src}_topz"]
        if self.text is not None:  # issue 21: text features, last
            names += self.text.names()
        return names

    def column_scopes(self) -> tuple[list[str], list[str]]:
        """What each column of a feature row depends on: ``"user"`` (the same for every item of a
        user), ``"item"`` (the same for every user) or ``"pair"`` (both); for the dense columns (the
        order of `dense_names`) and the categorical ones (the order of `cat_cards`). Serving builds a
        memoised user's pair columns for every item once and then only gathers rows."""
        f = self.features
        dense = ["pair"] * (3 * len(self.sources))
        dense += ["pair", "item", "item", "user", "user", "pair"]  # n_sources .. affinity
        dense += ["pair", "pair"] if f.has_time else []  # local popularity, item age
        dense += ["item"] * f.n_genres
        dense += ["user"] * f.n_genres
        dense += ["user"] * (2 * len(self.sources))
        dense += self.text.scopes() if self.text is not None else []
        cat = ["user", "item", *["user"] * f.users_cat.shape[1], "item"]
        return dense, cat

    def source_scores(self, history: sp.csr_matrix, users: IntArray | None) -> list[FloatArray]:
        """Each source's scores [n, n_items] float32 for the users (``users`` dense indices, or None
        for users given only by their ``history`` rows); the history items are set to -inf."""
        hist = sp.csr_matrix(history)
        ex = hist.tocoo()
        mats: list[FloatArray] = []
        for src in self.sources.values():
            s = np.array(
                src.score_users(users) if users is not None else src.score_history(hist), dtype=np.float32
            )
            s[ex.row, ex.col] = -np.inf
            mats.append(s)
        return mats

    def recalled(self, mats: list[FloatArray]) -> npt.NDArray[np.bool_]:
        """[n_sources, n, n_items] True where an item is in a source's top ``per_source`` (ties: the
        lower item index first, as a stable sort by descending score; -inf items never)."""
        return np.stack([_stable_top(s, self.per_source) for s in mats])

    def build(
        self,
        history: sp.csr_matrix,
        users: IntArray | None,
        extra: list[IntArray] | None = None,
    ) -> _Candidates:
        """Candidates for n users given by ``history`` [n, n_items] (and their dense indices ``users``,
        or None for anonymous users): the union of the sources' top ``per_source`` minus the history;
        ``extra[r]`` items are appended to user r's list (random negatives). Returns padded arrays,
        features from `features_for`."""
        n = history.shape[0]
        hist = sp.csr_matrix(history)
        mats = self.source_scores(hist, users)
        flags = self.recalled(mats)
        recalled: npt.NDArray[np.bool_] = np.asarray(flags.any(axis=0))
        if extra is not None:
            for r_, extra_items in enumerate(extra):
                recalled[r_, extra_items] = True
        recalled &= ~(hist.toarray() > 0)
        counts = recalled.sum(axis=1)
        L = max(int(counts.max()) if n else 1, 1)
        items = np.full((n, L), -1, dtype=np.int64)
        for r_ in range(n):
            c = np.flatnonzero(recalled[r_])
            items[r_, : len(c)] = c
        cat, dense, mask = self._features(hist, users, mats, items, items, flags)
        return _Candidates(items, cat, dense, mask)

    def features_for(
        self,
        history: sp.csr_matrix,
        users: IntArray | None,
        items: IntArray,
        *,
        standardise_over: Literal["items", "recall"] = "items",
    ) -> tuple[IntArray, FloatArray, npt.NDArray[np.bool_]]:
        """Ranker inputs for GIVEN candidates: ``items`` [n, L] item indices (-1 = padding) of the n
        users given by ``history`` [n, n_items] (binary) and ``users`` (dense indices, or None for
        new users) -> (cat [n, L, C] int64, dense [n, L, D] float32, mask [n, L] bool).

        The per-source score features are standardised over each user's list: the given ``items``
        (``standardise_over="items"``, what `build` trains on), or the model's own recall list (the
        union of the sources' top ``per_source`` minus the history, what `TwoStage` scores at
        inference), so that any candidate list gets the scores TwoStage gives the same items."""
        hist = sp.csr_matrix(history)
        items = np.asarray(items, dtype=np.int64).reshape(hist.shape[0], -1)
        mats = self.source_scores(hist, users)
        norm = self.recall_lists(hist, mats) if standardise_over == "recall" else items
        return self._features(hist, users, mats, items, norm, None)

    def recall_lists(self, hist: sp.csr_matrix, mats: list[FloatArray]) -> IntArray:
        """The model's own recall list of each user [n, M] (-1 padded, ascending item index): the union
        of the sources' top ``per_source`` in ``mats`` (`source_scores`) minus the history."""
        recalled = self.recalled(mats).any(axis=0) & ~(hist.toarray() > 0)
        counts = recalled.sum(axis=1)
        norm = np.full((hist.shape[0], max(int(counts.max()) if len(counts) else 1, 1)), -1, np.int64)
        for r_ in range(hist.shape[0]):
            c = np.flatnonzero(recalled[r_])
            norm[r_, : len(c)] = c
        return norm

    def user_state(
        self,
        hist: sp.csr_matrix,
        users: IntArray | None,
        mats: list[FloatArray],
        norm_items: IntArray,
        *,
        full_ranks: bool = False,
    ) -> UserState:
        """The user side of `_features` for the n users of ``hist``: per source the score matrix
        ``mats`` and its mean / std over ``norm_items`` [n, M] (-1 padded); activity, mean rating,
        genre affinity and categorical codes. ``full_ranks``: also the stable rank of every item per
        source (one stable argsort per row; `rows` then gathers ranks instead of searching them), for
        callers that ask for rows of the same users many times (serving). `rows` of the state = the
        rows `_features` returns."""
        n = hist.shape[0]
        f = self.features
        nmask = norm_items >= 0
        nsafe = np.where(nmask, norm_items, 0)
        rows = np.arange(n)[:, None]
        has = nmask.sum(axis=1, keepdims=True) > 0
        cnt = np.maximum(nmask.sum(axis=1, keepdims=True), 1)
        mus: list[npt.NDArray[np.float64]] = []
        sds: list[npt.NDArray[np.float64]] = []
        for s in mats:
            # mean / std of the finite scores (inf -> 0) over the list; 0 / 1 for an empty list
            ns = s[rows, nsafe]
            ns = np.where(nmask & np.isfinite(ns), ns, 0.0)
            mu = ns.sum(axis=1, keepdims=True) / cnt
            sd = np.sqrt((np.where(nmask, ns - mu, 0.0) ** 2).sum(axis=1, keepdims=True) / cnt)
            mus.append(np.where(has, mu, 0.0))
            sds.append(np.where(has & (sd > 1e-9), sd, 1.0))
        if users is not None:
            act = f.activity[users]
            umean = f.user_mean_rating[users]
        else:
            act = np.log1p(np.asarray(hist.sum(axis=1)).ravel()).astype(np.float32)
            umean = np.zeros(n, dtype=np.float32)
        ucat = f.users_cat[users] if users is not None else np.zeros((n, f.users_cat.shape[1]), np.int64)
        uid = users + 1 if users is not None else np.zeros(n, dtype=np.int64)
        return UserState(
            users=users,
            scores=np.stack(mats) if mats else np.zeros((0, n, f.n_items), np.float32),
            mu=np.stack(mus) if mus else np.zeros((0, n, 1)),
            sd=np.stack(sds) if sds else np.ones((0, n, 1)),
            act=act,
            umean=umean,
            aff=user_genre_affinity(hist, f.genres),
            ucat=ucat,
            uid=uid,
            ranks=_all_stable_ranks(np.concatenate(mats)).reshape(len(mats), n, -1)
            if full_ranks and mats
            else None,
            windows=f.user_windows(users, n),
            text_profile=self.text.profiles(hist) if self.text is not None else None,
        )

    def _features(
        self,
        hist: sp.csr_matrix,
        users: IntArray | None,
        mats: list[FloatArray],
        items: IntArray,
        norm_items: IntArray,
        flags: npt.NDArray[np.bool_] | None,
    ) -> tuple[IntArray, FloatArray, npt.NDArray[np.bool_]]:
        """The one feature function of training and serving: rows for ``items`` [n, L] (-1 padded)
        from the source score matrices ``mats``; z-scores use the mean / std over ``norm_items``
        [n, M] (-1 padded); ``flags`` [S, n, n_items] = `recalled` (computed when None)."""
        return self.rows(self.user_state(hist, users, mats, norm_items), items, flags)

    def rows(
        self, state: UserState, items: IntArray, flags: npt.NDArray[np.bool_] | None = None
    ) -> tuple[IntArray, FloatArray, npt.NDArray[np.bool_]]:
        """Feature rows (cat [n, L, C] int64, dense [n, L, D] float32, mask [n, L]) of ``items``
        [n, L] (-1 padded) for the n users of ``state`` (`user_state`); ``flags`` as `_features`."""
        n, L = items.shape
        f = self.features
        mask = items >= 0
        safe = np.where(mask, items, 0)
        rows = np.arange(n)[:, None]
        S = state.scores.shape[0]
        # every source at once: [S, n, L]
        sc = state.scores[:, rows, safe]
        finite = np.isfinite(sc)
        if state.ranks is not None:
            rank = state.ranks[:, rows, safe]
        else:
            rank = np.zeros((S, n, L), np.int64)
            for j, s in enumerate(state.scores):
                rank[j] = _stable_ranks(s, safe)
        # in the top per_source <=> stable rank < per_source (and a finite score)
        flag = flags[:, rows, safe] if flags is not None else (rank < self.per_source) & finite
        # the columns of `dense_names`: per source (z, rank, flag), n_sources, popularity, item mean
        # rating, activity, user mean rating, affinity, [time features], genres, the user's genre shares
        time_parts = f.time_features(state.users, safe, state.windows)
        G = f.n_genres
        n_text = len(self.text.names()) if self.text is not None else 0
        dense = np.empty((n, L, 3 * S + 6 + len(time_parts) + 2 * G + 2 * S + n_text), dtype=np.float32)
        dense[:, :, 0 : 3 * S : 3] = ((np.where(finite, sc, 0.0) - state.mu) / state.sd).transpose(1, 2, 0)
        dense[:, :, 1 : 3 * S : 3] = (1.0 / np.log2(rank.astype(np.float32) + 2.0)).transpose(1, 2, 0)
        dense[:, :, 2 : 3 * S : 3] = flag.transpose(1, 2, 0)
        c = 3 * S
        dense[:, :, c] = flag.sum(axis=0, dtype=np.float32)
        dense[:, :, c + 1] = f.popularity[safe]
        dense[:, :, c + 2] = f.item_mean_rating[safe]
        dense[:, :, c + 3] = state.act[:, None]
        dense[:, :, c + 4] = state.umean[:, None]
        ig = f.genres[safe]  # [n, L, G]
        dense[:, :, c + 5] = (ig * state.aff[:, None, :]).sum(axis=2) / np.maximum(ig.sum(axis=2), 1.0)
        c += 6
        for part in time_parts:
            dense[:, :, c] = part
            c += 1
        dense[:, :, c : c + G] = ig
        dense[:, :, c + G : c + 2 * G] = state.aff[:, None, :]
        c += 2 * G
        if S:
            top = np.max(np.where(np.isfinite(state.scores), state.scores, -np.inf), axis=2, keepdims=True)
            topz = np.where(np.isfinite(top), (top - state.mu) / state.sd, 0.0)  # [S, n, 1]
            dense[:, :, c : c + 2 * S : 2] = np.log(state.sd[:, :, 0]).T[:, None, :]
            dense[:, :, c + 1 : c + 2 * S : 2] = topz[:, :, 0].T[:, None, :]
        c += 2 * S
        if self.text is not None:  # issue 21: the text columns (`ItemText.columns`)
            assert state.text_profile is not None
            dense[:, :, c : c + n_text] = self.text.columns(state.text_profile, safe)
        ucat = state.ucat
        cat = np.empty((n, L, 3 + ucat.shape[1]), dtype=np.int64)
        cat[:, :, 0] = state.uid[:, None]
        cat[:, :, 1] = safe + 1
        cat[:, :, 2:-1] = ucat[:, None, :]
        cat[:, :, -1] = f.year_bucket[safe]
        dense[~mask] = 0.0
        if len(self._ablated):
            dense[:, :, self._ablated] = 0.0
        cat[~mask] = 0
        return np.ascontiguousarray(cat), np.ascontiguousarray(dense), mask


def _stable_top(s: FloatArray, k: int) -> npt.NDArray[np.bool_]:
    """[n, m] True for each row's k best finite scores, ties broken by the lower index (the first k
    of a stable descending sort), in O(m) per row: threshold = the k-th largest value."""
    n, m = s.shape
    kk = min(k, m)
    if kk <= 0 or n == 0:
        return np.zeros((n, m), dtype=bool)
    thr = -np.partition(-s, kk - 1, axis=1)[:, kk - 1 : kk]
    gt = s > thr
    eq = s == thr
    need = kk - gt.sum(axis=1, keepdims=True)
    # the first ``need`` tied items by index; a cumsum only when more items tie than are needed
    ties = eq if bool((eq.sum(axis=1, keepdims=True) <= need).all()) else eq & (np.cumsum(eq, axis=1) <= need)
    sel: npt.NDArray[np.bool_] = (gt | ties) & np.isfinite(s)
    return sel


def _all_stable_ranks(s: FloatArray) -> npt.NDArray[np.integer[Any]]:
    """[n, m] 0-based rank of every item of each row of ``s`` (descending score, ties by the lower
    index: the inverse of a stable argsort of -s; the ranks `_stable_ranks` gives), int16 when m
    allows, else int64. A row holding NaN gets `_stable_ranks`'s ranks (they order NaN otherwise).

    The stable order comes from one (unstable, SIMD) sort of int64 keys (the order-preserving integer
    of -s, zeros made +0.0) << index bits | index: ~4x faster than a stable argsort."""
    n, m = s.shape
    dtype = np.int16 if m <= np.iinfo(np.int16).max else np.int64
    out = np.empty((n, m), dtype=dtype)
    bits = max(int(m - 1).bit_length(), 1)
    if bits <= 31:
        x = (-np.asarray(s, dtype=np.float32) + np.float32(0.0)).view(np.int32).astype(np.int64)
        x = np.where(x < 0, x ^ 0x7FFFFFFF, x) + 2**31  # float order -> integer order in [0, 2**32)
        order = np.sort((x << bits) | np.arange(m, dtype=np.int64), axis=1) & ((1 << bits) - 1)
    else:  # pragma: no cover - more than 2**31 items
        order = np.argsort(-s, axis=1, kind="stable")
    np.put_along_axis(out, order, np.broadcast_to(np.arange(m, dtype=dtype), (n, m)), axis=1)
    nan_rows = np.flatnonzero(np.isnan(s).any(axis=1))
    if len(nan_rows):
        every = np.broadcast_to(np.arange(m, dtype=np.int64), (len(nan_rows), m))
        out[nan_rows] = _stable_ranks(s[nan_rows], np.ascontiguousarray(every))
    return out


def _stable_ranks(s: FloatArray, items: IntArray) -> IntArray:
    """0-based rank of ``items`` [n, L] among all of a row's items in ``s`` [n, m] (descending score,
    ties by the lower index: the position in a stable argsort of -s) -> [n, L] int64, without an
    argsort of the row: rank = #(higher scores) + #(equal scores at lower indices). The first count
    comes from one sorted copy of the row and binary searches; the second, for candidates whose score
    is tied, from binary searches in the sorted (tied value, index) keys of the row's tied items."""
    n, m = s.shape
    srt = np.sort(s, axis=1)
    v = np.take_along_axis(s, items, axis=1)
    out = np.empty(items.shape, dtype=np.int64)
    for r in range(n):
        row = s[r]
        hi = np.searchsorted(srt[r], v[r], side="right")
        lo = np.searchsorted(srt[r], v[r], side="left")
        rank = (m - hi).astype(np.int64)
        tied = (hi - lo) > 1
        if tied.any():
            tv = np.unique(v[r, tied])  # the tied values, ascending
            pos = np.minimum(np.searchsorted(tv, row), len(tv) - 1)
            members = np.flatnonzero(tv[pos] == row)  # items holding a tied value
            keys = np.sort(pos[members] * (m + 1) + members)  # (value group, index), ascending
            group = np.searchsorted(tv, v[r, tied]) * (m + 1)
            rank[tied] += np.searchsorted(keys, group + items[r, tied]) - np.searchsorted(keys, group)
        out[r] = rank
    return out


def _holdout(
    dataset: Dataset, mode: str, fraction: float, seed: int, fold: int = 0, folds: int = 1
) -> tuple[Dataset, Dataset]:
    from recstack.data.splits import split

    if mode == "user_latest":
        # each user's latest ``fraction`` of their own interactions (by time) labels their list: what a
        # user does next, at any point of the data's time span
        inter = dataset.interactions
        keys = np.random.default_rng(seed).random(inter.height)
        ranked = inter.select("user", "timestamp").with_columns(pl.Series("_key", keys))
        ranked = ranked.with_columns(
            pl.struct("timestamp", "_key").rank("ordinal").over("user").alias("_rank"),
            pl.len().over("user").alias("_n"),
        )
        n_train = (pl.col("_n").cast(pl.Float64) * (1.0 - fraction)).round(0)
        mask = ranked.select((pl.col("_rank").cast(pl.Float64) <= n_train).alias("m"))["m"]
        return dataset.with_interactions(inter.filter(mask)), dataset.with_interactions(inter.filter(~mask))
    if mode == "mixed":
        # even folds random, odd folds forward in time (the latest ``fraction`` of the data)
        mode = "random" if fold % 2 == 0 else "temporal"
        folds = 1
    if mode == "temporal" and folds > 1:
        # forward in time: fold f of F learns from everything before window f and labels window f (the
        # latest ``fraction`` of the data cut into F windows of equal interaction counts)
        sp_ = split(
            dataset,
            "temporal-rolling",
            seed=seed,
            n_windows=folds,
            window_fraction=fraction / folds,
            window=fold,
        )
    elif mode == "temporal":
        sp_ = split(dataset, "temporal", seed=seed, test_fraction=fraction)
    else:
        sp_ = split(dataset, "stratified", seed=seed, train_fraction=1.0 - fraction)
    return sp_.train, sp_.test


#: the cold-start orders `TwoStageConfig.cold_order` chooses from: registry name -> its parameters
_COLD: dict[str, dict[str, Any]] = {"pop": {}, "recent_pop": {}, "trending": {}}


def _cold_scores(dataset: Dataset, name: str) -> FloatArray:
    """[n_items] float32 scores of the cold-start order ``name`` (a key of `_COLD`) fitted on ``dataset``."""
    from recstack.models.retrieval.popular import MostPopular

    model = _create_source(name, _COLD[name]).fit(dataset)
    assert isinstance(model, MostPopular) and model.popularity is not None
    return np.asarray(model.popularity, dtype=np.float32)


def _order_ndcg(scores: FloatArray, truth: sp.csr_matrix, k: int = 10) -> float:
    """Mean NDCG@k of one item order ``scores`` [n_items] for every row of ``truth`` [n, n_items]
    (binary relevance; rows without items skipped)."""
    top = np.lexsort((np.arange(len(scores)), -scores))[:k]
    disc = 1.0 / np.log2(np.arange(2, k + 2))
    rel = np.asarray(truth[:, top].todense()) > 0  # [n, k]
    n_rel = np.minimum(np.diff(truth.indptr), k)
    ok = n_rel > 0
    if not ok.any():
        return float("nan")
    idcg = np.cumsum(disc)[np.maximum(n_rel, 1) - 1]
    return float(np.mean(((rel * disc).sum(axis=1) / idcg)[ok]))


def _create_source(name: str, params: dict[str, Any]) -> Retriever:
    from recstack.models.registry import create

    return create(name, **params)


def _fit_sources(
    cfg: TwoStageConfig, dataset: Dataset
) -> tuple[dict[str, Retriever], dict[str, float], list[str]]:
    """The recall sources fitted on ``dataset`` -> (sources, fit seconds, the names of the sources whose
    fit was reused: inside a build's `recstack.models.shared.shared_fits`, a model of the build fitted
    with the same config on this very dataset is the source, not a second fit of it)."""
    from recstack.models.shared import fit

    out: dict[str, Retriever] = {}
    secs: dict[str, float] = {}
    reused: list[str] = []
    for name in cfg.sources:
        t0 = time.perf_counter()
        out[name], shared = fit(name, dataset, **cfg.source_params.get(name, {}))
        secs[name] = time.perf_counter() - t0
        if shared:
            reused.append(name)
    return out, secs, reused


class TwoStage(Retriever):
    """Recall from several retrievers, rank the union with a neural ranker."""

    name = "two_stage"
    Config = TwoStageConfig

    def __init__(self, config: ComponentConfig | None = None, **overrides: Any) -> None:
        super().__init__(config, **overrides)
        self.sources: dict[str, Retriever] = {}
        self.features: FeatureTables | None = None
        self.ranker: NeuralRanker | RankerEnsemble | None = None
        self.fit_result: dict[str, Any] = {}
        #: [n_items] the order of users without history (`TwoStageConfig.cold_order`)
        self.cold_scores: FloatArray | None = None
        #: the ranker's item text features (``text_features``; issue 21)
        self.text: ItemText | None = None

    @property
    def cfg(self) -> TwoStageConfig:
        assert isinstance(self.config, TwoStageConfig)
        return self.config

    # ------------------------------------------------------------------ fit
    def _fit(self, dataset: Dataset) -> None:
        c = self.cfg
        t0 = time.perf_counter()
        self.text = self._item_text(dataset)
        rng = np.random.default_rng(c.seed)
        # which users each fold labels (and their random negatives) first: the rng draws of the folds,
        # then the validation users, so that every list's place in the store is known before any is built
        plans: list[_FoldPlan] = []
        for f in range(c.holdout_folds):
            if plans:
                plans[-1].parts = None  # rebuilt when the fold is built: one fold's parts held at a time
            plans.append(self._plan(dataset, c.seed + f, rng))
        fold_users = np.concatenate([p.users for p in plans])
        # validation users (all their folds) are never trained on
        all_users = np.unique(fold_users)
        perm = rng.permutation(all_users)
        n_val = max(1, int(len(all_users) * c.val_users_fraction))
        val_users = perm[:n_val]
        is_val = np.isin(fold_users, val_users)
        vi, ti = np.flatnonzero(is_val), np.flatnonzero(~is_val)
        users = all_users
        # the store's layout: the training lists (fold order), then the validation lists, a contiguous
        # slice; dest[i] = the store row of the i-th list in fold order
        n_train, n_lists = len(ti), len(fold_users)
        dest = np.empty(n_lists, dtype=np.int64)
        dest[ti] = np.arange(n_train)
        dest[vi] = n_train + np.arange(len(vi))
        width = min(len(c.sources) * c.per_source + min(c.random_negatives, dataset.n_items), dataset.n_items)
        with RankingStore(
            n_lists, max(width, 1), on_disk=c.ranker_data == "disk", parent=self._scratch_parent()
        ) as store:
            folds: list[dict[str, Any]] = []
            offsets = np.cumsum([0, *(len(p.users) for p in plans)])
            # the last plan still holds its holdout parts: build that fold first
            for f in reversed(range(c.holdout_folds)):
                folds.append(
                    self._fold(dataset, c.seed + f, plans[f], store, dest[offsets[f] : offsets[f + 1]])
                )
                plans[f].parts = None
            folds.reverse()
            self._fit_ranker(dataset, t0, folds, store, n_train, users, fold_users, perm, n_val, dest)

    def _fit_ranker(
        self,
        dataset: Dataset,
        t0: float,
        folds: list[dict[str, Any]],
        store: RankingStore,
        n_train: int,
        users: IntArray,
        fold_users: IntArray,
        perm: IntArray,
        n_val: int,
        dest: IntArray,
    ) -> None:
        """Train the ranker on the lists of ``store`` (training lists ``:n_train``, validation lists
        after them), refit the sources on all of ``dataset``, fill ``fit_result``."""
        c = self.cfg
        cat_cards = folds[0]["cat_cards"]
        L = max(f["L"] for f in folds)
        n_lists = len(fold_users)
        counts = np.concatenate([f["counts"] for f in folds])  # candidates per list, fold order
        recall_union = float(np.mean([f["recall"] for f in folds]))
        secs_a = {k: sum(f["secs"][k] for f in folds) for k in folds[0]["secs"]}
        train_d = store.data(0, n_train, L, cat_cards)
        val_d = store.data(n_train, n_lists, L, cat_cards)
        assert val_d.mask is not None
        # each source alone on the validation lists (the bar the ranker must clear), in blocks of lists
        per = max(1, BLOCK_ROWS // L)
        per_list: dict[str, list[npt.NDArray[np.float64]]] = {name: [] for name in c.sources}
        for s in range(0, val_d.n_lists, per):
            block = np.array(val_d.dense[s : s + per, :, 0 : 3 * len(c.sources) : 3])
            release(val_d.dense)
            for j, name in enumerate(c.sources):
                per_list[name].append(
                    ndcg_per_list(block[:, :, j], val_d.label[s : s + per], val_d.mask[s : s + per], 10)
                )
        source_val = {name: float(np.concatenate(v).mean()) for name, v in per_list.items()}
        log.info("two_stage: validation ndcg@10 of each source alone %s", source_val)
        everything = store.data(0, n_lists, L, cat_cards)

        def member_data(i: int) -> tuple[RankingData, RankingData]:
            # member i: the i-th block of n_val users of the permutation held out (cyclic); in memory
            # (copies of the lists: bagging is not the default)
            v = np.isin(fold_users, np.roll(perm, -((i * n_val) % len(perm)))[:n_val])
            return everything.take(dest[np.flatnonzero(~v)]), everything.take(dest[np.flatnonzero(v)])

        best: tuple[float, NeuralRanker | RankerEnsemble | None, dict[str, Any]] = (-np.inf, None, {})
        grid_scores = []
        for point in c.ranker_grid or ({},):
            params = {**c.ranker_params, **point, "seed": c.seed}
            r = self._new_ranker(params)
            if isinstance(r, RankerEnsemble) and c.ranker_bagging:
                r.fit(None, everything, member_data=member_data)
            else:
                r.fit(None, train_d, validation=val_d)
            score = float(r.fit_result["best_val"])
            grid_scores.append([point, score])
            log.info("two_stage %s %s: validation ndcg@10 %.4f", c.ranker, point, score)
            if score > best[0]:
                best = (score, r, params)
        assert best[1] is not None
        self.ranker = best[1]
        if c.refit_all and isinstance(self.ranker, NeuralRanker):
            epochs = max(int(self.ranker.fit_result["best_epoch"]), 1)
            again = ranker_class(c.ranker)(RankerConfig.from_config({**best[2], "epochs": epochs}))
            self.ranker = again.fit(None, everything)
        shared: list[str] = []
        if c.refit_sources:  # the recall stage on the whole training data for serving
            self.sources, secs_full, shared = _fit_sources(c, dataset)
        else:
            self.sources, secs_full = folds[-1]["sources"], dict.fromkeys(c.sources, 0.0)
        shared += [n for f in folds for n in f.pop("shared", [])]
        for f in folds:
            f.pop("sources", None)
        self.features = build_features(dataset)
        cold_val = {
            o: float(np.mean([f["cold"][o] for f in folds if o in f["cold"]] or [np.nan])) for o in _COLD
        }
        cold_name: str = c.cold_order
        if cold_name == "auto":
            known = {o: v for o, v in cold_val.items() if np.isfinite(v)}
            fallback = "pop" if c.holdout == "random" else "trending"
            cold_name = max(known, key=lambda o: known[o]) if known else fallback
        self.cold_scores = _cold_scores(dataset, cold_name)
        self.fit_result = {
            "holdout_users": len(users),
            "holdout_lists": len(fold_users),
            "candidates_per_user": float(counts.mean()),
            "holdout_recall@candidates": recall_union,
            "ranker_val_ndcg@10": best[0],
            "source_val_ndcg@10": source_val,
            "ranker_params": best[2],
            "ranker_grid": grid_scores,
            # best epoch(s) and training seconds of the kept ranker (per member for an ensemble)
            "ranker_fit": self.ranker.fit_result,
            "source_fit_seconds": {k: secs_a[k] + secs_full[k] for k in secs_a},
            # the sources whose fit was a model the build had fitted already (`shared_fits`): ~0 s above
            "shared_sources": [n for n in c.sources if n in shared],
            # the cold-start order and each candidate's NDCG@10 on the folds' cold users
            "cold_order": cold_name,
            "cold_val_ndcg@10": cold_val,
            "cold_val_users": int(sum(f["cold_users"] for f in folds)),
            "seconds": time.perf_counter() - t0,
        }
        log.info("two_stage fit: %s", self.fit_result)

    def _item_text(self, dataset: Dataset) -> ItemText | None:
        """The ranker's text features of every item (``text_features``), else None."""
        c = self.cfg
        if not c.text_features:
            return None
        from recstack.text.encoder import embed_items

        emb = embed_items(dataset, c.text_encoder, cache_dir=c.text_cache_dir)
        return ItemText.from_embeddings(emb, c.text_components)

    def _new_ranker(self, params: dict[str, Any]) -> NeuralRanker | RankerEnsemble:
        """The unfitted ranker at hyperparameters ``params``: one ``ranker`` net, or the ensemble of
        ``ranker_seeds`` nets per architecture of (``ranker``, *``ranker_mix``)."""
        c = self.cfg
        archs = [c.ranker, *c.ranker_mix]
        if c.ranker_seeds == 1 and len(archs) == 1:
            return ranker_class(c.ranker)(RankerConfig.from_config(params))
        members = [
            ranker_class(a)(RankerConfig.from_config({**params, "seed": params["seed"] + i}))
            for a in archs
            for i in range(c.ranker_seeds)
        ]
        return RankerEnsemble(members)

    def _plan(self, dataset: Dataset, seed: int, rng: np.random.Generator) -> _FoldPlan:
        """The users one holdout fold labels and their random negatives (this fold's ``rng`` draws)."""
        c = self.cfg
        part_a, part_b = _holdout(
            dataset, c.holdout, c.holdout_fraction, seed, fold=seed - c.seed, folds=c.holdout_folds
        )
        b_n = np.diff(part_b.to_csr("binary").indptr)
        a_n = np.diff(part_a.to_csr("binary").indptr)
        users = np.flatnonzero(b_n > 0).astype(np.int64)
        users = users[a_n[users] > 0]
        if len(users) > c.max_holdout_users:
            users = np.sort(rng.choice(users, size=c.max_holdout_users, replace=False))
        k = min(c.random_negatives, dataset.n_items)
        extra = [rng.choice(dataset.n_items, size=k, replace=False).astype(np.int64) for _ in users]
        return _FoldPlan(users, extra, (part_a, part_b))

    def _fold(
        self, dataset: Dataset, seed: int, plan: _FoldPlan, store: RankingStore, dest: IntArray
    ) -> dict[str, Any]:
        """One holdout fold: fit the sources on part A, write the labelled candidate lists of the
        ``plan``'s part B users into rows ``dest`` of ``store``, 256 users at a time."""
        c = self.cfg
        fold_index = seed - c.seed
        part_a, part_b = plan.parts or _holdout(
            dataset, c.holdout, c.holdout_fraction, seed, fold=fold_index, folds=c.holdout_folds
        )
        sources_a, secs, shared = _fit_sources(c, part_a)
        fz = CandidateFeaturizer(
            sources_a, build_features(dataset, part_a.interactions), c.per_source, c.ablate, self.text
        )
        b_csr = part_b.to_csr("binary")
        a_csr = part_a.to_csr("binary")
        users, extra = plan.users, plan.extra
        L, positives = 1, 0.0
        counts: list[IntArray] = []
        with progress_bar() as prog:
            task = prog.add_task("two_stage candidates", total=len(users), status="")
            for s in range(0, len(users), 256):
                bu = users[s : s + 256]
                ch = fz.build(a_csr[bu], bu, extra[s : s + 256])
                label = (
                    np.asarray(b_csr[bu[:, None], np.where(ch.mask, ch.items, 0)].todense()) > 0
                ) & ch.mask
                store.write(dest[s : s + 256], ch.cat, ch.dense, label.astype(np.float32), ch.mask)
                L = max(L, ch.items.shape[1])
                positives += float(label.sum())
                counts.append(ch.mask.sum(axis=1))
                prog.advance(task, len(bu))
        # users first seen in part B: how well each cold-start order ranks what they then did
        cold_users = np.flatnonzero((np.diff(b_csr.indptr) > 0) & (np.diff(a_csr.indptr) == 0))
        cold = (
            {o: _order_ndcg(_cold_scores(part_a, o), b_csr[cold_users]) for o in _COLD}
            if len(cold_users)
            else {}
        )
        return {
            # the fold's sources, kept for serving when they are not refitted (``refit_sources``)
            "sources": sources_a if not c.refit_sources and fold_index == c.holdout_folds - 1 else None,
            "cold": cold,
            "cold_users": len(cold_users),
            "L": L,
            "counts": np.concatenate(counts) if counts else np.zeros(0, np.int64),
            # the ranker's ceiling: share of held-out positives that made it into the candidate lists
            "recall": float(positives / max(b_csr[users].sum(), 1)),
            "cat_cards": fz.cat_cards,
            "secs": secs,
            "shared": shared,
        }

    def _scratch_parent(self) -> str | None:
        """Where `RankingStore` makes its scratch directory (`TwoStageConfig.scratch_dir`)."""
        if self.cfg.scratch_dir is not None:
            return self.cfg.scratch_dir
        from recstack.models.ranking import _ray_train

        spec = _ray_train.current()
        return spec.storage if spec is not None else None

    # -------------------------------------------------------------- scoring
    def _featurizer(self) -> CandidateFeaturizer:
        if self.ranker is None or self.features is None or not self.sources:
            raise NotFittedError("two_stage: call fit() or load() first")
        return CandidateFeaturizer(
            self.sources, self.features, self.cfg.per_source, self.cfg.ablate, self.text
        )

    def featurizer(self) -> CandidateFeaturizer:
        """The fitted recall sources + feature tables that build the ranker's inputs (serving uses
        `CandidateFeaturizer.features_for`)."""
        return self._featurizer()

    def train_matrix(self) -> sp.csr_matrix:
        """The binary user x item matrix [n_users, n_items] the model was fitted on."""
        return self._require_fitted()

    def _score(self, history: sp.csr_matrix, users: IntArray | None) -> FloatArray:
        fz = self._featurizer()
        assert self.ranker is not None and self.features is not None
        n = history.shape[0]
        # non-candidates rank below every candidate, by popularity; what is trending now when the recall
        # stage has a `trending` source (users without history get that order alone)
        pop = self.cold_order_scores()
        out = np.tile((-1e4 + pop / (pop.max() + 1.0)).astype(np.float32), (n, 1))
        hist = sp.csr_matrix(history)
        # users without any history (cold start): the popularity order alone; the sources and the
        # ranker have nothing to personalise with
        warm = np.flatnonzero(np.diff(hist.indptr) > 0)
        for s in range(0, len(warm), 256):
            rows_s = warm[s : s + 256]
            ch = fz.build(hist[rows_s], None if users is None else users[rows_s])
            C, D = ch.cat.shape[2], ch.dense.shape[2]
            sc = self.ranker.score({"cat": ch.cat.reshape(-1, C), "dense": ch.dense.reshape(-1, D)})
            sc = sc.reshape(ch.items.shape)
            rr, cc = np.nonzero(ch.mask)
            out[rows_s[rr], ch.items[rr, cc]] = sc[rr, cc]
        return out

    def cold_order_scores(self) -> FloatArray:
        """[n_items] the order of users without history (`TwoStageConfig.cold_order`; higher first);
        for a model saved before that option: the ``trending`` source's, else all-time popularity."""
        self._featurizer()
        assert self.features is not None
        pop = self.cold_scores
        if pop is None:
            pop = getattr(self.sources.get("trending"), "popularity", None)
        return np.asarray(pop if pop is not None else self.features.popularity, dtype=np.float32)

    def score_users(self, user_idx: npt.ArrayLike) -> FloatArray:
        train = self._require_fitted()
        idx = np.asarray(user_idx, dtype=np.int64).ravel()
        return self._score(train[idx], idx)

    def score_history(self, history: sp.csr_matrix) -> FloatArray:
        return self._score(sp.csr_matrix(history), None)

    def candidates(self, user_idx: npt.ArrayLike) -> list[IntArray]:
        """The recall stage's candidate list of each user (the ranker's ceiling)."""
        fz = self._featurizer()
        train = self._require_fitted()
        idx = np.asarray(user_idx, dtype=np.int64).ravel()
        out: list[IntArray] = []
        for s in range(0, len(idx), 256):
            ch = fz.build(train[idx[s : s + 256]], idx[s : s + 256])
            out += [ch.items[r][ch.mask[r]] for r in range(len(ch.items))]
        return out

    def params(self) -> dict[str, Any]:
        p = self.config.dump_config()
        if self.fit_result:
            p["chosen_ranker_params"] = self.fit_result.get("ranker_params")
            p["holdout_recall@candidates"] = self.fit_result.get("holdout_recall@candidates")
        return p

    # -------------------------------------------------------------- storage
    def _save(self, directory: Path) -> None:
        self._featurizer()
        assert self.ranker is not None and self.features is not None
        for name, src in self.sources.items():
            src.save(directory / "sources" / name)
        self.ranker.save(directory / "ranker")
        self.ranker.export_onnx(directory / "ranker" / "ranker.onnx")
        self.features.save(directory / "features")
        if self.cold_scores is not None:
            np.save(directory / "cold_scores.npy", self.cold_scores, allow_pickle=False)
        if self.text is not None:
            self.text.save(directory / "text")
        (directory / "fit_result.json").write_text(json.dumps(self.fit_result, default=str))
        # the ranker's dense inputs, by name: a recstack that computes other features refuses the model
        (directory / "dense_features.json").write_text(json.dumps(self._featurizer().dense_names()))

    def _load(self, directory: Path) -> None:
        from recstack.models.registry import get_class

        c = self.cfg
        try:
            self.sources = {n: get_class(n).load(directory / "sources" / n) for n in c.sources}
        except OSError as exc:
            raise ArtifactError(f"{directory}: cannot load recall sources: {exc}") from exc
        rdir = directory / "ranker"
        if RankerEnsemble.is_saved(rdir):
            self.ranker = RankerEnsemble.load(rdir, ranker_class)
        else:
            self.ranker = ranker_class(c.ranker).load(rdir)
        self.features = FeatureTables.load(directory / "features")
        cold = directory / "cold_scores.npy"
        self.cold_scores = load_array(cold, (self.n_items,)) if cold.is_file() else None
        tdir = directory / "text"
        self.text = ItemText.load(tdir, self.features.n_items) if tdir.is_dir() else None
        fr = directory / "fit_result.json"
        self.fit_result = json.loads(fr.read_text()) if fr.is_file() else {}
        self._check_features(directory)

    def _check_features(self, directory: Path) -> None:
        """The saved ranker must take the dense features this code computes (a model saved by a
        recstack with other features would score garbage or fail inside ONNX Runtime)."""
        now = self._featurizer().dense_names()
        saved_path = directory / "dense_features.json"
        saved = json.loads(saved_path.read_text()) if saved_path.is_file() else None
        ranker = self.ranker
        members = ranker.members if isinstance(ranker, RankerEnsemble) else [ranker]
        n_dense = {m.net.n_dense for m in members if isinstance(m, NeuralRanker) and m.net is not None}
        f = self.features
        if saved is not None and saved != now and n_dense == {len(now)} and f is not None:
            # a model built on data without genres before the all-zero genre column had a name
            # (`FeatureTables.genre_columns`) recorded its names without that column's two, but its
            # ranker was trained on the rows with them: the columns this recstack computes
            pad = (f"genre_{NO_GENRE}", f"user_genre_{NO_GENRE}")
            if f.genre_columns == [NO_GENRE] and saved == [n for n in now if n not in pad]:
                saved = now
        if saved is not None and saved != now:
            new, gone = [n for n in now if n not in saved], [n for n in saved if n not in now]
            diff = "".join(
                f"; {what}: {', '.join(names[:4])}"
                + (f" and {len(names) - 4} more" if len(names) > 4 else "")
                for what, names in (("not in the model", new), ("no longer computed", gone))
                if names
            )
            raise ArtifactError(
                f"{directory}: the two-stage ranker was trained on {len(saved)} dense features, this "
                f"recstack computes {len(now)}{diff}. The model was built by another recstack version: "
                "rebuild the release (recstack build) with this one"
            )
        if n_dense - {len(now)}:
            widths = " / ".join(str(w) for w in sorted(n_dense))
            if saved is None:  # a model saved before the names were recorded: its net's width tells
                raise ArtifactError(
                    f"{directory}: the two-stage ranker was trained on {widths} dense features, this "
                    f"recstack computes {len(now)}. The model was built by another recstack version: "
                    "rebuild the release (recstack build) with this one"
                )
            raise ArtifactError(
                f"{directory}: the two-stage ranker's net takes {widths} dense inputs, but the model "
                f"records {len(saved)} dense feature names (the ones this recstack computes): the "
                "recstack that built it computed feature rows wider than its feature names. Rebuild the "
                "release (recstack build) with this one"
            )
