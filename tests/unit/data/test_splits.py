"""Splits: sizes worked out by hand on tiny data, determinism, validation carving, cold users."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from recstack.data import Dataset
from recstack.data.splits import PROTOCOLS, split
from recstack.errors import InvalidArgumentError


def _toy() -> Dataset:
    # user 1: 4 rows (t=1..4), user 2: 8 rows (t=5..12), user 3: 1 row at t=20 (appears last).
    rows = [(1, i, 4.0, i) for i in range(1, 5)]
    rows += [(2, 10 + i, 3.0, 4 + i) for i in range(1, 9)]
    rows += [(3, 1, 5.0, 20)]
    df = pl.DataFrame(rows, schema=["user_id", "item_id", "rating", "timestamp"], orient="row")
    return Dataset.from_frames("toy", df)


def _pairs(ds: Dataset) -> set[tuple[int, int, int]]:
    return set(ds.interactions.select("user", "item", "timestamp").iter_rows())


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_partition_is_exact_and_deterministic(protocol: str) -> None:
    ds = _toy()
    a, b = split(ds, protocol, seed=7), split(ds, protocol, seed=7)
    assert a.train.interactions.equals(b.train.interactions)
    assert a.test.interactions.equals(b.test.interactions)
    # train and test partition the rows: disjoint, and together everything
    assert _pairs(a.train) & _pairs(a.test) == set()
    assert _pairs(a.train) | _pairs(a.test) == _pairs(ds)
    assert a.train.user_vocab == ds.user_vocab and a.test.item_vocab == ds.item_vocab


def test_stratified_sizes_per_user() -> None:
    s = split(_toy(), "stratified", seed=1)
    per_user = dict(s.train.interactions.group_by("user").len().iter_rows())
    # round(0.75*4)=3, round(0.75*8)=6, round(0.75*1)=1 (round half to even of 0.75 -> 1)
    assert per_user == {0: 3, 1: 6, 2: 1}
    assert s.test.n_interactions == 13 - 10


def test_tfrs_global_fraction() -> None:
    s = split(_toy(), "tfrs")
    assert (s.train.n_interactions, s.test.n_interactions) == (10, 3)  # round(0.8*13)=10


def test_temporal_cut_and_cold_users() -> None:
    s = split(_toy(), "temporal", test_fraction=0.25)
    # round(0.25*13)=3 latest rows by time: t=20 (user 3), t=12, t=11 (user 2)
    assert sorted(s.test.interactions["timestamp"].to_list()) == [11, 12, 20]
    assert s.cold_users.tolist() == [2]  # user 3 has no train rows
    assert s.warm_test_users.tolist() == [1]
    assert s.train.interactions["timestamp"].max() < s.test.interactions["timestamp"].min()  # type: ignore[operator]


def test_leave_last_out_takes_latest_for_users_with_two_or_more() -> None:
    s = split(_toy(), "leave-last-out")
    assert sorted(s.test.interactions.select("user", "timestamp").iter_rows()) == [(0, 4), (1, 12)]


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_validation_is_carved_from_train_only(protocol: str) -> None:
    s = split(_toy(), protocol, seed=3)
    v = s.validation()
    assert _pairs(v.train) | _pairs(v.test) == _pairs(s.train)
    assert not (_pairs(v.test) & _pairs(s.test))


def test_different_seeds_differ() -> None:
    rng = np.random.default_rng(0)
    df = pl.DataFrame({"user_id": rng.integers(0, 20, 500), "item_id": rng.integers(0, 50, 500)})
    ds = Dataset.from_frames("r", df)
    assert not split(ds, "stratified", seed=1).test.interactions.equals(
        split(ds, "stratified", seed=2).test.interactions
    )


def test_unknown_protocol_and_bad_options() -> None:
    with pytest.raises(InvalidArgumentError, match="choose from"):
        split(_toy(), "random")
    with pytest.raises(InvalidArgumentError, match="bad options"):
        split(_toy(), "tfrs", test_fraction=0.3)


def test_temporal_rolling_folds_by_hand() -> None:
    from recstack.data.splits import rolling_splits

    folds = rolling_splits(_toy(), n_windows=3, window_fraction=0.2)
    # windows of round(0.2 * 13) = 3 rows, the last 9 rows by time
    tests = [sorted(f.test.interactions["timestamp"].to_list()) for f in folds]
    # 13 rows in time order t=1..12, 20; first window starts at row 13 - 9 = 4 (t=5)
    assert tests == [[5, 6, 7], [8, 9, 10], [11, 12, 20]]
    for f, first in zip(folds, (5, 8, 11), strict=True):
        # train = every row before the window; later rows are in neither part
        assert sorted(f.train.interactions["timestamp"].to_list()) == list(range(1, first))
        assert f.protocol == "temporal-rolling"
    # user 2 (index 1) starts at t=5: cold in window 0, warm after; user 3 (t=20) cold in the last
    assert folds[0].cold_users.tolist() == [1] and folds[0].warm_test_users.tolist() == []
    assert folds[1].cold_users.tolist() == [] and folds[1].warm_test_users.tolist() == [1]
    assert folds[2].cold_users.tolist() == [2] and folds[2].warm_test_users.tolist() == [1]
    # the same fold from split(), and validation folds carved from a fold's train only
    one = split(_toy(), "temporal-rolling", n_windows=3, window_fraction=0.2, window=1)
    assert one.test.interactions.equals(folds[1].test.interactions)
    inner = folds[2].rolling_validation()
    assert all(_pairs(v.train) | _pairs(v.test) <= _pairs(folds[2].train) for v in inner)


def test_temporal_rolling_rejects_windows_that_do_not_fit() -> None:
    with pytest.raises(InvalidArgumentError, match="bad options"):
        split(_toy(), "temporal-rolling", n_windows=5, window_fraction=0.3)
    with pytest.raises(InvalidArgumentError, match="bad options"):
        split(_toy(), "temporal-rolling", n_windows=2, window_fraction=0.1, window=2)
