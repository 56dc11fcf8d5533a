"""Popularity baselines: MostPopular (every user gets the items with the most interactions, optionally
recent ones only) and WindowPopular (what was popular while the user was active)."""

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
    "MostPopular",
    "MostPopularConfig",
    "RecentPopular",
    "RecentPopularConfig",
    "WindowPopular",
    "WindowPopularConfig",
]

_SECONDS_PER_DAY = 86_400


class MostPopularConfig(ComponentConfig):
    """``window_days``: count only the interactions of the last N days of the training data (measured
    back from its latest timestamp); None counts all of them. ``distinct_users``: count each
    (user, item) pair once instead of every event."""

    window_days: float | None = Field(default=None, gt=0)
    distinct_users: bool = True


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
        inter = dataset.interactions
        if self.config.window_days is not None and inter.height > 0:
            latest = int(inter["timestamp"].max())  # type: ignore[arg-type]
            start = latest - round(self.config.window_days * _SECONDS_PER_DAY)
            inter = inter.filter(pl.col("timestamp") >= start)
        if self.config.distinct_users:
            inter = inter.unique(["user", "item"])
        counts = np.bincount(inter["item"].to_numpy(), minlength=dataset.n_items)
        self.popularity = counts.astype(np.float32)

    def _scores(self) -> FloatArray:
        self._require_fitted()
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
        self._require_fitted()
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
        self.user_time = load_array(directory / "user_time.npy", (self._require_fitted().shape[0], 2))
        self.item_time_counts = load_array(directory / "item_time_counts.npy", (self.n_items, None))
        self.popularity = load_array(directory / "popularity.npy", (self.n_items,))
