"""MostPopular: counts worked out by hand."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from recstack.data.dataset import Dataset
from recstack.errors import ConfigError
from recstack.models.retrieval.popular import MostPopular

DAY = 86_400


def _data(genres: bool = False) -> Dataset:
    # item 10: users 1, 2, 3 (day 0)      -> 3 users, all old
    # item 11: user 1 twice (days 9, 10)  -> 1 user, 2 events, recent
    # item 12: users 2, 3 (day 10)        -> 2 users, recent
    # item 13: nobody (only in the items table)
    rows = [
        (1, 10, 0), (2, 10, 0), (3, 10, 0),
        (1, 11, 9 * DAY), (1, 11, 10 * DAY),
        (2, 12, 10 * DAY), (3, 12, 10 * DAY),
    ]  # fmt: skip
    frame = pl.DataFrame(rows, schema=["user_id", "item_id", "timestamp"], orient="row")
    items = pl.DataFrame({"item_id": [10, 11, 12, 13]})
    if genres:
        items = items.with_columns(pl.Series("genres", [["A"], ["B"], ["A", "B"], ["B"]]))
    return Dataset.from_frames("pop", frame, items=items)


def test_counts_distinct_users_by_default() -> None:
    m = MostPopular().fit(_data())
    # distinct users per item: 10 -> 3, 11 -> 1, 12 -> 2, 13 -> 0
    np.testing.assert_array_equal(m.score_users([0])[0], [3, 1, 2, 0])
    ids, scores = m.recommend([0, 1], 4)
    assert ids.tolist() == [[0, 2, 1, 3]] * 2
    assert scores[0].tolist() == [3.0, 2.0, 1.0, 0.0]


def test_counts_every_event() -> None:
    m = MostPopular(distinct_users=False).fit(_data())
    np.testing.assert_array_equal(m.score_users([0])[0], [3, 2, 2, 0])  # item 11 has 2 events


def test_recent_window() -> None:
    # latest timestamp = day 10; a 2-day window keeps days >= 8: item 11 (user 1) and item 12 (2 users)
    m = MostPopular(window_days=2).fit(_data())
    np.testing.assert_array_equal(m.score_users([0])[0], [0, 1, 2, 0])
    ids, _ = m.recommend([0], 2)
    assert ids.tolist() == [[2, 1]]
    # a window covering everything equals no window
    full = MostPopular(window_days=365).fit(_data()).score_users([0])
    np.testing.assert_array_equal(full, MostPopular().fit(_data()).score_users([0]))


def test_bad_window_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="window_days"):
        MostPopular(window_days=0)


def test_similar_items_are_the_most_popular_others() -> None:
    m = MostPopular().fit(_data())
    ids, _ = m.similar_items([0, 2], 2)
    assert ids.tolist() == [[2, 1], [0, 1]]


def test_recent_popular_is_registered_with_a_30_day_default() -> None:
    from recstack.models import create
    from recstack.models.retrieval.popular import RecentPopular

    m = create("recent_pop")
    assert isinstance(m, RecentPopular) and m.config.window_days == 30.0
    # latest timestamp = day 10; a 30-day window covers every row -> the same as MostPopular
    np.testing.assert_array_equal(m.fit(_data()).score_users([0])[0], [3, 1, 2, 0])
    # the tuning grid varies the window only
    assert {tuple(p) for p in RecentPopular.tuning_grid} == {("window_days",)}
    assert create("recent_pop", window_days=2).fit(_data()).score_users([0])[0].tolist() == [0, 1, 2, 0]


def test_window_popular_counts_inside_each_users_active_window() -> None:
    from recstack.models.retrieval.popular import WindowPopular

    late = pl.DataFrame([(4, 12, 10 * DAY)], schema=["user_id", "item_id", "timestamp"], orient="row")
    rows = [(1, 10, 0), (2, 10, 0), (3, 10, 0), (1, 11, 9 * DAY), (1, 11, 10 * DAY), (2, 12, 10 * DAY)]
    rows += [(3, 12, 10 * DAY)]
    full = pl.concat([pl.DataFrame(rows, schema=late.columns, orient="row"), late])
    ds = Dataset.from_frames("wpop", full, items=pl.DataFrame({"item_id": [10, 11, 12, 13]}))
    m = WindowPopular().fit(ds)
    # 64 bins over 10 days: day 0 -> bin 0, day 9 -> bin 57, day 10 -> bin 63. User 1 (index 0) is
    # active over every bin: all events count, 10 -> 3, 11 -> 2, 12 -> 3, plus the tie-breaker
    # events / (max + 1): 3/4, 2/4, 3/4, 0
    np.testing.assert_allclose(m.score_users([0])[0], [3.75, 2.5, 3.75, 0.0])
    # user 4 (index 3) is active in bin 63 only: 11 -> 1 (day 10), 12 -> 3, 10 -> 0
    np.testing.assert_allclose(m.score_users([3])[0], [0.75, 1.5, 3.75, 0.0])
    # someone known only by a history: the last RECENT_BINS bins (here the same as user 4)
    hist = ds.to_csr("binary")[[0]]
    np.testing.assert_allclose(m.score_history(hist)[0], [0.75, 1.5, 3.75, 0.0])
    # a wider window (6 bins each side: 57..63) reaches day 9's event of item 11
    wide = WindowPopular(margin_bins=6).fit(ds)
    np.testing.assert_allclose(wide.score_users([3])[0], [0.75, 2.5, 3.75, 0.0])


def test_trending_decays_with_age() -> None:
    from recstack.models import create
    from recstack.models.retrieval.popular import Trending

    m = create("trending", half_life_days=10.0).fit(_data())
    assert isinstance(m, Trending)
    # latest timestamp = day 10; a 10-day half-life: item 10's 3 users (day 0) count 0.5 each -> 1.5;
    # item 11: user 1's latest event (day 10) -> 1; item 12: 2 users on day 10 -> 2; item 13: 0
    np.testing.assert_allclose(m.score_users([0])[0], [1.5, 1.0, 2.0, 0.0])
    assert m.recommend([0], 2)[0].tolist() == [[2, 0]]  # all-time popularity would rank item 10 first


def test_genre_trending_scales_the_trend_by_the_users_genres() -> None:
    import scipy.sparse as sp

    from recstack.models import create

    ds = _data(genres=True)  # genres: 10 A, 11 B, 12 A and B, 13 B
    m = create("genre_trending", half_life_days=10.0, smoothing=0.0).fit(ds)
    # trend [1.5, 1, 2, 0]; a history of item 10 only: genre shares A 1, B 0; affinity = mean share over
    # the item's genres x 2 genres: [2, 0, 1, 0] -> scores [3, 0, 2, 0]
    hist = sp.csr_matrix(([1.0], ([0], [0])), shape=(1, 4))
    np.testing.assert_allclose(m.score_history(hist)[0], [3.0, 0.0, 2.0, 0.0])
    smooth = create("genre_trending", half_life_days=10.0, smoothing=0.1).fit(ds)
    np.testing.assert_allclose(smooth.score_history(hist)[0], [3.15, 0.1, 2.2, 0.0], rtol=1e-6)
    # an empty history: the trend itself
    np.testing.assert_allclose(m.score_history(sp.csr_matrix((1, 4)))[0], [1.5, 1.0, 2.0, 0.0])
