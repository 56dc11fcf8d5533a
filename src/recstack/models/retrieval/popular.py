"""Popularity baselines: MostPopular (every user gets the items with the most interactions, optionally
recent ones only, optionally decayed with age: `Trending`), `GenreTrending` (what is trending in the
user's genres) and WindowPopular (what was popular while the user was active)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import polars as pl
import scipy.sparse as sp
from pydantic import Field

from recstack.config import ComponentConfig
from recstack.data.dataset import Dataset
from recstack.errors import ArtifactError
from recstack.models.base import FloatArray, Retriever
from recstack.models.retrieval._arrays import load_array

__all__ = [
    "GenreTrending",
    "GenreTrendingConfig",
    "MostPopular",
    "MostPopularConfig",
    "RecentPopular",
    "RecentPopularConfig",
    "Trending",
    "TrendingConfig",
    "WindowPopular",
    "WindowPopularConfig",
]

_SECONDS_PER_DAY = 86_400


class MostPopularConfig(ComponentConfig):
    """``window_days``: count only the interactions of the last N days of the training data (measured
    back from its latest timestamp); None counts all of them. ``distinct_users``: count each
    (user, item) pair once (its latest event) instead of every event. ``half_life_days``: weigh each
    counted interaction by 0.5 ** (age / half-life), its age measured back from the latest timestamp of
    the training data (exponential decay: what is popular *now*); None weighs all alike."""

    window_days: float | None = Field(default=None, gt=0)
    distinct_users: bool = True
    half_life_days: float | None = Field(default=None, gt=0)


class MostPopular(Retriever):
    """Score of item i = number of training interactions with i (the same for every user)."""

    name: ClassVar[str] = "pop"
    Config: ClassVar[type[ComponentConfig]] = MostPopularConfig
    tuning_grid: ClassVar[tuple[dict[str, Any], ...]] = ({"window_days": None},)

    config: MostPopularConfig

    def __init__(self, config: ComponentConfig | None = None, **overrides: Any) -> None:
        super().__init__(config, **overrides)
        self.popularity: FloatArray | None = None

    def _fit(self, dataset: Dataset) -> None:
        self.popularity = decayed_popularity(
            dataset, self.config.window_days, self.config.half_life_days, self.config.distinct_users
        )

    def _scores(self) -> FloatArray:
        self._check_fitted()
        if self.popularity is None:  # pragma: no cover - fit/load always set it
            raise ArtifactError("pop: popularity missing")
        return self.popularity

    def score_history(self, history: sp.csr_matrix) -> FloatArray:
        """Scores [n, n_items] float32: the interaction count of every item, for every row."""
        pop = self._scores()
        return np.broadcast_to(pop, (history.shape[0], pop.shape[0])).copy()

    def score_users(self, user_idx: Any) -> FloatArray:
        """Scores [n, n_items] float32 (the popularity vector repeated)."""
        n = np.asarray(user_idx, dtype=np.int64).ravel().shape[0]
        pop = self._scores()
        return np.broadcast_to(pop, (n, pop.shape[0])).copy()

    def _save(self, directory: Path) -> None:
        np.save(directory / "popularity.npy", self._scores(), allow_pickle=False)

    def _load(self, directory: Path) -> None:
        self.popularity = load_array(directory / "popularity.npy", (self.n_items,))


def decayed_popularity(
    dataset: Dataset,
    window_days: float | None = None,
    half_life_days: float | None = None,
    distinct_users: bool = True,
) -> FloatArray:
    """Item popularity [n_items] float32: interactions counted over the last ``window_days`` of the
    data (None: all), each (user, item) pair once when ``distinct_users`` (its latest event), each
    weighted 0.5 ** (age / ``half_life_days``) when given (age from the data's latest timestamp)."""
    inter = dataset.interactions
    if inter.height == 0:
        return np.zeros(dataset.n_items, dtype=np.float32)
    latest = int(inter["timestamp"].max())  # type: ignore[arg-type]
    if window_days is not None:
        inter = inter.filter(pl.col("timestamp") >= latest - round(window_days * _SECONDS_PER_DAY))
    if distinct_users:
        inter = inter.group_by(["user", "item"]).agg(pl.col("timestamp").max())
    weights = None
    if half_life_days is not None:
        age_days = (latest - inter["timestamp"].to_numpy().astype(np.float64)) / _SECONDS_PER_DAY
        weights = np.exp2(-age_days / half_life_days)
    counts = np.bincount(inter["item"].to_numpy(), weights=weights, minlength=dataset.n_items)
    return counts.astype(np.float32)


class TrendingConfig(MostPopularConfig):
    """MostPopular with exponential decay: half-life ``half_life_days`` (default 14 days)."""

    half_life_days: float | None = Field(default=14.0, gt=0)


class Trending(MostPopular):
    """What is popular now: each user's latest interaction with an item counts 0.5 ** (age /
    half-life). A recall source forward in time, and the cold-start order of the two-stage model."""

    name: ClassVar[str] = "trending"
    Config: ClassVar[type[ComponentConfig]] = TrendingConfig
    tuning_grid: ClassVar[tuple[dict[str, Any], ...]] = tuple(
        {"half_life_days": d} for d in (3.0, 7.0, 14.0, 30.0, 60.0)
    )


class GenreTrendingConfig(TrendingConfig):
    """`Trending` scaled by the user's taste for the item's genres. ``smoothing``: added to the
    affinity, so that items outside the user's genres keep a share of their trend (0: only the user's
    genres)."""

    smoothing: float = Field(default=0.1, ge=0)


class GenreTrending(Retriever):
    """Score of item i for user u = trend(i) * (smoothing + affinity(u, i)); affinity = the share of u's
    history in i's genres (the mean over i's genres of u's genre shares). What is popular now in the
    genres the user watches. Without genres (or for an empty history) it is `Trending`."""

    name: ClassVar[str] = "genre_trending"
    Config: ClassVar[type[ComponentConfig]] = GenreTrendingConfig
    tuning_grid: ClassVar[tuple[dict[str, Any], ...]] = tuple(
        {"half_life_days": d, "smoothing": s} for d in (7.0, 30.0) for s in (0.0, 0.1, 1.0)
    )

    config: GenreTrendingConfig

    def __init__(self, config: ComponentConfig | None = None, **overrides: Any) -> None:
        super().__init__(config, **overrides)
        self.trend: FloatArray | None = None
        self.item_genres: FloatArray | None = None  # [n_items, G], rows sum to 1 (0 without genres)

    def _fit(self, dataset: Dataset) -> None:
        c = self.config
        self.trend = decayed_popularity(dataset, c.window_days, c.half_life_days, c.distinct_users)
        genres = dataset.item_genres()
        vocab = sorted({g for gs in genres for g in gs})
        col = {g: j for j, g in enumerate(vocab)}
        mat = np.zeros((dataset.n_items, max(len(vocab), 1)), dtype=np.float32)
        for i, gs in enumerate(genres):
            for g in gs:
                mat[i, col[g]] = 1.0 / len(gs)
        self.item_genres = mat

    def _arrays(self) -> tuple[FloatArray, FloatArray]:
        self._check_fitted()
        if self.trend is None or self.item_genres is None:
            raise ArtifactError("genre_trending: arrays missing")  # pragma: no cover - fit/load set them
        return self.trend, self.item_genres

    def score_history(self, history: sp.csr_matrix) -> FloatArray:
        """Scores [n, n_items] float32: trend * (smoothing + genre affinity of the history)."""
        trend, ig = self._arrays()
        hist = sp.csr_matrix(history, dtype=np.float32)
        hist.data[:] = 1.0
        shares = np.asarray(hist @ ig, dtype=np.float32)  # [n, G]
        total = shares.sum(axis=1, keepdims=True)
        shares = np.divide(shares, total, out=np.zeros_like(shares), where=total > 0)
        # mean of the user's shares over the item's genres, rescaled so that a uniform taste gives 1
        aff = (shares @ ig.T) * ig.shape[1]
        out: FloatArray = (trend[None, :] * (self.config.smoothing + aff)).astype(np.float32)
        empty = total[:, 0] <= 0
        if empty.any():
            out[empty] = trend
        return out

    def _save(self, directory: Path) -> None:
        trend, ig = self._arrays()
        np.save(directory / "trend.npy", trend, allow_pickle=False)
        np.save(directory / "item_genres.npy", ig, allow_pickle=False)

    def _load(self, directory: Path) -> None:
        self.trend = load_array(directory / "trend.npy", (self.n_items,))
        self.item_genres = load_array(directory / "item_genres.npy", (self.n_items, None))


class RecentPopularConfig(MostPopularConfig):
    """MostPopular over the last ``window_days`` days of the training data (default 30)."""

    window_days: float | None = Field(default=30.0, gt=0)


class RecentPopular(MostPopular):
    """The recent-popularity baseline of the ``temporal`` protocol: what was popular lately."""

    name: ClassVar[str] = "recent_pop"
    Config: ClassVar[type[ComponentConfig]] = RecentPopularConfig
    tuning_grid: ClassVar[tuple[dict[str, Any], ...]] = tuple(
        {"window_days": d} for d in (7.0, 14.0, 30.0, 60.0, 120.0)
    )


class WindowPopularConfig(ComponentConfig):
    """``margin_bins``: widen each user's active window by this many time bins (of
    `recstack.features.tables.TIME_BINS` over the training span) on both sides."""

    margin_bins: int = Field(default=0, ge=0)


class WindowPopular(Retriever):
    """Score of item i for user u = i's training interactions inside u's active window (first to last
    training interaction, in `TIME_BINS` bins of the data's span), ties broken by overall popularity.

    Users known only by their history (and users without training interactions) get the last
    `RECENT_BINS` bins of the data: what is popular now. Without timestamps it is MostPopular. On
    randomly split data (``stratified``) this is a strong time-aware recall source: what a user rated
    was mostly on screens while they were rating."""

    name: ClassVar[str] = "window_pop"
    Config: ClassVar[type[ComponentConfig]] = WindowPopularConfig
    tuning_grid: ClassVar[tuple[dict[str, Any], ...]] = tuple({"margin_bins": m} for m in (0, 1, 4))

    config: WindowPopularConfig

    def __init__(self, config: ComponentConfig | None = None, **overrides: Any) -> None:
        super().__init__(config, **overrides)
        self.user_time: FloatArray | None = None
        self.item_time_counts: FloatArray | None = None
        self.popularity: FloatArray | None = None

    def _fit(self, dataset: Dataset) -> None:
        from recstack.features.tables import time_context

        inter = dataset.interactions
        user_time, _, counts = time_context(inter, dataset.n_users, dataset.n_items)
        pop = np.bincount(inter["item"].to_numpy(), minlength=dataset.n_items).astype(np.float32)
        if user_time is None or counts is None:  # no time: one bin holding every interaction
            user_time = np.zeros((dataset.n_users, 2), dtype=np.float32)
            counts = np.stack([np.zeros_like(pop), pop], axis=1)
        self.user_time, self.item_time_counts, self.popularity = user_time, counts, pop

    def _arrays(self) -> tuple[FloatArray, FloatArray, FloatArray]:
        self._check_fitted()
        if self.user_time is None or self.item_time_counts is None or self.popularity is None:
            raise ArtifactError("window_pop: arrays missing")  # pragma: no cover - fit/load set them
        return self.user_time, self.item_time_counts, self.popularity

    def _window_scores(self, window: FloatArray) -> FloatArray:
        """Scores [n, n_items] of n windows [n, 2] (fractional bins; first < 0: the recent window)."""
        from recstack.features.tables import window_bins

        _, counts, pop = self._arrays()
        b0, b1 = window_bins(window, counts.shape[1] - 1, self.config.margin_bins)
        tie = pop / (float(pop.max()) + 1.0)  # < 1: only orders items with equal window counts
        out: FloatArray = (counts[:, b1].T - counts[:, b0].T + tie[None, :]).astype(np.float32)
        return out

    def score_history(self, history: sp.csr_matrix) -> FloatArray:
        """Scores [n, n_items]: popularity over the last `RECENT_BINS` bins (what is popular now)."""
        n = history.shape[0]
        return self._window_scores(np.full((n, 2), -1.0, dtype=np.float32))

    def score_users(self, user_idx: Any) -> FloatArray:
        idx = np.asarray(user_idx, dtype=np.int64).ravel()
        return self._window_scores(self._arrays()[0][idx])

    def _save(self, directory: Path) -> None:
        user_time, counts, pop = self._arrays()
        np.save(directory / "user_time.npy", user_time, allow_pickle=False)
        np.save(directory / "item_time_counts.npy", counts, allow_pickle=False)
        np.save(directory / "popularity.npy", pop, allow_pickle=False)

    def _load(self, directory: Path) -> None:
        self.user_time = load_array(directory / "user_time.npy", (self._train_shape()[0], 2))
        self.item_time_counts = load_array(directory / "item_time_counts.npy", (self.n_items, None))
        self.popularity = load_array(directory / "popularity.npy", (self.n_items,))
