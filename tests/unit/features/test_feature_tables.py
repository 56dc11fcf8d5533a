"""Feature tables: encodings worked out by hand on a 3-user / 3-item dataset, Parquet round-trip."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest
import scipy.sparse as sp

from recstack.data.dataset import Dataset
from recstack.errors import ArtifactError
from recstack.features import FeatureTables, build_features, user_genre_affinity


@pytest.fixture()
def tiny() -> Dataset:
    inter = pl.DataFrame(
        {
            "user_id": [1, 1, 2, 3, 3, 3],
            "item_id": [10, 20, 10, 10, 20, 30],
            "rating": [5.0, 3.0, 4.0, 1.0, 2.0, 3.0],
            "timestamp": [1, 2, 3, 4, 5, 6],
        }
    )
    users = pl.DataFrame(
        {
            "user_id": [1, 2, 3],
            "age": [24, 53, None],
            "gender": ["M", "F", "M"],
            "occupation": ["writer", "other", "writer"],
            "zip_code": ["85711", "94043", None],
        }
    )
    items = pl.DataFrame(
        {
            "item_id": [10, 20, 30],
            "title": ["Toy Story (1995)", "Story of Us, The (1999)", "Heat (1995)"],
            "year": [1995, 1999, None],
            "genres": [["Animation", "Comedy"], ["Comedy"], []],
        }
    )
    return Dataset.from_frames("tiny", inter, users, items)


def test_user_encodings(tiny: Dataset) -> None:
    f = build_features(tiny)
    # bucket = number of edges (18, 25, 35, 45, 50, 56) <= age: 24 -> 1, 53 -> 5; vocab ["", "1", "5"]
    assert f.vocabularies["age_bucket"] == ["", "1", "5"]
    assert f.users_cat[:, 0].tolist() == [1, 2, 0]
    # gender vocab ["", "F", "M"]
    assert f.users_cat[:, 1].tolist() == [2, 1, 2]
    # occupation vocab ["", "other", "writer"]
    assert f.users_cat[:, 2].tolist() == [2, 1, 2]
    # zip prefix: first digit; vocab ["", "8", "9"]
    assert f.users_cat[:, 3].tolist() == [1, 2, 0]
    # activity log1p(#interactions): 2, 1, 3; mean ratings 4, 4, 2
    np.testing.assert_allclose(f.activity, np.log1p([2, 1, 3]), rtol=1e-6)
    np.testing.assert_allclose(f.user_mean_rating, [4.0, 4.0, 2.0])


def test_item_encodings(tiny: Dataset) -> None:
    f = build_features(tiny)
    assert f.vocabularies["genre"] == ["", "Animation", "Comedy"]
    np.testing.assert_array_equal(f.genres, [[1, 1], [0, 1], [0, 0]])
    # 1995 -> "1995", 1999 -> "1995" (5-year buckets), missing -> 0
    assert f.year_bucket.tolist() == [1, 1, 0]
    # "story" appears in two titles (kept), every other token in one (dropped); "the"/"of" are stop words
    assert f.vocabularies["title_token"] == ["", "story"]
    assert f.title_tokens[:, 0].tolist() == [1, 1, 0]
    # popularity log1p(3, 2, 1), mean ratings (5+4+1)/3, (3+2)/2, 3
    np.testing.assert_allclose(f.popularity, np.log1p([3, 2, 1]), rtol=1e-6)
    np.testing.assert_allclose(f.item_mean_rating, [10 / 3, 2.5, 3.0], rtol=1e-6)


def test_statistics_from_given_interactions_only(tiny: Dataset) -> None:
    train = tiny.interactions.filter(pl.col("timestamp") <= 3)
    f = build_features(tiny, train)
    np.testing.assert_allclose(f.popularity, np.log1p([2, 1, 0]), rtol=1e-6)
    assert f.activity[2] == 0.0


def test_profile_encoding(tiny: Dataset) -> None:
    f = build_features(tiny)
    assert f.encode_profile({"age": 50, "gender": "F", "occupation": "writer", "zip_code": "9"}).tolist() == [
        2,
        1,
        2,
        2,
    ]
    # unknown values and a missing profile map to the OOV code 0
    assert f.encode_profile({"occupation": "astronaut", "age": 10}).tolist() == [0, 0, 0, 0]
    assert f.encode_profile(None).tolist() == [0, 0, 0, 0]


def test_parquet_round_trip(tiny: Dataset, tmp_path: Path) -> None:
    f = build_features(tiny)
    f.save(tmp_path / "feat")
    assert sorted(p.name for p in (tmp_path / "feat").iterdir()) == [
        "features.json",
        "items.parquet",
        "users.parquet",
        "vocabularies.parquet",
    ]
    g = FeatureTables.load(tmp_path / "feat")
    assert g.vocabularies == f.vocabularies
    for name in ("users_cat", "activity", "genres", "year_bucket", "title_tokens", "popularity"):
        np.testing.assert_array_equal(getattr(g, name), getattr(f, name))
    with pytest.raises(ArtifactError, match=r"features\.json"):
        FeatureTables.load(tmp_path / "nothing")


def test_user_genre_affinity() -> None:
    genres = np.array([[1, 1], [0, 1], [0, 0]], dtype=np.float32)
    hist = sp.csr_matrix(np.array([[1, 1, 0], [0, 0, 1]], dtype=np.float32))
    # user 0: genre counts (1, 2) -> shares (1/3, 2/3); user 1: no genres -> zeros
    np.testing.assert_allclose(user_genre_affinity(hist, genres), [[1 / 3, 2 / 3], [0, 0]], rtol=1e-6)


def test_time_context_worked_by_hand(tiny: Dataset, tmp_path: Path) -> None:
    # timestamps 1..6 span 5 s cut into TIME_BINS bins: t -> (t - 1) / 5 * TIME_BINS (fractional bin)
    from recstack.features.tables import TIME_BINS

    f = build_features(tiny)
    assert f.has_time and f.user_time is not None and f.item_first_time is not None
    b = np.array([0, 1, 2, 3, 4, 5]) / 5 * TIME_BINS
    np.testing.assert_allclose(f.user_time, [[b[0], b[1]], [b[2], b[2]], [b[3], b[5]]], atol=1e-3)
    np.testing.assert_allclose(f.item_first_time, [b[0], b[1], b[5]], atol=1e-3)
    # user 0 (bins 0 .. 12.8 -> 13 bins) saw item 0 at t=1 and item 1 at t=2; user 2 (bins 38.4 ..
    # 63.99 -> bins 38..63, 26 bins) overlaps item 0's t=4 and item 2's t=6 rating
    local, age = f.time_features(np.array([0, 2]), np.array([[0, 1, 2], [0, 1, 2]]))
    np.testing.assert_allclose(local[0], np.log1p(np.array([1, 1, 0]) / 13), rtol=1e-5)
    np.testing.assert_allclose(local[1], np.log1p(np.array([1, 1, 1]) / 26), rtol=1e-5)
    # item 2 first appears after user 0's last activity: negative age
    assert age[0, 2] < 0 < age[0, 0]
    np.testing.assert_allclose(age[1, 2], (b[5] - b[5]) / TIME_BINS, atol=1e-4)
    g = FeatureTables.load(f.save(tmp_path / "f"))
    assert g.has_time
    for x, y in zip(
        f.time_features(None, np.array([[0, 2]])), g.time_features(None, np.array([[0, 2]])), strict=True
    ):
        np.testing.assert_array_equal(x, y)


def test_no_time_context_without_timestamps(tiny: Dataset) -> None:
    flat = tiny.interactions.with_columns(pl.lit(0, dtype=pl.Int64).alias("timestamp"))
    f = build_features(tiny, flat)
    assert not f.has_time
    assert f.time_features(np.array([0]), np.array([[0, 1]])) == []
