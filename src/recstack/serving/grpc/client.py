"""Client of the gRPC services (`recstack client as|um|cm|recall|rank`): calls and rich tables.

A failed call raises `ServiceCallError` with the status code and the `Error` envelope; the tables
show the envelope (code, text, degraded hops), the echoed ``log_id`` and the release id.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import grpc
from rich.console import Console
from rich.table import Table

from recstack.errors import InvalidArgumentError, RecstackError
from recstack.serving.grpc._common import DEFAULT_PORTS, envelope_of, new_log_id
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

__all__ = [
    "GrpcClient",
    "ServiceCallError",
    "client_for",
    "make_user",
    "parse_profile",
    "print_response",
    "service_address",
    "split_ids",
    "user_from_cli",
]


class ServiceCallError(RecstackError):
    """A gRPC call failed: ``status`` (e.g. NOT_FOUND) and the service's envelope."""

    def __init__(self, service: str, status: grpc.StatusCode, envelope: common_pb2.Error) -> None:
        super().__init__(f"{service}: {status.name} ({envelope.code}): {envelope.text}")
        self.service = service
        self.status = status
        self.envelope = envelope


def make_user(
    user_id: str | None = None, profile: Mapping[str, Any] | None = None, liked: Sequence[str] = ()
) -> common_pb2.User:
    return common_pb2.User(
        user_id=user_id or "",
        profile={k: str(v) for k, v in (profile or {}).items() if v is not None},
        liked_items=[str(x) for x in liked],
    )


def _stub(cls: Any, channel: grpc.Channel) -> Any:
    return cls(channel)


class GrpcClient:
    """One channel per service. ``addresses``: service name -> ``host:port`` (default ports on
    ``host`` for the rest); ``timeout``: seconds per call."""

    def __init__(
        self, addresses: Mapping[str, str] | None = None, host: str = "127.0.0.1", timeout: float = 5.0
    ) -> None:
        addr = {n: f"{host}:{p}" for n, p in DEFAULT_PORTS.items()}
        addr.update(addresses or {})
        self.addresses = addr
        self.timeout = timeout
        self._channels: dict[str, grpc.Channel] = {}

    def _ch(self, name: str) -> grpc.Channel:
        if name not in self._channels:
            self._channels[name] = grpc.insecure_channel(self.addresses[name])
        return self._channels[name]

    def close(self) -> None:
        for ch in self._channels.values():
            ch.close()
        self._channels.clear()

    def __enter__(self) -> GrpcClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, service: str, method: Any, request: Any) -> Any:
        try:
            return method(request, timeout=self.timeout)
        except grpc.RpcError as exc:
            raise ServiceCallError(service, exc.code(), envelope_of(exc)) from None

    # ---------------------------------------------------------------- calls
    def recommend(
        self,
        user: common_pb2.User,
        k: int = 0,
        model: str = "",
        exclude: Sequence[str] = (),
        log_id: str = "",
    ) -> aggregator_pb2.RecommendResponse:
        stub = _stub(aggregator_pb2_grpc.AggregatorServiceStub, self._ch("aggregator"))
        req = aggregator_pb2.RecommendRequest(
            log_id=new_log_id(log_id), user=user, k=k, model=model, exclude=list(exclude)
        )
        out: aggregator_pb2.RecommendResponse = self._call("aggregator", stub.Recommend, req)
        return out

    def get_user(self, user_id: str, history_limit: int = 10, log_id: str = "") -> user_pb2.UserResponse:
        stub = _stub(user_pb2_grpc.UserServiceStub, self._ch("user"))
        req = user_pb2.UserRequest(log_id=new_log_id(log_id), user_id=user_id, history_limit=history_limit)
        out: user_pb2.UserResponse = self._call("user", stub.GetUser, req)
        return out

    def get_items(self, item_ids: Sequence[str], log_id: str = "") -> item_pb2.ItemResponse:
        stub = _stub(item_pb2_grpc.ItemServiceStub, self._ch("item"))
        req = item_pb2.ItemRequest(log_id=new_log_id(log_id), item_ids=list(item_ids))
        out: item_pb2.ItemResponse = self._call("item", stub.GetItems, req)
        return out

    def popular(self, k: int = 10, exclude: Sequence[str] = (), log_id: str = "") -> item_pb2.ItemResponse:
        stub = _stub(item_pb2_grpc.ItemServiceStub, self._ch("item"))
        req = item_pb2.PopularRequest(log_id=new_log_id(log_id), k=k, exclude=list(exclude))
        out: item_pb2.ItemResponse = self._call("item", stub.GetPopular, req)
        return out

    def add_item(
        self,
        item_id: str,
        title: str,
        year: int = 0,
        genres: Sequence[str] = (),
        text: str = "",
        *,
        api_key: str | None = None,
        log_id: str = "",
    ) -> item_pb2.AddItemResponse:
        """``AddItem`` (the service's key in ``api_key``; year 0 = unknown)."""
        stub = _stub(item_pb2_grpc.ItemServiceStub, self._ch("item"))
        req = item_pb2.AddItemRequest(
            log_id=new_log_id(log_id),
            item_id=str(item_id),
            title=title,
            year=year,
            genres=list(genres),
            text=text,
        )
        meta = (("x-api-key", api_key),) if api_key else ()
        try:
            out: item_pb2.AddItemResponse = stub.AddItem(req, timeout=self.timeout, metadata=meta)
        except grpc.RpcError as exc:
            raise ServiceCallError("item", exc.code(), envelope_of(exc)) from None
        return out

    def search(self, q: str, k: int = 0, log_id: str = "") -> item_pb2.SearchResponse:
        stub = _stub(item_pb2_grpc.ItemServiceStub, self._ch("item"))
        req = item_pb2.SearchRequest(log_id=new_log_id(log_id), q=q, k=k)
        out: item_pb2.SearchResponse = self._call("item", stub.Search, req)
        return out

    def recall(
        self, user: common_pb2.User, k: int = 0, exclude: Sequence[str] = (), log_id: str = ""
    ) -> recall_pb2.RecallResponse:
        stub = _stub(recall_pb2_grpc.RecallServiceStub, self._ch("recall"))
        req = recall_pb2.RecallRequest(log_id=new_log_id(log_id), user=user, k=k, exclude=list(exclude))
        out: recall_pb2.RecallResponse = self._call("recall", stub.Recall, req)
        return out

    def rank(
        self,
        user: common_pb2.User,
        candidates: Sequence[str | common_pb2.Candidate],
        k: int = 0,
        model: str = "",
        log_id: str = "",
    ) -> rank_pb2.RankResponse:
        stub = _stub(rank_pb2_grpc.RankServiceStub, self._ch("rank"))
        cands = [
            c if isinstance(c, common_pb2.Candidate) else common_pb2.Candidate(item_id=c) for c in candidates
        ]
        req = rank_pb2.RankRequest(log_id=new_log_id(log_id), user=user, candidates=cands, k=k, model=model)
        out: rank_pb2.RankResponse = self._call("rank", stub.Rank, req)
        return out


