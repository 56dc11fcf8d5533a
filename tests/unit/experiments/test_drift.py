"""PSI worked out by hand, the drift reference of a data set, and a shifted live window (one
genre's items) that crosses the threshold while a window drawn like the data does not."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest

from recstack.data.dataset import Dataset
from recstack.ops.drift import DriftMonitor, DriftReference, psi

GENRES = ("Action", "Comedy", "Drama", "Horror")


def test_psi_by_hand() -> None:
    # p = (0.5, 0.5), q = (0.8, 0.2): 0.3 ln(1.6) + (-0.3) ln(0.4) = 0.1410 + 0.2749
    assert psi([50, 50], [80, 20]) == pytest.approx(0.3 * math.log(1.6) - 0.3 * math.log(0.4))
    assert psi([1, 1, 1], [1, 1, 1]) == 0.0
    assert math.isnan(psi([0, 0], [1, 1]))


N_USERS, N_ITEMS = 2000, 1000


def _draw(rng: np.random.Generator, n: int, t0: int) -> pl.DataFrame:
    """n interactions of a stationary process: Zipf-like item popularity, Pareto user activity."""
    pop = 1.0 / np.arange(1, N_ITEMS + 1) ** 0.9
    act = 1.0 / np.arange(1, N_USERS + 1) ** 0.7
    items = np.random.default_rng(99).permutation(N_ITEMS)[rng.choice(N_ITEMS, size=n, p=pop / pop.sum())]
    users = rng.choice(N_USERS, size=n, p=act / act.sum())
    ts = t0 + np.arange(n)
    return pl.DataFrame({"user_id": users, "item_id": items, "rating": np.full(n, 4.0), "timestamp": ts})


def _data(seed: int = 0) -> tuple[Dataset, pl.DataFrame]:
    """A training data set and the next 3000 interactions of the same process (external ids)."""
    rng = np.random.default_rng(seed)
    inter = _draw(rng, 40_000, 1_000_000_000)
    future = _draw(rng, 3000, 1_100_000_000)
    frame = pl.DataFrame(
        {
            "item_id": np.arange(N_ITEMS),
            "title": [f"m{i}" for i in range(N_ITEMS)],
            "genres": [[GENRES[i % 4]] for i in range(N_ITEMS)],
        }
    )
    users = pl.DataFrame({"user_id": np.arange(N_USERS)})
    return Dataset.from_frames("synthetic", inter, users, frame), future


def test_shifted_window_drifts_and_a_like_window_does_not() -> None:
    ds, future = _data()
    ref = DriftReference.from_dataset(ds)
    assert set(ref.reference) == {"user_activity", "item_popularity", "genre_mix"}
    # live traffic: the same process after the training data (ids are their own indices here)
    uv, iv = ds.user_vocab, ds.item_vocab
    live = [(uv.get(u), iv.get(i)) for u, i in future.select("user_id", "item_id").iter_rows()]
    like = DriftMonitor(ref, window=3000, min_events=100)
    like.observe_many(live)
    st = like.status()
    assert st["drifted"] == [] and max(st["psi"].values()) < 0.1, st
    # live traffic of one genre only (Horror: items 3, 7, 11, ...)
    horror = [(u, i) for u, i in live if i is not None and ds.item_genres()[i] == ["Horror"]]
    shifted = DriftMonitor(ref, window=3000, min_events=100)
    shifted.observe_many(horror)
    st2 = shifted.status()
    assert "genre_mix" in st2["drifted"] and st2["psi"]["genre_mix"] > 1.0, st2
    # new users only: user activity drifts
    fresh = DriftMonitor(ref, window=500, min_events=100)
    fresh.observe_many((None, i) for _, i in live[:500])
    assert "user_activity" in fresh.status()["drifted"]


def test_too_few_events_give_no_value() -> None:
    mon = DriftMonitor(DriftReference.from_dataset(_data()[0]), window=100, min_events=50)
    mon.observe_many([(0, 0)] * 49)
    assert all(math.isnan(v) for v in mon.scores().values())
    mon.observe(0, 0)
    assert not any(math.isnan(v) for v in mon.scores().values())
    mon.observe_many([(1, 1)] * 200)
    assert len(mon) == 100  # the window slides
