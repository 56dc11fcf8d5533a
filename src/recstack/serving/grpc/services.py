"""The five gRPC servicers. User, item, recall and rank serve one release through the serving
`Pipeline` (its catalog, history store and stages); the aggregator holds no release and chains the
others: user (in parallel with recall) -> recall -> rank -> item.

Failures: an unknown user / item id is NOT_FOUND (status + envelope); a bad argument is
INVALID_ARGUMENT. When a hop is down or misses its deadline the aggregator still answers, in
degraded form: recall order when rank is down, popular items (from the item service) when recall
is down, bare item ids when the item service is down; ``error.degraded`` and ``error.failed_hops``
say so. Every hop gets ``min(hop_timeout, time left of the caller's deadline)``, so the aggregator
never answers after its own deadline.
"""

from __future__ import annotations

import hmac
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import grpc
import numpy as np

from recstack.errors import InvalidArgumentError, UnavailableError, UnknownIdError
from recstack.events import EventLog
from recstack.serving._catalog import Catalog
from recstack.serving._history import HistoryBackend
from recstack.serving._items import item_record, new_item_row
from recstack.serving.api.deps import ForbiddenError, UnauthorizedError
from recstack.serving.grpc import _stages
from recstack.serving.grpc._common import (
    SERVICE_NAMES,
    abort,
    envelope_of,
    handle_errors,
    item_info,
    new_log_id,
    ok,
    to_request,
)
from recstack.serving.grpc.protos import (
    aggregator_pb2,
    aggregator_pb2_grpc,
    common_pb2,
    item_pb2,
    item_pb2_grpc,
    rank_pb2,
    rank_pb2_grpc,
    recall_pb2,
    recall_pb2_grpc,
    user_pb2,
    user_pb2_grpc,
)
from recstack.serving.pipeline import Pipeline

__all__ = [
    "AggregatorServicer",
    "ItemServicer",
    "RankServicer",
    "RecallServicer",
    "ServiceState",
    "UserServicer",
    "add_servicer",
]

log = logging.getLogger(__name__)

#: gRPC status codes after which the aggregator treats a hop as down and degrades
_DOWN = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.CANCELLED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.FAILED_PRECONDITION,
    }
)
#: seconds of the caller's deadline kept for assembling the answer
_RESERVE = 0.01
#: candidates the aggregator asks the item service for when recall is down
POPULAR_CANDIDATES = 100


@dataclass
class ServiceState:
    """What a release-backed service reads: the release id, the catalog (items, popularity), the
    history store and, for recall / rank, the pipeline. ``event_log``: where items added online
    (``AddItem``) are recorded (None: not persisted); ``api_key``: the key ``AddItem`` needs in the
    ``x-api-key`` metadata (None: ``AddItem`` is off, as ``POST /v1/items`` without admin keys)."""

    release_id: str
    base_catalog: Catalog
    history: HistoryBackend
    pipeline: Pipeline | None = None
    event_log: EventLog | None = None
    api_key: str | None = None

    @classmethod
    def of(
        cls, pipeline: Pipeline, *, event_log: EventLog | None = None, api_key: str | None = None
    ) -> ServiceState:
        return cls(pipeline.release.id, pipeline.catalog, pipeline.history, pipeline, event_log, api_key)

    @property
    def catalog(self) -> Catalog:
        """The pipeline's catalogue as it is now (items added online included)."""
        return self.pipeline.catalog if self.pipeline is not None else self.base_catalog

    def need_pipeline(self) -> Pipeline:
        if self.pipeline is None:
            raise UnavailableError("this service was started without a pipeline (internal error)")
        return self.pipeline

    def check_user(self, user: common_pb2.User) -> None:
        """A bare user id must be known (in the release, or with events in the store)."""
        if not user.user_id or user.profile or user.liked_items:
            return
        idx = self.catalog.user_index(user.user_id)
        if idx is None and len(self.history.get(user.user_id, None)) == 0:
            raise UnknownIdError(
                f"unknown user id {user.user_id!r} in release {self.release_id}; "
                "for a new user give a profile (age, gender, occupation) or liked items instead"
            )