# ------------------------------------------------------------------------------------ rendering
def _envelope_line(resp: Any) -> str:
    env = resp.error
    parts = [f"code {env.code}", f"log_id {resp.log_id}"]
    if getattr(resp, "release_id", ""):
        parts.append(f"release {resp.release_id}")
    if env.text:
        parts.append(env.text)
    if env.degraded:
        parts.append(f"[yellow]DEGRADED (failed: {', '.join(env.failed_hops)})[/yellow]")
    return " · ".join(parts)


def _item_table(title: str, items: Sequence[common_pb2.ItemInfo]) -> Table:
    t = Table(title=title)
    for col, just in (("#", "right"), ("item", "left"), ("title", "left"), ("year", "right")):
        t.add_column(col, justify=just)  # type: ignore[arg-type]
    t.add_column("genres")
    t.add_column("popularity", justify="right")
    for j, it in enumerate(items, 1):
        t.add_row(str(j), it.item_id, it.title, str(it.year or ""), ", ".join(it.genres), str(it.popularity))
    return t


def print_response(resp: Any, console: Console | None = None) -> None:
    """Print any service response as a titled table plus its envelope line."""
    out = console or Console()
    if isinstance(resp, aggregator_pb2.RecommendResponse):
        t = Table(title=f"recommendations · model {resp.model} · user {resp.user_kind}")
        for col in ("#", "item", "title", "year", "genres", "score", "sources"):
            t.add_column(col, justify="right" if col in ("#", "year", "score") else "left")
        for j, s in enumerate(resp.items, 1):
            it = s.item
            t.add_row(
                str(j), it.item_id, it.title, str(it.year or ""), ", ".join(it.genres), f"{s.score:.4f}",
                ", ".join(s.sources),
            )  # fmt: skip
        out.print(t)
        extra = f"fallbacks: {', '.join(resp.fallbacks) or '-'} · cold start: {resp.cold_start}"
        hops = " ".join(f"{h} {ms:.1f}ms" for h, ms in resp.hop_ms.items())
        out.print(f"{_envelope_line(resp)}\n{extra} · hops: {hops}")
    elif isinstance(resp, user_pb2.UserResponse):
        t = Table(
            title=f"user {resp.user_id} · {'known' if resp.known else 'events only'}", show_header=False
        )
        t.add_column("field", style="bold")
        t.add_column("value")
        for k, v in sorted(resp.profile.items()):
            t.add_row(k, v)
        t.add_row("history", f"{resp.history_count} interactions")
        out.print(t)
        if resp.history:
            h = Table(title=f"most recent {len(resp.history)} of user {resp.user_id}")
            for col in ("item", "title", "rating", "timestamp"):
                h.add_column(col)
            for e in resp.history:
                r = "" if math.isnan(e.rating) else f"{e.rating:g}"
                h.add_row(e.item_id, e.title, r, str(e.timestamp))
            out.print(h)
        out.print(_envelope_line(resp))
    elif isinstance(resp, item_pb2.ItemResponse):
        out.print(_item_table(f"{len(resp.items)} item(s)", resp.items))
        out.print(_envelope_line(resp))
    elif isinstance(resp, item_pb2.AddItemResponse):
        what = "added" if resp.created else "already in the catalogue (nothing changed)"
        out.print(_item_table(f"item {resp.item.item_id} {what}", [resp.item]))
        persisted = f"event log offset {resp.offset}" if resp.persisted else "not persisted (no event log)"
        out.print(f"{_envelope_line(resp)}\n{persisted} · embedded: {resp.embedded}")
    elif isinstance(resp, item_pb2.SearchResponse):
        t = Table(title=f"search · {resp.mode} · {len(resp.items)} item(s)")
        for col in ("#", "item", "title", "year", "genres", "score"):
            t.add_column(col, justify="right" if col in ("#", "year", "score") else "left")
        for j, h in enumerate(resp.items, 1):
            it = h.item
            t.add_row(
                str(j), it.item_id, it.title, str(it.year or ""), ", ".join(it.genres), f"{h.score:.4f}"
            )
        out.print(t)
        out.print(_envelope_line(resp))
    elif isinstance(resp, recall_pb2.RecallResponse):
        t = Table(title=f"recall candidates · user {resp.user_kind} · {len(resp.candidates)} candidates")
        for col in ("#", "item", "merged score", "sources"):
            t.add_column(col, justify="right" if col in ("#", "merged score") else "left")
        for j, c in enumerate(resp.candidates, 1):
            t.add_row(str(j), c.item_id, f"{c.score:.4f}", ", ".join(c.sources))
        out.print(t)
        out.print(f"{_envelope_line(resp)}\nfallbacks: {', '.join(resp.fallbacks) or '-'}")
    elif isinstance(resp, rank_pb2.RankResponse):
        t = Table(title=f"ranked · model {resp.model}")
        for col in ("#", "item", "rank score", "sources"):
            t.add_column(col, justify="right" if col in ("#", "rank score") else "left")
        for j, c in enumerate(resp.items, 1):
            t.add_row(str(j), c.item_id, f"{c.score:.4f}", ", ".join(c.sources))
        out.print(t)
        out.print(_envelope_line(resp))
    else:  # pragma: no cover - every response type is handled above
        out.print(str(resp))


