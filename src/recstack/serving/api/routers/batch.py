"""Batch-served endpoints (issue 7): answers read from the current precomputed batch tables.

- ``GET /v1/users/{user_id}/recommendations?source=batch`` (the recommend router delegates to
  ``app.state.batch_provider.serve``): the user's row of the current ``user_recs_<version>`` table.
- ``GET /v1/pairs?a=&b=&k=``: the row of the pair (a, b) in the current ``pair_recs_<version>`` table.

Both are one primary-key lookup on a connection cached per worker process (`BatchReader`); the
response carries the release id (and version) of the batch table, which may differ from the release
the online pipeline serves. Configured by ``recstack serve --batch-sink URL`` (the serving settings'
``batch_sink``), else ``RECSTACK_BATCH_SINK`` (default ``sqlite:///recstack_batch.db``), and
``RECSTACK_BATCH_POINTER_TTL`` (seconds between re-reads of the current-version pointer, default 1).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, FastAPI, Query
from pydantic_settings import BaseSettings, SettingsConfigDict
from starlette.requests import Request
from starlette.responses import Response

from recstack.errors import InvalidArgumentError, NotFoundError
from recstack.serving._catalog import Catalog
from recstack.serving.api._json import JSONBody, request_id
from recstack.serving.api.schemas import ErrorResponse
from recstack.serving.pipeline import RecRequest
from recstack.store.tables import DEFAULT_SINK, BatchReader

__all__ = ["BatchProvider", "BatchSettings", "install", "router"]

router = APIRouter(tags=["batch"])


class BatchSettings(BaseSettings):
    """Where the batch tables live (env prefix ``RECSTACK_BATCH_``)."""

    model_config = SettingsConfigDict(env_prefix="RECSTACK_BATCH_", extra="ignore")

    sink: str = DEFAULT_SINK
    pointer_ttl: float = 1.0


def _loads(text: str) -> list[Any]:
    try:
        import orjson

        out: list[Any] = orjson.loads(text)
    except ImportError:  # pragma: no cover
        import json

        out = json.loads(text)
    return out


def _items(cat: Catalog | None, ids: list[Any], scores: list[float]) -> list[dict[str, Any]]:
    """Item dicts like the online responses; title / year / genres from the serving catalogue when
    it knows the item (the batch table may come from another release)."""
    out: list[dict[str, Any]] = []
    vocab = cat.dataset.item_vocab if cat is not None else None
    for it, s in zip(ids, scores, strict=False):
        d: dict[str, Any] = {"item_id": it, "score": s}
        i = vocab.get(it) if vocab is not None and cat is not None else None
        if i is not None and cat is not None:
            y = int(cat.years[i])
            d.update(title=cat.titles[i], year=y if y >= 0 else None, genres=cat.genre_lists[i])
        out.append(d)
    return out


def _filtered(
    cat: Catalog | None, ids: list[Any], scores: list[float], req: RecRequest
) -> tuple[list[Any], list[float]]:
    """The stored list without the items that the request's filters leave out."""
    if not (
        req.exclude
        or req.genres
        or req.exclude_genres
        or req.year_min is not None
        or req.year_max is not None
    ):
        return ids, scores
    if cat is None:
        raise InvalidArgumentError("filters on source=batch need the serving catalogue (no release loaded)")
    excluded = {str(e) for e in req.exclude}
    want = cat.genre_mask(req.genres) if req.genres else 0
    avoid = cat.genre_mask(req.exclude_genres) if req.exclude_genres else 0
    vocab = cat.dataset.item_vocab
    keep_ids: list[Any] = []
    keep_scores: list[float] = []
    for it, s in zip(ids, scores, strict=False):
        if str(it) in excluded:
            continue
        i = vocab.get(it)
        if i is not None:
            bits = int(cat.genre_bits[i])
            year = int(cat.years[i])
            if (want and not bits & want) or bits & avoid:
                continue
            if req.year_min is not None and year < req.year_min:
                continue
            if req.year_max is not None and year > req.year_max:
                continue
        keep_ids.append(it)
        keep_scores.append(s)
    return keep_ids, keep_scores