# ---------------------------------------------------------------------------------------- user
class UserServicer:
    """``GetUser``: a user's profile and most recent history."""

    def __init__(self, state: ServiceState) -> None:
        self.state = state

    @handle_errors(user_pb2.UserResponse)
    def GetUser(self, request: user_pb2.UserRequest, context: grpc.ServicerContext) -> user_pb2.UserResponse:  # noqa: N802
        st = self.state
        cat = st.catalog
        log_id = new_log_id(request.log_id)
        if not request.user_id:
            raise InvalidArgumentError("user_id is empty; give the id of a known user")
        if request.history_limit < 0:
            raise InvalidArgumentError(f"history_limit must be >= 0, got {request.history_limit}")
        idx = cat.user_index(request.user_id)
        hist = st.history.get(request.user_id, idx)
        if idx is None and len(hist) == 0:
            raise UnknownIdError(
                f"unknown user id {request.user_id!r}: not in release {st.release_id} and no events"
            )
        profile: dict[str, str] = {}
        if idx is not None:
            row = cat.user_rows.row(idx, named=True)
            skip = ("user", "external_id")
            profile = {k: str(v) for k, v in row.items() if k not in skip and v is not None}
        n = len(hist)
        order = np.arange(n)[::-1][: request.history_limit]
        entries = [
            user_pb2.HistoryEntry(
                item_id=str(cat.item_ids[int(hist.items[j])]),
                title=cat.titles[int(hist.items[j])] or "",
                rating=float(hist.ratings[j]),
                timestamp=int(hist.timestamps[j]),
            )
            for j in order.tolist()
        ]
        return user_pb2.UserResponse(
            error=ok(),
            log_id=log_id,
            release_id=st.release_id,
            user_id=request.user_id,
            known=idx is not None,
            profile=profile,
            history_count=n,
            history=entries,
        )


# ---------------------------------------------------------------------------------------- item
class ItemServicer:
    """``GetItems``: metadata of item ids (NOT_FOUND names unknown ones); ``GetPopular``: the most
    popular items (distinct users), minus ``exclude``; ``AddItem``: an item added online;
    ``Search``: items by meaning and title."""

    def __init__(self, state: ServiceState) -> None:
        self.state = state

    @handle_errors(item_pb2.ItemResponse)
    def GetItems(self, request: item_pb2.ItemRequest, context: grpc.ServicerContext) -> item_pb2.ItemResponse:  # noqa: N802
        cat = self.state.catalog
        if not request.item_ids:
            raise InvalidArgumentError("item_ids is empty; give at least one item id")
        idx = cat.item_indices(list(request.item_ids), what="item")
        return item_pb2.ItemResponse(
            error=ok(),
            log_id=new_log_id(request.log_id),
            release_id=self.state.release_id,
            items=[item_info(cat, int(i)) for i in idx.tolist()],
        )

    @handle_errors(item_pb2.ItemResponse)
    def GetPopular(  # noqa: N802
        self, request: item_pb2.PopularRequest, context: grpc.ServicerContext
    ) -> item_pb2.ItemResponse:
        cat = self.state.catalog
        if not 1 <= request.k <= 10_000:
            raise InvalidArgumentError(f"k must be between 1 and 10000, got {request.k}")
        order = cat.pop_order
        if request.exclude:
            ex = cat.dataset.item_vocab.indices(list(request.exclude), strict=False)
            order = order[~np.isin(order, ex[ex >= 0])]
        return item_pb2.ItemResponse(
            error=ok(),
            log_id=new_log_id(request.log_id),
            release_id=self.state.release_id,
            items=[item_info(cat, int(i)) for i in order[: request.k].tolist()],
        )

    @handle_errors(item_pb2.AddItemResponse)
    def AddItem(  # noqa: N802
        self, request: item_pb2.AddItemRequest, context: grpc.ServicerContext
    ) -> item_pb2.AddItemResponse:
        """``POST /v1/items`` over gRPC: the ``x-api-key`` metadata, the same checks, the item
        recorded in the event log first, then added to the catalogue, text index and search."""
        st = self.state
        _check_key(st.api_key, context)
        pipe = st.need_pipeline()
        cat = pipe.catalog
        data: dict[str, Any] = {
            "item_id": request.item_id,
            "title": request.title,
            "year": request.year or None,
            "genres": list(request.genres),
            "text": request.text or None,
        }
        log_id = new_log_id(request.log_id)
        row = new_item_row(data, cat.dataset.item_vocab.is_integer)
        known = cat.dataset.item_vocab.get(row["item_id"]) is not None
        offset = 0
        if st.event_log is not None and not known:
            [offset] = st.event_log.append([item_record(row, st.release_id, log_id)])
        [idx] = pipe.add_items([row])
        return item_pb2.AddItemResponse(
            error=ok(),
            log_id=log_id,
            release_id=st.release_id,
            item=item_info(pipe.catalog, int(idx)),
            created=not known,
            persisted=offset > 0,
            offset=offset,
            embedded=pipe.text_search.semantic,
        )

    @handle_errors(item_pb2.SearchResponse)
    def Search(  # noqa: N802
        self, request: item_pb2.SearchRequest, context: grpc.ServicerContext
    ) -> item_pb2.SearchResponse:
        """``GET /v1/search`` over gRPC: items by meaning and title."""
        pipe = self.state.need_pipeline()
        q = request.q
        if not q.strip() or len(q) > MAX_QUERY:
            raise InvalidArgumentError(f"q must hold 1 to {MAX_QUERY} characters (a title or a theme)")
        if request.k < 0:
            raise InvalidArgumentError(f"k must be >= 0 (0 = default), got {request.k}")
        hit = pipe.text_search.search(q, pipe.check_k(request.k or None))
        cat = pipe.catalog
        return item_pb2.SearchResponse(
            error=ok(),
            log_id=new_log_id(request.log_id),
            release_id=self.state.release_id,
            mode=hit.mode,
            items=[
                item_pb2.SearchHit(item=item_info(cat, i), score=s)
                for i, s in zip(hit.items.tolist(), hit.scores.tolist(), strict=True)
            ],
        )


