"""Redis FeatureStore on MovieLens 100K (data dir): same answers as the embedded store."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from recstack.data import load_movielens
from recstack.data.dataset import Dataset
from recstack.store import EmbeddedFeatureStore, open_store
from recstack.store import redis as rs

pytestmark = [pytest.mark.slow, pytest.mark.redis, pytest.mark.ml100k]

USER_COLS = ["age", "gender", "occupation"]
ITEM_COLS = ["year", "genres"]


@pytest.fixture(scope="module")
def ml100k() -> Dataset:
    return load_movielens("ml-100k")


def test_redis_matches_embedded_on_ml100k(
    ml100k: Dataset, redis_url: str, redis_client: Any, redis_prefix: str
) -> None:
    emb = EmbeddedFeatureStore.from_dataset(
        "ml100k-1", ml100k, user_columns=USER_COLS, item_columns=ITEM_COLS
    )
    # ML-100K: 943 users, 1682 items, 100,000 ratings; every user has >= 20 ratings
    assert (emb.n_users, emb.n_items) == (943, 1682)
    lengths = [len(emb.get_history(u).items) for u in range(emb.n_users)]
    assert sum(lengths) == 100_000 and min(lengths) >= 20
    assert emb.vocabularies["gender"] == ["F", "M"]
    genres = emb.get_items(np.arange(emb.n_items))["genres"]
    # the multi-hot row sums are the genre list lengths of the items table
    want = np.zeros(emb.n_items)
    for i, g in zip(ml100k.items["item"].to_list(), ml100k.items["genres"].to_list(), strict=True):
        want[i] = len(g or [])
    np.testing.assert_array_equal(genres.sum(axis=1), want)

    u, i, h = emb.arrays()
    red = rs.bulk_load(rs.connect(redis_url), "ml100k-1", u, i, h, emb.vocabularies, prefix=redis_prefix)
    assert rs.current_release(redis_client, redis_prefix) == "ml100k-1"
    rng = np.random.default_rng(0)
    for _ in range(5):
        ids = rng.choice(emb.n_items, 300, replace=False)
        a, b = emb.get_items(ids), red.get_items(ids)
        assert a.keys() == b.keys() and all(
            np.array_equal(a[k], b[k]) and a[k].dtype == b[k].dtype for k in a
        )
        uids = rng.choice(emb.n_users, 50, replace=False)
        a, b = emb.get_users(uids), red.get_users(uids)
        assert all(np.array_equal(a[k], b[k]) for k in a)
    for user in rng.choice(emb.n_users, 40, replace=False).tolist():
        ha, hb = emb.get_history(user), red.get_history(user)
        assert np.array_equal(ha.items, hb.items) and np.array_equal(ha.timestamps, hb.timestamps)
        np.testing.assert_array_equal(ha.ratings, hb.ratings)
        assert np.all(np.diff(hb.timestamps) >= 0)  # newest last

    # an event is visible at once, to every reader of the release (here: a second store object)
    other = rs.RedisFeatureStore(rs.connect(redis_url), prefix=redis_prefix)
    n0 = len(other.get_history(0).items)
    red.append_event(0, 1681, "click", ts=2_000_000_000)
    h0 = other.get_history(0)
    assert len(h0.items) == n0 + 1 and h0.items[-1] == 1681 and np.isnan(h0.ratings[-1])


def test_open_store_builds_then_attaches(
    ml100k: Dataset, redis_url: str, redis_client: Any, redis_prefix: str
) -> None:
    st = open_store("redis", dataset=ml100k, release_id="ml-a", url=redis_url, prefix=redis_prefix)
    assert st.release_id == "ml-a" and "genres" in st.item_features
    n_keys = sum(1 for _ in redis_client.scan_iter(match=f"{redis_prefix}:ml-a:*", count=5000))
    # meta + 943 users + 1682 items + 943 histories
    assert n_keys == 1 + 943 + 1682 + 943
    again = open_store("redis", dataset=ml100k, release_id="ml-a", url=redis_url, prefix=redis_prefix)
    assert again.get_items([0])["year"].tolist() == st.get_items([0])["year"].tolist()
