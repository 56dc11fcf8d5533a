"""Each servicer in process over real gRPC (servers on free ports): answers, NOT_FOUND envelopes,
log ids, and the aggregator's chain == the single-process pipeline."""

from __future__ import annotations

from typing import Any

import grpc
import numpy as np
import pytest

from recstack.serving.grpc._common import ERROR_KEY
from recstack.serving.grpc.client import GrpcClient, ServiceCallError, make_user
from recstack.serving.grpc.protos import common_pb2
from recstack.serving.pipeline import Pipeline, RecRequest


@pytest.fixture
def client(cluster: Any) -> GrpcClient:
    c = GrpcClient(cluster.addresses, timeout=5.0)
    yield c  # type: ignore[misc]
    c.close()


def _ids(pipeline: Pipeline, idx: np.ndarray) -> list[str]:
    return [str(pipeline.catalog.item_ids[i]) for i in idx.tolist()]


# ------------------------------------------------------------------------------------------ user
def test_user_profile_and_history_most_recent_first(client: GrpcClient) -> None:
    # user 12 saw 100 (t=1195), 103 (t=1200), 104 (t=1201): most recent first 104, 103, 100
    r = client.get_user("12", history_limit=10, log_id="abc")
    assert r.error.code == 0 and r.log_id == "abc" and r.release_id == "tiny-grpc-1"
    assert r.known and r.history_count == 3
    assert [h.item_id for h in r.history] == ["104", "103", "100"]
    assert [h.timestamp for h in r.history] == [1201, 1200, 1195]
    assert [h.rating for h in r.history] == [3.0, 4.0, 5.0]
    # age 20 + (12 % 3) * 15 = 20, gender F (12 even), occupation engineer (> 6)
    assert r.profile["age"] == "20" and r.profile["gender"] == "F" and r.profile["occupation"] == "engineer"
    assert len(client.get_user("12", history_limit=1).history) == 1


def test_unknown_user_is_not_found_with_envelope(cluster: Any) -> None:
    from recstack.serving.grpc.protos import user_pb2, user_pb2_grpc

    with grpc.insecure_channel(cluster.address("user")) as ch:
        stub = user_pb2_grpc.UserServiceStub(ch)
        with pytest.raises(grpc.RpcError) as ei:
            stub.GetUser(user_pb2.UserRequest(log_id="L1", user_id="999"), timeout=5)
    exc = ei.value
    assert exc.code() == grpc.StatusCode.NOT_FOUND
    assert "unknown user id '999'" in exc.details()
    env = common_pb2.Error()
    env.ParseFromString(dict(exc.trailing_metadata())[ERROR_KEY])
    assert env.code == grpc.StatusCode.NOT_FOUND.value[0] == 5
    assert "unknown user id '999'" in env.text


def test_client_error_carries_status(client: GrpcClient) -> None:
    with pytest.raises(ServiceCallError) as ei:
        client.get_user("")
    assert ei.value.status == grpc.StatusCode.INVALID_ARGUMENT
    assert "user_id is empty" in ei.value.envelope.text


# ------------------------------------------------------------------------------------------ item
def test_items_in_request_order(client: GrpcClient) -> None:
    r = client.get_items(["103", "100"], log_id="x")
    assert r.log_id == "x" and r.error.code == 0
    assert [i.item_id for i in r.items] == ["103", "100"]
    it = r.items[0]  # index 3: Comedy (3 % 2 = 1), year 2003, 4 users
    assert (it.title, it.year, list(it.genres), it.popularity) == ("Movie 3", 2003, ["Comedy"], 4)


def test_unknown_item_is_not_found(client: GrpcClient) -> None:
    with pytest.raises(ServiceCallError) as ei:
        client.get_items(["100", "555"])
    assert ei.value.status == grpc.StatusCode.NOT_FOUND
    assert "555" in ei.value.envelope.text and ei.value.envelope.code == 5


def test_popular_order_and_exclude(client: GrpcClient) -> None:
    # popularity 7, 4, 4, 4, 3, 2, 2, 2 -> 100, 101, 102, ...; excluding 100 and 102
    assert [i.item_id for i in client.popular(3).items] == ["100", "101", "102"]
    assert [i.item_id for i in client.popular(3, exclude=["100", "102", "nope"]).items] == [
        "101",
        "103",
        "104",
    ]


# ---------------------------------------------------------------------------------- recall/rank
def test_recall_never_returns_seen_items(client: GrpcClient) -> None:
    r = client.recall(make_user("12"), k=3)
    ids = [c.item_id for c in r.candidates]
    assert r.user_kind == "known" and not r.cold_start
    assert not {"100", "103", "104"} & set(ids)
    scores = [c.score for c in r.candidates]
    assert scores == sorted(scores, reverse=True)  # best merged recall score first
    assert all(c.sources for c in r.candidates)