#: longest search query (as ``GET /v1/search``)
MAX_QUERY = 200


def _check_key(key: str | None, context: grpc.ServicerContext) -> None:
    """``AddItem`` needs the service's API key in the ``x-api-key`` metadata; off without one."""
    if key is None:
        raise ForbiddenError(
            "AddItem is disabled: start the item service with an API key (RECSTACK_SERVE_API_KEY)"
        )
    given = dict(context.invocation_metadata() or ()).get("x-api-key")
    if not isinstance(given, str) or not hmac.compare_digest(given.encode(), key.encode()):
        raise UnauthorizedError("missing or wrong x-api-key metadata")


# -------------------------------------------------------------------------------------- recall
class RecallServicer:
    """``Recall``: the pipeline's resolve -> recall -> filter stages (`_stages.recall_stage`)."""

    def __init__(self, state: ServiceState) -> None:
        self.state = state

    @handle_errors(recall_pb2.RecallResponse)
    def Recall(  # noqa: N802
        self, request: recall_pb2.RecallRequest, context: grpc.ServicerContext
    ) -> recall_pb2.RecallResponse:
        st = self.state
        pipe = st.need_pipeline()
        req = to_request(
            request.user,
            k=request.k,
            exclude=list(request.exclude),
            genres=list(request.genres),
            exclude_genres=list(request.exclude_genres),
        )
        st.check_user(request.user)
        cand = _stages.recall_stage(pipe, req)
        ids = st.catalog.item_ids
        return recall_pb2.RecallResponse(
            error=ok(),
            log_id=new_log_id(request.log_id),
            release_id=st.release_id,
            user_kind=cand.user_kind,
            cold_start=cand.cold_start,
            fallbacks=cand.fallbacks,
            candidates=[
                common_pb2.Candidate(item_id=str(ids[i]), score=s, sources=src)
                for i, s, src in zip(cand.items.tolist(), cand.scores.tolist(), cand.sources, strict=True)
            ],
        )