def parse_profile(text: str | None) -> dict[str, str]:
    """``age=25,gender=M,occupation=writer`` -> a profile dict (keys: age, gender, occupation, zip_code)."""
    out: dict[str, str] = {}
    allowed = ("age", "gender", "occupation", "zip_code")
    for part in filter(None, (p.strip() for p in (text or "").split(","))):
        key, sep, value = part.partition("=")
        if not sep or key.strip() not in allowed:
            raise InvalidArgumentError(
                f"bad profile entry {part!r}; use key=value with key in {', '.join(allowed)}"
            )
        out[key.strip()] = value.strip()
    return out


def split_ids(text: str | None) -> list[str]:
    """``"1,2, 3"`` -> ["1", "2", "3"]."""
    return [p.strip() for p in (text or "").split(",") if p.strip()]


def service_address(name: str, addr: str | None = None, run_dir: Any = None, host: str = "127.0.0.1") -> str:
    """``addr`` if given; else where ``recstack services start`` started ``name`` (run dir); else
    the default port on ``host``."""
    if addr:
        return addr if ":" in addr else f"{host}:{addr}"
    from recstack.serving.grpc.launcher import default_run_dir, read_info

    info = read_info(run_dir or default_run_dir(), name)
    return info.address if info is not None else f"{host}:{DEFAULT_PORTS[name]}"


def client_for(name: str, addr: str | None = None, timeout: float = 5.0) -> GrpcClient:
    """A client whose ``name`` service is at `service_address` (``recstack client ...``)."""
    return GrpcClient({name: service_address(name, addr)}, timeout=timeout)


def user_from_cli(user_id: str | None, profile: str | None, liked: str | None) -> common_pb2.User:
    """The `User` of ``recstack client`` options: an id, ``age=25,gender=M`` and/or ``1,2,3``."""
    return make_user(user_id, parse_profile(profile), split_ids(liked))
