"""Train / test splits under the named protocols of BENCHMARKS.md.

Every split is seeded and deterministic (same dataset + seed -> same rows), and every protocol carves a
validation split out of a training set the same way: ``split(split.train, protocol, seed)``.

- ``stratified``: per user, a random 75% of the user's interactions train, the rest test
  (``round(0.75 * n)`` train rows for a user with n rows; Microsoft Recommenders' stratified split).
- ``tfrs``: a global random 80% train / 20% test (80,000 / 20,000 on ML-100K), as the TensorFlow
  Recommenders tutorials shuffle with seed 42 and take the first 80,000.
- ``temporal``: a global time cut: the last 10% of interactions by timestamp are the test set. Users
  whose first interaction falls in the test window are the cold-start users (``Split.cold_users``).
- ``leave-last-out``: each user's latest interaction (by timestamp; ties broken at random, seeded) is the
  test set, for users with at least two interactions.
- ``temporal-rolling``: rolling origin (`rolling_splits`): the last ``n_windows`` windows of
  ``window_fraction`` of the interactions each (equal interaction counts, in time order); fold i trains on
  everything before window i and tests on window i (later rows are in neither). ``split(...,
  "temporal-rolling")`` gives one fold (``window``, default the last); users first seen in a fold's
  window are its cold users.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import polars as pl

from recstack._numpy import distinct
from recstack.data.dataset import Dataset
from recstack.errors import InvalidArgumentError

__all__ = ["PROTOCOLS", "ROLLING_WINDOWS", "Split", "rolling_splits", "split"]

PROTOCOLS: tuple[str, ...] = ("stratified", "tfrs", "temporal", "temporal-rolling", "leave-last-out")
#: ``temporal-rolling`` defaults: 5 windows of 5% of the interactions each (the last 25% of the data)
ROLLING_WINDOWS = 5
ROLLING_WINDOW_FRACTION = 0.05


@dataclass(frozen=True)
class Split:
    """A train / test pair sharing the vocabularies of the source dataset."""

    train: Dataset
    test: Dataset
    protocol: str
    seed: int
    #: user indices with test interactions but no train interactions (temporal); int64[m]
    cold_users: npt.NDArray[np.int64] = field(default_factory=lambda: np.empty(0, dtype=np.int64))
    options: dict[str, Any] = field(default_factory=dict)

    def validation(self) -> Split:
        """A validation split carved out of ``train`` the same way (same protocol, options and seed)."""
        return split(self.train, self.protocol, seed=self.seed, **self.options)

    def rolling_validation(self) -> list[Split]:
        """``temporal-rolling`` folds carved out of ``train`` (the same windows options): model choice
        forward in time without touching the test window."""
        opts = {k: v for k, v in self.options.items() if k in ("n_windows", "window_fraction")}
        return rolling_splits(self.train, seed=self.seed, **opts)

    @property
    def warm_test_users(self) -> npt.NDArray[np.int64]:
        """Users with test interactions and at least one train interaction."""
        test_users = distinct(self.test.interactions["user"].to_numpy()).astype(np.int64)
        return np.setdiff1d(test_users, self.cold_users)


def _random_keys(n: int, seed: int) -> npt.NDArray[np.float64]:
    return np.random.default_rng(seed).random(n)


def _stratified(inter: pl.DataFrame, seed: int, train_fraction: float = 0.75) -> pl.Series:
    # Rank each user's rows in a seeded random order; the first round(f * n) of them train.
    df = inter.select("user").with_columns(
        pl.Series("_key", _random_keys(inter.height, seed)),
        pl.int_range(pl.len()).alias("_row"),
    )
    ranked = df.with_columns(
        pl.col("_key").rank("ordinal").over("user").alias("_rank"),
        pl.len().over("user").alias("_n"),
    )
    n_train = (pl.col("_n").cast(pl.Float64) * train_fraction).round(0)
    return ranked.select((pl.col("_rank").cast(pl.Float64) <= n_train).alias("train"))["train"]


def _tfrs(inter: pl.DataFrame, seed: int, train_fraction: float = 0.8) -> pl.Series:
    perm = np.random.default_rng(seed).permutation(inter.height)
    n_train = round(train_fraction * inter.height)
    mask = np.zeros(inter.height, dtype=bool)
    mask[perm[:n_train]] = True
    return pl.Series("train", mask)


def _temporal(inter: pl.DataFrame, seed: int, test_fraction: float = 0.1) -> pl.Series:
    # Stable order by timestamp; rows with equal timestamps are ordered by a seeded random key so that the
    # cut is deterministic without depending on the input row order.
    keys = _random_keys(inter.height, seed)
    order = np.lexsort((keys, inter["timestamp"].to_numpy()))
    n_test = round(test_fraction * inter.height)
    mask = np.ones(inter.height, dtype=bool)
    if n_test > 0:
        mask[order[inter.height - n_test :]] = False
    return pl.Series("train", mask)


def _time_order(inter: pl.DataFrame, seed: int) -> npt.NDArray[np.int64]:
    """Row indices in time order; equal timestamps in a seeded random order (deterministic cuts that do
    not depend on the input row order)."""
    keys = _random_keys(inter.height, seed)
    return np.lexsort((keys, inter["timestamp"].to_numpy())).astype(np.int64)


def _rolling(
    inter: pl.DataFrame,
    seed: int,
    n_windows: int = ROLLING_WINDOWS,
    window_fraction: float = ROLLING_WINDOW_FRACTION,
    window: int = -1,
) -> pl.Series:
    """Train (True) / test (False) / neither (None) of fold ``window`` (0 = the earliest window)."""
    if n_windows < 1 or not window_fraction > 0 or n_windows * window_fraction >= 1:
        raise TypeError(
            f"n_windows={n_windows} x window_fraction={window_fraction} must cover a share in (0, 1)"
        )
    if not -n_windows <= window < n_windows:
        raise TypeError(f"window={window} is not one of the {n_windows} windows")
    w = window % n_windows
    order = _time_order(inter, seed)
    size = round(window_fraction * inter.height)
    if size < 1:
        raise TypeError(f"window_fraction={window_fraction} leaves empty windows of {inter.height} rows")
    first = inter.height - n_windows * size  # rows before the first window
    start, end = first + w * size, first + (w + 1) * size
    mask = np.zeros(inter.height, dtype=np.int8)  # 0 neither, 1 train, 2 test
    mask[order[:start]] = 1
    mask[order[start:end]] = 2
    return pl.Series("train", mask == 1).set(pl.Series(mask == 0), None)


def _leave_last_out(inter: pl.DataFrame, seed: int) -> pl.Series:
    df = inter.select("user", "timestamp").with_columns(pl.Series("_key", _random_keys(inter.height, seed)))
    ranked = df.with_columns(
        pl.struct("timestamp", "_key").rank("ordinal", descending=True).over("user").alias("_rank"),
        pl.len().over("user").alias("_n"),
    )
    return ranked.select(~((pl.col("_rank") == 1) & (pl.col("_n") >= 2)).alias("train"))["train"]


_SPLITTERS: dict[str, Callable[..., pl.Series]] = {
    "stratified": _stratified,
    "tfrs": _tfrs,
    "temporal": _temporal,
    "temporal-rolling": _rolling,
    "leave-last-out": _leave_last_out,
}


def split(dataset: Dataset, protocol: str, *, seed: int = 42, **options: Any) -> Split:
    """Split ``dataset`` under ``protocol`` (one of `PROTOCOLS`).

    ``options`` tune the fractions: ``train_fraction`` (stratified 0.75, tfrs 0.8) and ``test_fraction``
    (temporal 0.1); temporal-rolling takes ``n_windows``, ``window_fraction`` and ``window`` (one fold;
    `rolling_splits` gives them all). Train and test share the vocabularies of ``dataset``.
    """
    if protocol not in _SPLITTERS:
        raise InvalidArgumentError(f"unknown protocol {protocol!r}; choose from {', '.join(PROTOCOLS)}")
    inter = dataset.interactions
    if inter.height == 0:
        raise InvalidArgumentError(f"dataset {dataset.name!r} has no interactions to split")
    try:
        mask = _SPLITTERS[protocol](inter, seed, **options)
    except TypeError as exc:
        raise InvalidArgumentError(f"bad options {options} for protocol {protocol!r}: {exc}") from exc
    train_inter = inter.filter(mask.fill_null(False))
    test_inter = inter.filter((~mask).fill_null(False))
    cold = np.empty(0, dtype=np.int64)
    if protocol in ("temporal", "temporal-rolling"):
        test_users = distinct(test_inter["user"].to_numpy())
        train_users = distinct(train_inter["user"].to_numpy())
        cold = np.setdiff1d(test_users, train_users).astype(np.int64)
    return Split(
        train=dataset.with_interactions(train_inter, name=f"{dataset.name}/{protocol}-train"),
        test=dataset.with_interactions(test_inter, name=f"{dataset.name}/{protocol}-test"),
        protocol=protocol,
        seed=seed,
        cold_users=cold,
        options=dict(options),
    )


def rolling_splits(
    dataset: Dataset,
    *,
    n_windows: int = ROLLING_WINDOWS,
    window_fraction: float = ROLLING_WINDOW_FRACTION,
    seed: int = 42,
) -> list[Split]:
    """The ``temporal-rolling`` folds of ``dataset``, earliest window first: fold i trains on every
    interaction before window i and tests on window i (``window_fraction`` of the interactions each; the
    last ``n_windows`` windows of the data in time order)."""
    return [
        split(
            dataset,
            "temporal-rolling",
            seed=seed,
            n_windows=n_windows,
            window_fraction=window_fraction,
            window=w,
        )
        for w in range(n_windows)
    ]
