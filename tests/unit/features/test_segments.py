"""Segment popularity (`recstack.features.segments`), worked out by hand.

Users 0, 1 (F, age 30 -> bucket 2), user 2 (M, age 30), user 3 (M, no age). Items: user 0 -> {0, 1},
user 1 -> {0}, user 2 -> {2}, user 3 -> {2, 1}. Distinct users per item: [2, 2, 2]; p = [0.5, 0.5, 0.5].
Gender F: n = 2, counts [2, 1, 0]; gender M: n = 2, counts [0, 1, 2].
"""

from __future__ import annotations

import numpy as np
import pytest

from recstack.features.segments import SegmentPopularity, profile_keys

USERS = [0, 0, 1, 2, 3, 3]
ITEMS = [0, 1, 0, 2, 2, 1]
PROFILES = [
    {"age": 30, "gender": "F"},
    {"age": 30, "gender": "f"},
    {"age": 30, "gender": "M", "occupation": "Writer"},
    {"gender": "M"},
]


@pytest.fixture
def seg() -> SegmentPopularity:
    return SegmentPopularity.fit(USERS, ITEMS, PROFILES, 3)


def test_profile_keys_normalise_and_bucket() -> None:
    assert profile_keys({"age": 30, "gender": "f", "occupation": " Writer "}) == {
        "age": "2",
        "gender": "F",
        "occupation": "writer",
        "age_gender": "2|F",
    }
    assert profile_keys(None) == {} and profile_keys({"gender": ""}) == {}


def test_counts_by_segment(seg: SegmentPopularity) -> None:
    assert seg.item_users.tolist() == [2, 2, 2] and seg.n_users == 4
    f, m = seg.keys["gender"]["F"], seg.keys["gender"]["M"]
    assert seg.counts["gender"][f].tolist() == [2, 1, 0] and seg.sizes["gender"][f] == 2
    assert seg.counts["gender"][m].tolist() == [0, 1, 2]
    assert seg.keys["occupation"] == {"writer": 0}


def test_shrinkage_between_segment_and_global(seg: SegmentPopularity) -> None:
    # alpha 0: the segment's own shares; alpha 2: (c + 2 * 0.5) / (2 + 2) = [0.75, 0.5, 0.25]
    raw = seg.with_params(features=["gender"], alpha=0.0).scores({"gender": "F"})
    assert raw.tolist() == pytest.approx([1.0, 0.5, 0.0])
    assert seg.with_params(features=["gender"], alpha=2.0).scores({"gender": "F"}).tolist() == pytest.approx(
        [0.75, 0.5, 0.25]
    )
    # a huge alpha is global popularity (all equal here)
    big = seg.with_params(features=["gender"], alpha=1e9).scores({"gender": "F"})
    assert np.ptp(big) < 1e-6


def test_unknown_or_missing_segments_score_as_global(seg: SegmentPopularity) -> None:
    s = seg.with_params(features=["gender", "occupation"], alpha=0.0)
    assert s.scores({}).tolist() == pytest.approx([0.5, 0.5, 0.5])
    assert s.scores({"gender": "X"}).tolist() == pytest.approx([0.5, 0.5, 0.5])
    assert s.matched({"gender": "X"}) == [] and s.matched({"gender": "m"}) == ["gender"]
    # mean of the gender rate and the global share for the missing occupation
    assert s.scores({"gender": "F"}).tolist() == pytest.approx([0.75, 0.5, 0.25])


def test_product_combination_and_many(seg: SegmentPopularity) -> None:
    s = seg.with_params(features=["gender", "occupation"], alpha=2.0, combine="product")
    one = s.scores({"gender": "M", "occupation": "writer"})
    # gender M rates [0.25, 0.5, 0.75]; writer (n 1, counts [0, 0, 1]): (c + 1) / 3 = [1/3, 1/3, 2/3]
    # log p + sum log(rate / p): item 2 first, then 1, then 0
    assert np.argsort(-one).tolist() == [2, 1, 0]
    many = s.scores_many([{"gender": "M", "occupation": "writer"}, {}])
    assert many[0].tolist() == pytest.approx(one.tolist())
    assert many[1].tolist() == pytest.approx(np.log(np.full(3, 0.5) + 1e-9).tolist())


def test_bad_params_are_refused(seg: SegmentPopularity) -> None:
    with pytest.raises(ValueError, match="unknown segment features"):
        seg.with_params(features=["zip"])
    with pytest.raises(ValueError, match="alpha"):
        seg.with_params(alpha=-1)
