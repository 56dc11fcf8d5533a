"""MostPopular: every user gets the items with the most interactions (optionally recent ones only)."""

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

__all__ = ["MostPopular", "MostPopularConfig", "RecentPopular", "RecentPopularConfig"]

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
