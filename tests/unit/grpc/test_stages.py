"""`rank_stage(recall_stage(req))` == `Pipeline.recommend(req)`: the gRPC split reuses the stages."""

from __future__ import annotations

import numpy as np
import pytest

from recstack.errors import UnknownIdError
from recstack.serving.grpc._stages import rank_stage, recall_stage
from recstack.serving.pipeline import Pipeline, RecRequest

CASES = [
    RecRequest(user_id=u, k=k, model=m)
    for u in ("1", "4", "7", "12")
    for k in (1, 3, 6)
    for m in (None, "recall")
] + [
    RecRequest(profile={"age": 40, "gender": "F"}, k=5),
    RecRequest(liked_items=[100, 103], k=4),
    RecRequest(user_id="12", k=5, exclude=["101"], genres=["Comedy"]),
    RecRequest(user_id="unknown-user", k=3),
    RecRequest(user_id="2", k=8, exclude_seen=False),
]


@pytest.mark.parametrize("req", CASES, ids=lambda r: f"{r.user_id}-{r.k}-{r.model}")
def test_split_equals_recommend(pipeline: Pipeline, req: RecRequest) -> None:
    res = pipeline.recommend(req)
    cand = recall_stage(pipeline, req)
    ranked = rank_stage(pipeline, req, cand.items, cand.scores)
    np.testing.assert_array_equal(ranked.items, res.items)
    np.testing.assert_array_equal(ranked.scores, res.scores)
    assert ranked.model == res.model
    assert [cand.sources[p] for p in ranked.positions.tolist()] == res.sources
    assert cand.user_kind == res.user_kind and cand.fallbacks == res.fallbacks


def test_recall_candidates_are_ordered_and_unseen(pipeline: Pipeline) -> None:
    cand = recall_stage(pipeline, RecRequest(user_id="12", k=3))
    assert np.all(np.diff(cand.scores) <= 0)  # best merged score first
    # user 12 saw items 100, 103, 104 = indices 0, 3, 4
    assert not set(cand.items.tolist()) & {0, 3, 4}
    assert len(cand.items) == len(set(cand.items.tolist()))


def test_unknown_liked_item_raises(pipeline: Pipeline) -> None:
    with pytest.raises(UnknownIdError, match="999"):
        recall_stage(pipeline, RecRequest(liked_items=[999]))