# ---------------------------------------------------------------------------------------- rank
class RankServicer:
    """``Rank``: the pipeline's rank -> rerank stages over the given candidates (`_stages.rank_stage`)."""

    def __init__(self, state: ServiceState) -> None:
        self.state = state

    @handle_errors(rank_pb2.RankResponse)
    def Rank(self, request: rank_pb2.RankRequest, context: grpc.ServicerContext) -> rank_pb2.RankResponse:  # noqa: N802
        st = self.state
        pipe = st.need_pipeline()
        req = to_request(request.user, k=request.k, model=request.model)
        st.check_user(request.user)
        cands = request.candidates
        items = st.catalog.item_indices([c.item_id for c in cands], what="candidate item")
        scores = np.fromiter((c.score for c in cands), dtype=np.float32, count=len(cands))
        ranked = _stages.rank_stage(pipe, req, items, scores)
        return rank_pb2.RankResponse(
            error=ok(),
            log_id=new_log_id(request.log_id),
            release_id=st.release_id,
            model=ranked.model,
            items=[
                common_pb2.Candidate(item_id=cands[p].item_id, score=s, sources=cands[p].sources)
                for p, s in zip(ranked.positions.tolist(), ranked.scores.tolist(), strict=True)
            ],
        )


# ---------------------------------------------------------------------------------- aggregator
def _stub(cls: Any, channel: grpc.Channel) -> Any:
    """A generated (untyped) client stub on ``channel``."""
    return cls(channel)


class _HopError(Exception):
    """A downstream answer that the aggregator passes on (NOT_FOUND, INVALID_ARGUMENT...)."""

    def __init__(self, hop: str, code: grpc.StatusCode, env: common_pb2.Error) -> None:
        super().__init__(env.text)
        self.hop, self.code, self.env = hop, code, env