class BatchProvider:
    """``source=batch`` for the recommend router, and the pairs lookup."""

    def __init__(self, settings: BatchSettings | None = None) -> None:
        self.settings = settings or BatchSettings()
        self.reader = BatchReader(self.settings.sink, self.settings.pointer_ttl)

    @staticmethod
    def _catalog(request: Request) -> Catalog | None:
        state = getattr(request.app.state.holder, "current", None)
        return None if state is None else state.pipeline.catalog

    @staticmethod
    def _k(k: int | None, stored: int) -> int:
        if k is None:
            return stored
        if k < 1:
            raise InvalidArgumentError(f"k must be >= 1, got {k}")
        return min(k, stored)

    def serve(self, request: Request, state: Any, req: RecRequest) -> dict[str, Any]:
        """The body of ``GET /v1/users/{id}/recommendations?source=batch``: the user's stored list,
        with ``exclude`` / ``genres`` / ``exclude_genres`` / ``year_min`` / ``year_max`` applied to it
        (so it may hold fewer than k items)."""
        if req.model:
            raise NotFoundError(
                f"no batch list for model={req.model!r}: a batch table holds one list per user, from the "
                "release's default model; drop model or use source=online"
            )
        uid = str(req.user_id)
        hit = self.reader.lookup("users", (uid,))
        if hit is None:
            raise NotFoundError(
                f"user {uid!r} has no precomputed recommendations in the current batch table of "
                f"{self.settings.sink}; use source=online (cold-start users are only served online), "
                "or `recstack serve --batch-sink URL` for other batch tables"
            )
        items_json, scores_json, rid, version = hit
        ids, scores = _loads(items_json), _loads(scores_json)
        cat = state.pipeline.catalog if state is not None else None
        ids, scores = _filtered(cat, ids, scores, req)
        k = self._k(req.k, len(ids))
        return {
            "request_id": request_id(request),
            "release_id": rid,
            "batch_version": version,
            "source": "batch",
            "model": "batch",
            "user_id": req.user_id,
            "user_kind": "known",
            "cold_start": False,
            "fallbacks": [],
            "k": k,
            "items": _items(cat, ids[:k], scores[:k]),
        }

    def pair(self, request: Request, a: str, b: str, k: int | None) -> dict[str, Any]:
        if a == b:
            raise NotFoundError(f"no pair ({a}, {b}): a pair is two different item ids")
        key = (a, b) if a < b else (b, a)
        hit = self.reader.lookup("pairs", key)
        if hit is None:
            raise NotFoundError(
                f"no precomputed recommendations for the pair ({a}, {b}) in the batch tables of "
                f"{self.settings.sink}: both must be among the top-N popular items of "
                "`recstack batch pairs --top N` (`recstack serve --batch-sink URL` reads other tables)"
            )
        items_json, scores_json, rid, version = hit
        ids, scores = _loads(items_json), _loads(scores_json)
        kk = self._k(k, len(ids))
        return {
            "request_id": request_id(request),
            "release_id": rid,
            "batch_version": version,
            "source": "batch",
            "a": a,
            "b": b,
            "k": kk,
            "items": _items(self._catalog(request), ids[:kk], scores[:kk]),
        }


def _provider(request: Request) -> BatchProvider:
    p = getattr(request.app.state, "batch_provider", None)
    if not isinstance(p, BatchProvider):
        p = BatchProvider()
        request.app.state.batch_provider = p
    return p


@router.get(
    "/v1/pairs",
    responses={
        404: {"model": ErrorResponse, "description": "the pair is not in the current batch table (a == b)"},
        422: {"model": ErrorResponse, "description": "invalid k"},
        503: {"model": ErrorResponse, "description": "no batch table published yet"},
    },
    summary="Precomputed recommendations for a two-item profile (both among the top-N popular items)",
)
async def pair_recommendations(
    request: Request,
    a: Annotated[str, Query(min_length=1, max_length=64, description="first liked item id")],
    b: Annotated[str, Query(min_length=1, max_length=64, description="second liked item id")],
    k: Annotated[int | None, Query(ge=1, description="at most the k stored by the batch job")] = None,
) -> Response:
    return JSONBody(_provider(request).pair(request, a, b, k))


def install(app: FastAPI, settings: BatchSettings | None = None) -> BatchProvider:
    """Set ``app.state.batch_provider`` (``source=batch``) and include the pairs route."""
    provider = BatchProvider(settings)
    app.state.batch_provider = provider
    app.include_router(router)
    return provider
