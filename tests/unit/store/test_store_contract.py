"""The FeatureStore contract, run on the embedded and the Redis backend."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest

from recstack.errors import InvalidArgumentError, UnknownIdError
from recstack.store import EmbeddedFeatureStore, FeatureStore, open_store

# users 0..2; gender codes into the sorted vocabulary ["F", "M"], null -> -1; null score -> 0
USERS = pl.DataFrame(
    {
        "user": [0, 1, 2],
        "age": [25, 40, 31],
        "gender": ["M", "F", None],
        "score": [0.5, None, 1.5],
    }
)
# items 0..3, row 2 absent (-> zeros); genres vocabulary sorted: ["Action", "Comedy", "Drama"]
ITEMS = pl.DataFrame(
    {
        "item": [0, 1, 3],
        "year": [1995, 1980, 2001],
        "genres": [["Drama", "Comedy"], [], ["Action"]],
        "emb": [[0.1, 0.2], [0.3, 0.4], [0.5, 0.6]],
    }
)
INTERACTIONS = pl.DataFrame(
    {
        "user": [0, 0, 1, 0],
        "item": [1, 0, 3, 3],
        "rating": [4.0, 5.0, 3.0, 2.0],
        "timestamp": [200, 100, 50, 300],
    }
)
N_ITEMS = 4

Factory = Callable[[str], FeatureStore]


@pytest.fixture(params=["embedded", pytest.param("redis", marks=pytest.mark.redis)])
def make_store(request: pytest.FixtureRequest) -> Factory:
    def make(release_id: str = "r1") -> FeatureStore:
        if request.param == "embedded":
            return EmbeddedFeatureStore.from_tables(release_id, USERS, ITEMS, INTERACTIONS, n_items=N_ITEMS)
        url = request.getfixturevalue("redis_url")
        request.getfixturevalue("redis_client")  # deletes the prefix's keys afterwards
        prefix = request.getfixturevalue("redis_prefix")
        src = EmbeddedFeatureStore.from_tables(release_id, USERS, ITEMS, INTERACTIONS, n_items=N_ITEMS)
        from recstack.store import redis as rs

        client = rs.connect(url)
        u, i, h = src.arrays()
        return rs.bulk_load(client, release_id, u, i, h, src.vocabularies, prefix=prefix)

    return make


def test_sizes_names_release(make_store: Factory) -> None:
    st = make_store("rel-A.1")
    assert st.release_id == "rel-A.1"
    assert (st.n_users, st.n_items) == (3, 4)
    assert st.user_features == ["age", "gender", "score"]
    assert st.item_features == ["emb", "genres", "year"]
    assert st.vocabularies == {"gender": ["F", "M"], "genres": ["Action", "Comedy", "Drama"]}


def test_get_users(make_store: Factory) -> None:
    st = make_store("r1")
    f = st.get_users(np.array([2, 0], dtype=np.int64))
    assert f["age"].dtype == np.int32 and f["age"].tolist() == [31, 25]
    assert f["gender"].dtype == np.int32 and f["gender"].tolist() == [-1, 1]  # null -> -1, "M" -> 1
    assert f["score"].dtype == np.float32 and f["score"].tolist() == [1.5, 0.5]


def test_get_items_gather_with_repeats_and_missing_row(make_store: Factory) -> None:
    st = make_store("r1")
    f = st.get_items([3, 0, 2, 3])
    assert f["year"].tolist() == [2001, 1995, 0, 2001]  # item 2 has no row -> 0
    assert f["genres"].dtype == np.float32 and f["genres"].shape == (4, 3)
    # Action, Comedy, Drama
    assert f["genres"].tolist() == [[1, 0, 0], [0, 1, 1], [0, 0, 0], [1, 0, 0]]
    np.testing.assert_allclose(f["emb"], [[0.5, 0.6], [0.1, 0.2], [0, 0], [0.5, 0.6]], rtol=1e-6)


def test_contiguous_and_empty_batches(make_store: Factory) -> None:
    st = make_store("r1")
    f = st.get_items(np.arange(4))
    assert f["year"].tolist() == [1995, 1980, 0, 2001]
    empty = st.get_items(np.array([], dtype=np.int64))
    assert empty["genres"].shape == (0, 3) and empty["year"].shape == (0,)


def test_unknown_ids(make_store: Factory) -> None:
    st = make_store("r1")
    with pytest.raises(UnknownIdError, match=r"unknown item index 4 \(valid: 0\.\.3\)"):
        st.get_items([0, 4])
    with pytest.raises(UnknownIdError, match="unknown user index -1"):
        st.get_users([-1])
    with pytest.raises(InvalidArgumentError, match="integer dense indices"):
        st.get_users(np.array([0.5]))


def test_history_newest_last(make_store: Factory) -> None:
    st = make_store("r1")
    h = st.get_history(0)
    # user 0's events sorted by timestamp: (item 0, t100, 5), (item 1, t200, 4), (item 3, t300, 2)
    assert h.items.tolist() == [0, 1, 3]
    assert h.timestamps.tolist() == [100, 200, 300]
    assert h.ratings.tolist() == [5.0, 4.0, 2.0]
    assert (h.items.dtype, h.timestamps.dtype, h.ratings.dtype) == (np.int64, np.int64, np.float32)
    items, ts, ratings = st.get_history(1)  # a plain 3-tuple too
    assert items.tolist() == [3] and ts.tolist() == [50] and ratings.tolist() == [3.0]
    assert len(st.get_history(2).items) == 0


def test_tied_timestamps_order_like_the_catalog() -> None:
    # equal timestamps are ordered by item index, as the serving catalog orders them
    inter = pl.DataFrame(
        {
            "user": [0, 0, 0, 0],
            "item": [3, 1, 2, 0],
            "rating": [1.0, 2.0, 3.0, 4.0],
            "timestamp": [5, 5, 9, 5],
        }
    )
    st = EmbeddedFeatureStore.from_tables("r1", USERS, ITEMS, inter, n_items=N_ITEMS)
    h = st.get_history(0)
    assert h.items.tolist() == [0, 1, 3, 2]
    assert h.ratings.tolist() == [4.0, 2.0, 1.0, 3.0]


def test_append_event_updates_at_once(make_store: Factory) -> None:
    st = make_store("r1")
    st.append_event(2, 1, "view", ts=1000)
    st.append_event(2, 3, "rating", rating=4.5, ts=1001)
    h = st.get_history(2)
    assert h.items.tolist() == [1, 3] and h.timestamps.tolist() == [1000, 1001]
    assert np.isnan(h.ratings[0]) and h.ratings[1] == 4.5  # a view has no rating -> NaN
    # an event older than the last one is placed by timestamp: 100 < 150 < 200
    st.append_event(0, 2, "click", ts=150)
    assert st.get_history(0).items.tolist() == [0, 2, 1, 3]
    before = int(time.time())
    st.append_event(1, 0, "click")
    h1 = st.get_history(1)
    assert h1.items.tolist() == [3, 0] and h1.timestamps[-1] >= before


def test_append_with_log_offset_is_idempotent(make_store: Factory) -> None:
    """An event-log offset is applied at most once per release (replay after a restart, or two
    workers tailing one log into a shared store)."""
    st = make_store("r1")  # user 2 has no release history
    assert st.append_event(2, 1, "view", ts=1000, offset=7) == 1
    assert st.append_event(2, 1, "view", ts=1000, offset=7) == 1  # the same event again: no change
    assert st.append_event("web-1", 2, "view", ts=1001, offset=7) == 0  # offset already used
    assert st.append_event(2, 3, "click", ts=1002, offset=8) == 2
    assert st.append_event(2, 0, "click", ts=1003) == 3  # no offset: always appended
    assert st.append_event(2, 0, "click", ts=1003) == 4
    assert st.get_history(2).items.tolist() == [1, 3, 0, 0]
    assert len(st.get_history("web-1").items) == 0


def test_append_event_validation(make_store: Factory) -> None:
    st = make_store("r1")
    with pytest.raises(InvalidArgumentError, match="needs rating="):
        st.append_event(0, 1, "rating")
    with pytest.raises(InvalidArgumentError, match="not one of view, click, rating"):
        st.append_event(0, 1, "like")
    with pytest.raises(UnknownIdError, match="unknown item index 9"):
        st.append_event(0, 9, "view")
    with pytest.raises(UnknownIdError, match="unknown user index 3"):
        st.append_event(3, 1, "view")
    with pytest.raises(InvalidArgumentError, match="finite"):
        st.append_event(0, 1, "rating", rating=float("nan"))
    assert st.get_history(0).items.tolist() == [0, 1, 3]  # nothing was appended


def test_string_key_for_users_unknown_to_the_release(make_store: Factory) -> None:
    st = make_store("r1")
    assert len(st.get_history("web-42").items) == 0
    st.append_event("web-42", 2, "click", ts=10)
    st.append_event("web-42", 0, "rating", rating=3, ts=11)
    h = st.get_history("web-42")
    assert h.items.tolist() == [2, 0] and h.ratings[1] == 3.0
    assert len(st.get_history(0).items) == 3  # dense user 0 is a different history


# ------------------------------------------------------------------------------- embedded only


def test_embedded_contiguous_read_is_a_readonly_view() -> None:
    st = EmbeddedFeatureStore.from_tables("r1", USERS, ITEMS, INTERACTIONS, n_items=N_ITEMS)
    f = st.get_items(np.array([1, 2, 3]))
    base = st.get_items(np.arange(4))["genres"]
    assert np.shares_memory(f["genres"], base) and not f["genres"].flags.writeable
    g = st.get_items(np.array([3, 1]))  # a gather is a fresh (writeable) copy
    assert not np.shares_memory(g["genres"], base)
    h = st.get_history(0)
    assert not h.items.flags.writeable


def test_embedded_save_load_mmap(tmp_path: Path) -> None:
    st = EmbeddedFeatureStore.from_tables("r9", USERS, ITEMS, INTERACTIONS, n_items=N_ITEMS)
    st.save(tmp_path / "fs")
    back = EmbeddedFeatureStore.load(tmp_path / "fs")
    assert back.release_id == "r9" and back.vocabularies == st.vocabularies
    assert isinstance(back.get_items(np.arange(4))["genres"], np.memmap)
    for ids in ([3, 0], [1, 2]):
        a, b = st.get_items(ids), back.get_items(ids)
        assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    assert back.get_history(0).items.tolist() == [0, 1, 3]


def test_bad_tables_are_clear() -> None:
    with pytest.raises(InvalidArgumentError, match="duplicate indices"):
        EmbeddedFeatureStore.from_tables("r", USERS.vstack(USERS), ITEMS, INTERACTIONS)
    with pytest.raises(InvalidArgumentError, match="same length"):
        bad = ITEMS.with_columns(pl.Series("emb", [[0.1], [0.3, 0.4], [0.5, 0.6]]))
        EmbeddedFeatureStore.from_tables("r", USERS, bad, INTERACTIONS)
    with pytest.raises(InvalidArgumentError, match="release id"):
        EmbeddedFeatureStore.from_tables("bad id:1", USERS, ITEMS, INTERACTIONS)
    with pytest.raises(InvalidArgumentError, match="users outside"):
        EmbeddedFeatureStore.from_tables("r", USERS.head(1), ITEMS, INTERACTIONS, n_users=1)


# ------------------------------------------------------------------------------- redis only


@pytest.mark.redis
def test_redis_keys_pointer_and_atomic_switch(redis_url: str, redis_client: Any, redis_prefix: str) -> None:
    from recstack.store import redis as rs

    p = redis_prefix
    s1 = open_store(
        "redis", release_id="r1", users=USERS, items=ITEMS, interactions=INTERACTIONS, url=redis_url, prefix=p
    )
    assert redis_client.get(f"{p}:current") == b"r1"
    assert redis_client.exists(f"{p}:r1:meta", f"{p}:r1:item:3", f"{p}:r1:user:0", f"{p}:r1:history:0") == 4
    # a row is one packed record: emb 2 x f4 + genres 3 x f4 + year i4 = 24 bytes
    assert len(redis_client.get(f"{p}:r1:item:3")) == 24
    users2 = USERS.with_columns(pl.Series("age", [1, 2, 3]))
    s2 = open_store(
        "redis",
        release_id="r2",
        users=users2,
        items=ITEMS,
        interactions=INTERACTIONS,
        url=redis_url,
        prefix=p,
    )
    assert rs.current_release(redis_client, p) == "r2"
    assert rs.list_releases(redis_client, p) == ["r1", "r2"]
    fresh = rs.RedisFeatureStore(redis_client, prefix=p)  # follows the pointer
    assert fresh.release_id == "r2" and fresh.get_users([0])["age"].tolist() == [1]
    assert s1.get_users([0])["age"].tolist() == [25] and not s1.is_current()  # old readers keep r1
    assert s2.is_current()
    with pytest.raises(InvalidArgumentError, match="is current"):
        rs.delete_release(redis_client, "r2", p)
    assert rs.delete_release(redis_client, "r1", p) == 1 + 3 + 4 + 2  # meta, users, items, 2 histories
    assert rs.list_releases(redis_client, p) == ["r2"]
    # opening an already loaded release attaches (no reload) and can switch the pointer back
    attached = open_store("redis", release_id="r2", url=redis_url, prefix=p)
    assert attached.release_id == "r2"


@pytest.mark.redis
def test_redis_batch_read_is_one_round_trip(redis_url: str, redis_client: Any, redis_prefix: str) -> None:
    from recstack.store import redis as rs

    n_items = 300
    items = pl.DataFrame({"item": np.arange(n_items), "pop": np.linspace(0, 1, n_items)})
    users = pl.DataFrame({"user": [0]})
    inter = pl.DataFrame({"user": [0], "item": [5], "rating": [1.0], "timestamp": [1]})
    st = open_store(
        "redis",
        release_id="big",
        users=users,
        items=items,
        interactions=inter,
        url=redis_url,
        prefix=redis_prefix,
    )
    assert isinstance(st, rs.RedisFeatureStore)
    calls: list[tuple[Any, ...]] = []
    real = st.client.execute_command

    def counting(*args: Any, **kwargs: Any) -> Any:
        calls.append(args[:1])
        return real(*args, **kwargs)

    st.client.execute_command = counting  # type: ignore[method-assign]
    ids = np.random.default_rng(0).permutation(n_items)
    f = st.get_items(ids)
    assert calls == [("MGET",)]
    np.testing.assert_allclose(f["pop"], np.linspace(0, 1, n_items, dtype=np.float32)[ids])


def test_from_release_splits_feature_tables_by_rows() -> None:
    import dataclasses

    from recstack.data.dataset import Dataset
    from recstack.store import from_release

    ds = Dataset.from_frames(
        "tiny",
        pl.DataFrame(
            {"user_id": [10, 10, 20], "item_id": [1, 2, 3], "rating": [5.0, 3.0, 4.0], "timestamp": [3, 1, 2]}
        ),
    )

    @dataclasses.dataclass
    class Tables:  # shaped like recstack.features.FeatureTables: 2 users, 3 items
        activity: np.ndarray
        user_mean_rating: np.ndarray
        popularity: np.ndarray
        vocabularies: dict[str, list[str]]

    @dataclasses.dataclass
    class FakeRelease:
        id: str
        dataset: Dataset
        features: Tables

    rel = FakeRelease(
        "rel-7",
        ds,
        Tables(np.array([2.0, 1.0]), np.array([4.0, 4.0]), np.array([1.0, 1.0, 1.0]), {"genres": []}),
    )
    st = from_release(rel)
    assert st.release_id == "rel-7" and st.user_features == ["activity", "user_mean_rating"]
    assert st.item_features == ["popularity"]
    # user 10 -> index 0: items 1 (t3), 2 (t1) -> newest last: item index 1 (t1), then 0 (t3)
    assert st.get_history(0).items.tolist() == [1, 0]