class AggregatorServicer:
    """``Recommend``: user -> recall -> rank -> item. ``upstreams``: service name -> ``host:port``;
    ``hop_timeout``: seconds per hop (capped by the caller's deadline)."""

    def __init__(self, upstreams: Mapping[str, str], hop_timeout: float = 0.2) -> None:
        missing = [n for n in ("user", "item", "recall", "rank") if n not in upstreams]
        if missing:
            raise InvalidArgumentError(f"the aggregator needs the address of {', '.join(missing)}")
        if hop_timeout <= 0:
            raise InvalidArgumentError(f"hop timeout must be > 0 seconds, got {hop_timeout}")
        self.hop_timeout = hop_timeout
        opts = [
            ("grpc.initial_reconnect_backoff_ms", 100),
            ("grpc.min_reconnect_backoff_ms", 100),
            ("grpc.max_reconnect_backoff_ms", 1000),
        ]
        self.channels = {n: grpc.insecure_channel(upstreams[n], options=opts) for n in upstreams}
        self.user: Any = _stub(user_pb2_grpc.UserServiceStub, self.channels["user"])
        self.item: Any = _stub(item_pb2_grpc.ItemServiceStub, self.channels["item"])
        self.recall: Any = _stub(recall_pb2_grpc.RecallServiceStub, self.channels["recall"])
        self.rank: Any = _stub(rank_pb2_grpc.RankServiceStub, self.channels["rank"])

    def close(self) -> None:
        for ch in self.channels.values():
            ch.close()

    def _timeout(self, context: grpc.ServicerContext, hops_left: int) -> float:
        """``hop_timeout``, capped by a share of what is left of the caller's deadline."""
        left: float | None = context.time_remaining()
        if left is None:
            return self.hop_timeout
        return max(0.001, min(self.hop_timeout, (left - _RESERVE) / hops_left))

    def _start(self, method: Any, request: Any, context: grpc.ServicerContext, hops_left: int) -> Any:
        """Send one hop's call without waiting (a grpc future)."""
        return method.future(request, timeout=self._timeout(context, hops_left))

    @staticmethod
    def _finish(
        hop: str, future: Any, t0: float, failed: list[str], hop_ms: dict[str, float], log_id: str
    ) -> Any | None:
        """The hop's response, None when it is down (added to ``failed``), or `_HopError` for an
        answer to pass on (NOT_FOUND, INVALID_ARGUMENT...)."""
        try:
            return future.result()
        except grpc.RpcError as exc:
            code = exc.code()
            if code in _DOWN:
                log.warning("hop %s down (%s: %s), log_id %s", hop, code.name, exc.details(), log_id)
                failed.append(hop)
                return None
            raise _HopError(hop, code, envelope_of(exc)) from None
        finally:
            hop_ms[hop] = hop_ms.get(hop, 0.0) + 1000 * (time.perf_counter() - t0)

    def _call(
        self,
        hop: str,
        method: Any,
        request: Any,
        context: grpc.ServicerContext,
        failed: list[str],
        hop_ms: dict[str, float],
        hops_left: int = 1,
    ) -> Any | None:
        """One hop, waited for (see `_finish`). ``hops_left``: hops still to call, this one included."""
        t0 = time.perf_counter()
        fut = self._start(method, request, context, hops_left)
        return self._finish(hop, fut, t0, failed, hop_ms, request.log_id)

    def Recommend(  # noqa: N802
        self, request: aggregator_pb2.RecommendRequest, context: grpc.ServicerContext
    ) -> aggregator_pb2.RecommendResponse:
        log_id = new_log_id(request.log_id)
        try:
            return self._recommend(request, context, log_id)
        except _HopError as exc:
            resp = aggregator_pb2.RecommendResponse(log_id=log_id)
            text = f"{exc.hop} service: {exc.env.text}"
            return abort(context, exc.code, text, resp)
        except InvalidArgumentError as exc:
            resp = aggregator_pb2.RecommendResponse(log_id=log_id)
            return abort(context, grpc.StatusCode.INVALID_ARGUMENT, exc.message, resp)
        except UnavailableError as exc:
            resp = aggregator_pb2.RecommendResponse(log_id=log_id)
            return abort(context, grpc.StatusCode.UNAVAILABLE, exc.message, resp)
        except Exception as exc:
            log.exception("Recommend failed (log_id %s)", log_id)
            resp = aggregator_pb2.RecommendResponse(log_id=log_id)
            return abort(context, grpc.StatusCode.INTERNAL, f"{type(exc).__name__}: {exc}", resp)

    def _recommend(
        self, request: aggregator_pb2.RecommendRequest, context: grpc.ServicerContext, log_id: str
    ) -> aggregator_pb2.RecommendResponse:
        user = request.user
        if not user.user_id and not user.profile and not user.liked_items:
            raise InvalidArgumentError(
                "give a user: user_id, a profile (age, gender, occupation...) or liked_items"
            )
        if request.k < 0:
            raise InvalidArgumentError(f"k must be >= 0 (0 = default), got {request.k}")
        failed: list[str] = []
        hop_ms: dict[str, float] = {}
        release_id = ""
        known = False

        # 1. user (a bare user id must be known: NOT_FOUND otherwise) and recall, in parallel
        k = request.k
        rreq = recall_pb2.RecallRequest(log_id=log_id, user=user, k=k, exclude=request.exclude)
        t0 = time.perf_counter()
        ufut = None
        if user.user_id:
            ureq = user_pb2.UserRequest(log_id=log_id, user_id=user.user_id, history_limit=0)
            ufut = self._start(self.user.GetUser, ureq, context, 3)
        rfut = self._start(self.recall.Recall, rreq, context, 3)
        if ufut is not None:
            try:
                uresp = self._finish("user", ufut, t0, failed, hop_ms, log_id)
            except _HopError as exc:
                if exc.code != grpc.StatusCode.NOT_FOUND or not (user.profile or user.liked_items):
                    rfut.cancel()
                    raise
                uresp = None  # a new user with an id and a profile / liked items
            if uresp is not None:
                known, release_id = uresp.known, uresp.release_id

        # 2. recall (popular items from the item service when it is down)
        rresp = self._finish("recall", rfut, t0, failed, hop_ms, log_id)
        if rresp is not None:
            candidates = list(rresp.candidates)
            release_id = release_id or rresp.release_id
            user_kind, cold_start, fallbacks = rresp.user_kind, rresp.cold_start, list(rresp.fallbacks)
        else:
            candidates = self._popular(request, context, log_id, failed, hop_ms)
            user_kind = "known" if known else ("liked_items" if user.liked_items else "profile")
            cold_start, fallbacks = not known, ["popular"]

        # 3. rank (recall order when it is down)
        rk = rank_pb2.RankRequest(log_id=log_id, user=user, candidates=candidates, k=k, model=request.model)
        kresp = self._call("rank", self.rank.Rank, rk, context, failed, hop_ms, 2)
        if kresp is not None:
            top = list(kresp.items)
            model = kresp.model
            release_id = release_id or kresp.release_id
        else:
            top = candidates[: k or 10]
            model = "recall"

        # 4. item metadata of the final list (bare ids when the item service is down)
        infos: dict[str, common_pb2.ItemInfo] = {}
        if top:
            ireq = item_pb2.ItemRequest(log_id=log_id, item_ids=[c.item_id for c in top])
            iresp = self._call("item", self.item.GetItems, ireq, context, failed, hop_ms)
            if iresp is not None:
                infos = {it.item_id: it for it in iresp.items}
                release_id = release_id or iresp.release_id
        items = [
            aggregator_pb2.ScoredItem(
                item=infos.get(c.item_id) or common_pb2.ItemInfo(item_id=c.item_id),
                score=c.score,
                sources=c.sources,
            )
            for c in top
        ]
        return aggregator_pb2.RecommendResponse(
            error=ok(failed),
            log_id=log_id,
            release_id=release_id,
            model=model,
            user_kind=user_kind,
            cold_start=cold_start,
            fallbacks=fallbacks,
            items=items,
            hop_ms=hop_ms,
        )

    def _popular(
        self,
        request: aggregator_pb2.RecommendRequest,
        context: grpc.ServicerContext,
        log_id: str,
        failed: list[str],
        hop_ms: dict[str, float],
    ) -> list[common_pb2.Candidate]:
        """Popular candidates minus the user's history, liked items and ``exclude`` (recall is down)."""
        user = request.user
        exclude = [*request.exclude, *user.liked_items]
        if user.user_id and "user" not in failed:
            ureq = user_pb2.UserRequest(log_id=log_id, user_id=user.user_id, history_limit=100_000)
            try:
                uresp = self._call("user", self.user.GetUser, ureq, context, failed, hop_ms, 4)
            except _HopError:
                uresp = None
            if uresp is not None:
                exclude += [h.item_id for h in uresp.history]
        n = max(POPULAR_CANDIDATES, request.k)
        preq = item_pb2.PopularRequest(log_id=log_id, k=n, exclude=exclude)
        presp = self._call("item", self.item.GetPopular, preq, context, failed, hop_ms, 3)
        if presp is None:
            raise UnavailableError("recall and item services are both unavailable: no candidates to serve")
        return [
            common_pb2.Candidate(item_id=it.item_id, score=float(it.popularity), sources=["popular"])
            for it in presp.items
        ]


# ---------------------------------------------------------------------------------- registration
def add_servicer(server: grpc.Server, name: str, servicer: Any) -> None:
    """Register ``servicer`` as service ``name`` (user, item, recall, rank, aggregator) on ``server``."""
    adders: dict[str, Callable[[Any, grpc.Server], None]] = {
        "user": user_pb2_grpc.add_UserServiceServicer_to_server,
        "item": item_pb2_grpc.add_ItemServiceServicer_to_server,
        "recall": recall_pb2_grpc.add_RecallServiceServicer_to_server,
        "rank": rank_pb2_grpc.add_RankServiceServicer_to_server,
        "aggregator": aggregator_pb2_grpc.add_AggregatorServiceServicer_to_server,
    }
    if name not in adders:
        raise InvalidArgumentError(f"unknown service {name!r}; choose from {', '.join(SERVICE_NAMES)}")
    adders[name](servicer, server)