def test_recall_unknown_bare_user_is_not_found(client: GrpcClient) -> None:
    with pytest.raises(ServiceCallError) as ei:
        client.recall(make_user("nobody"))
    assert ei.value.status == grpc.StatusCode.NOT_FOUND
    assert "profile" in ei.value.envelope.text  # says what to send instead


def test_rank_orders_by_ranker_with_genre_cap(client: GrpcClient) -> None:
    # ranker lin: score = -(index + 1): 100 -> -1, 101 -> -2, ... so low ids first; genre cap 2
    # (Action = even indices): 100 A, 102 A, then 104 A would be a 3rd Action -> 101 C comes first.
    r = client.rank(make_user("1"), ["104", "101", "102", "100"], k=3, model="lin")
    assert [c.item_id for c in r.items] == ["100", "101", "102"]
    assert [c.score for c in r.items] == [-1.0, -2.0, -3.0]
    assert r.model == "lin"
    r2 = client.rank(make_user("1"), ["104", "106", "102", "100"], k=3, model="lin")
    # all Action: 100, 102 kept, 104 demoted behind... no other genre, so 104 then 106 follow
    assert [c.item_id for c in r2.items] == ["100", "102", "104"]


def test_rank_unknown_model_is_invalid(client: GrpcClient) -> None:
    with pytest.raises(ServiceCallError) as ei:
        client.rank(make_user("1"), ["100"], model="nope")
    assert ei.value.status == grpc.StatusCode.INVALID_ARGUMENT and "lin" in ei.value.envelope.text


# ------------------------------------------------------------------------------------ aggregator
@pytest.mark.parametrize(
    ("user", "req"),
    [
        (make_user("12"), RecRequest(user_id="12", k=4)),
        (make_user("3"), RecRequest(user_id="3", k=4)),
        (make_user(profile={"age": 25, "gender": "M"}), RecRequest(profile={"age": 25, "gender": "M"}, k=4)),
        (make_user(liked=["101", "105"]), RecRequest(liked_items=["101", "105"], k=4)),
    ],
)
def test_chain_equals_single_process_pipeline(
    client: GrpcClient, pipeline: Pipeline, user: common_pb2.User, req: RecRequest
) -> None:
    res = pipeline.recommend(req)
    r = client.recommend(user, k=4, log_id="chain")
    assert r.error.code == 0 and not r.error.degraded and r.log_id == "chain"
    assert [s.item.item_id for s in r.items] == _ids(pipeline, res.items)
    np.testing.assert_array_equal(np.array([s.score for s in r.items], np.float32), res.scores)
    assert r.model == res.model == "lin" and r.user_kind == res.user_kind
    assert [list(s.sources) for s in r.items] == res.sources
    assert r.items[0].item.title.startswith("Movie ")  # metadata from the item service
    assert set(r.hop_ms) == (
        {"user", "recall", "rank", "item"} if user.user_id else {"recall", "rank", "item"}
    )


def test_chain_model_recall_and_exclude(client: GrpcClient, pipeline: Pipeline) -> None:
    res = pipeline.recommend(RecRequest(user_id="5", k=3, model="recall", exclude=["100"]))
    r = client.recommend(make_user("5"), k=3, model="recall", exclude=["100"])
    assert [s.item.item_id for s in r.items] == _ids(pipeline, res.items)
    assert "100" not in [s.item.item_id for s in r.items]


def test_aggregator_not_found(client: GrpcClient) -> None:
    with pytest.raises(ServiceCallError) as ei:
        client.recommend(make_user("424242"))
    assert ei.value.status == grpc.StatusCode.NOT_FOUND
    assert ei.value.envelope.text.startswith("user service: unknown user id '424242'")
    with pytest.raises(ServiceCallError) as ei:
        client.recommend(make_user(liked=["100", "999"]))
    assert ei.value.status == grpc.StatusCode.NOT_FOUND and "999" in ei.value.envelope.text
    with pytest.raises(ServiceCallError) as ei:
        client.recommend(make_user())
    assert ei.value.status == grpc.StatusCode.INVALID_ARGUMENT


def test_new_user_id_with_profile_is_served(client: GrpcClient) -> None:
    r = client.recommend(make_user("new-1", profile={"age": 30}), k=2)
    assert r.error.code == 0 and len(r.items) == 2 and r.user_kind == "profile" and r.cold_start
