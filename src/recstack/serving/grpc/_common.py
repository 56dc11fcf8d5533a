"""Shared by the gRPC services and the client: names, default ports, the error envelope, log ids
and conversions between protobuf messages and the pipeline's types."""

from __future__ import annotations

import functools
import logging
import uuid
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import grpc

from recstack.errors import InvalidArgumentError, RecstackError
from recstack.serving._catalog import Catalog
from recstack.serving.grpc.protos import common_pb2
from recstack.serving.pipeline import RecRequest

__all__ = [
    "DEFAULT_PORTS",
    "ERROR_KEY",
    "SERVICES",
    "SERVICE_NAMES",
    "abort",
    "envelope_of",
    "handle_errors",
    "item_info",
    "new_log_id",
    "ok",
    "to_request",
]

log = logging.getLogger(__name__)

#: service name -> default port (the seed system's ports)
DEFAULT_PORTS: dict[str, int] = {"user": 8910, "item": 8920, "aggregator": 8930, "recall": 8950, "rank": 8960}
#: start order: the aggregator last, after the services it calls
SERVICES: tuple[str, ...] = ("user", "item", "recall", "rank", "aggregator")
#: service name -> fully qualified gRPC service name (also the health-check service name)
SERVICE_NAMES: dict[str, str] = {
    "user": "recstack.v1.UserService",
    "item": "recstack.v1.ItemService",
    "recall": "recstack.v1.RecallService",
    "rank": "recstack.v1.RankService",
    "aggregator": "recstack.v1.AggregatorService",
}
#: trailing-metadata key holding the serialized `Error` envelope of a failed call
ERROR_KEY = "recstack-error-bin"

R = TypeVar("R")


def new_log_id(log_id: str = "") -> str:
    """The request's ``log_id``, or a new random one (16 hex digits) when it is empty."""
    return log_id or uuid.uuid4().hex[:16]


def ok(degraded_hops: list[str] | None = None) -> common_pb2.Error:
    """The envelope of a successful answer (code 0); degraded when ``degraded_hops`` is not empty."""
    hops = list(degraded_hops or [])
    text = f"degraded: {', '.join(hops)} unavailable" if hops else ""
    return common_pb2.Error(code=0, text=text, degraded=bool(hops), failed_hops=hops)


def abort(context: grpc.ServicerContext, code: grpc.StatusCode, text: str, response: R) -> R:
    """Fail the call with status ``code`` and details ``text``; the envelope goes into the response
    (``response.error``) and, serialized, into the trailing metadata (`ERROR_KEY`)."""
    env = common_pb2.Error(code=int(code.value[0]), text=text)
    response.error.CopyFrom(env)  # type: ignore[attr-defined]
    context.set_code(code)
    context.set_details(text)
    context.set_trailing_metadata(((ERROR_KEY, env.SerializeToString()),))
    return response


def envelope_of(exc: grpc.RpcError) -> common_pb2.Error:
    """The `Error` envelope of a failed call (from its trailing metadata, else its status)."""
    try:
        for key, value in exc.trailing_metadata() or ():
            if key == ERROR_KEY:
                env = common_pb2.Error()
                env.ParseFromString(value)
                return env
        code, details = exc.code(), exc.details()
    except Exception:  # a channel-level failure may lack metadata
        return common_pb2.Error(code=int(grpc.StatusCode.UNKNOWN.value[0]), text=str(exc))
    return common_pb2.Error(code=int(code.value[0]), text=str(details or code.name))


def _status_of(exc: RecstackError) -> grpc.StatusCode:
    code: grpc.StatusCode = getattr(grpc.StatusCode, exc.grpc_code, grpc.StatusCode.INTERNAL)
    return code


def handle_errors(
    make_response: Callable[[], Any],
) -> Callable[[Callable[..., R]], Callable[..., R]]:
    """Decorate a servicer method: project errors become their gRPC status (NOT_FOUND,
    INVALID_ARGUMENT, UNAVAILABLE...) with the envelope, anything else INTERNAL (logged); the
    request's ``log_id`` is echoed either way."""

    def deco(fn: Callable[..., R]) -> Callable[..., R]:
        @functools.wraps(fn)
        def wrapper(self: Any, request: Any, context: grpc.ServicerContext) -> R:
            try:
                return fn(self, request, context)
            except RecstackError as exc:
                resp = make_response()
                resp.log_id = new_log_id(request.log_id)
                out: R = abort(context, _status_of(exc), exc.message, resp)
                return out
            except ValueError as exc:
                resp = make_response()
                resp.log_id = new_log_id(request.log_id)
                out = abort(context, grpc.StatusCode.INVALID_ARGUMENT, str(exc), resp)
                return out
            except Exception as exc:
                log.exception("%s failed (log_id %s)", fn.__name__, request.log_id)
                resp = make_response()
                resp.log_id = new_log_id(request.log_id)
                out = abort(context, grpc.StatusCode.INTERNAL, f"{type(exc).__name__}: {exc}", resp)
                return out

        return wrapper

    return deco


def profile_dict(profile: Mapping[str, str]) -> dict[str, Any] | None:
    """A protobuf profile map -> the pipeline's profile dict (``age`` as int; empty values dropped)."""
    out: dict[str, Any] = {}
    for key, value in profile.items():
        if value == "":
            continue
        if key == "age":
            try:
                out["age"] = int(float(value))
            except ValueError:
                raise InvalidArgumentError(f"profile age must be a number of years, got {value!r}") from None
        else:
            out[key] = value
    return out or None


def to_request(
    user: common_pb2.User,
    *,
    k: int = 0,
    model: str = "",
    exclude: list[str] | None = None,
    genres: list[str] | None = None,
    exclude_genres: list[str] | None = None,
) -> RecRequest:
    """A protobuf `User` (+ options; 0 / "" = the pipeline's defaults) -> a pipeline `RecRequest`."""
    if not user.user_id and not user.profile and not user.liked_items:
        raise InvalidArgumentError(
            "give a user: user_id, a profile (age, gender, occupation...) or liked_items"
        )
    return RecRequest(
        user_id=user.user_id or None,
        profile=profile_dict(user.profile),
        liked_items=list(user.liked_items) or None,
        k=k or None,
        model=model or None,
        exclude=list(exclude or []),
        genres=list(genres or []),
        exclude_genres=list(exclude_genres or []),
    )


def item_info(cat: Catalog, i: int) -> common_pb2.ItemInfo:
    """Metadata of item index ``i`` (year 0 = unknown)."""
    year = int(cat.years[i])
    return common_pb2.ItemInfo(
        item_id=str(cat.item_ids[i]),
        title=cat.titles[i] or "",
        year=year if year >= 0 else 0,
        genres=cat.genre_lists[i],
        popularity=int(cat.popularity[i]),
    )
