"""Items: ``GET /v1/items/{item_id}``, ``GET /v1/items/{item_id}/similar``, ``GET /v1/items``."""

from __future__ import annotations

from typing import Annotated, Any

import numpy as np
import polars as pl
from fastapi import APIRouter, Query
from starlette.requests import Request
from starlette.responses import Response

from recstack.serving.api._json import JSONBody, request_id
from recstack.serving.api._render import item_dict, items_list, split_csv
from recstack.serving.api.deps import current_state
from recstack.serving.api.schemas import ErrorResponse

__all__ = ["router"]

router = APIRouter(tags=["items"])

_404: dict[int | str, dict[str, Any]] = {404: {"model": ErrorResponse, "description": "unknown item id"}}


@router.get("/v1/items", summary="Browse / search items by genre and title substring, most popular first")
async def list_items(
    request: Request,
    genre: Annotated[
        list[str] | None, Query(description="genre name(s), comma-separated: any matches")
    ] = None,
    q: Annotated[str | None, Query(max_length=200, description="case-insensitive title substring")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> Response:
    state = current_state(request)
    cat = state.pipeline.catalog
    keep = np.ones(cat.n_items, dtype=bool)
    genres = split_csv(genre)
    if genres:
        keep &= (cat.genre_bits & cat.genre_mask(genres)) != 0
    if q:
        keep &= cat.titles_lower.str.contains(q.lower(), literal=True).fill_null(False).to_numpy()
    order = cat.pop_order[keep[cat.pop_order]]
    page = order[offset : offset + limit]
    return JSONBody(
        {
            "request_id": request_id(request),
            "release_id": state.release_id,
            "total": len(order),
            "offset": offset,
            "items": [item_dict(cat, int(i)) for i in page],
        }
    )


@router.get("/v1/items/{item_id}", responses=_404, summary="One item's metadata")
async def get_item(request: Request, item_id: str) -> Response:
    state = current_state(request)
    cat = state.pipeline.catalog
    i = cat.item_index(item_id)
    ratings = cat.dataset.interactions.filter(pl.col("item") == i)["rating"]
    body = item_dict(cat, i)
    body.update(
        {
            "request_id": request_id(request),
            "release_id": state.release_id,
            "rating_count": int(ratings.len()),
            "average_rating": float(ratings.mean()) if ratings.len() else None,  # type: ignore[arg-type]
        }
    )
    return JSONBody(body)


@router.get("/v1/items/{item_id}/similar", responses=_404, summary="Items similar to one item")
async def similar_items(
    request: Request,
    item_id: str,
    k: Annotated[int | None, Query(description="number of items (1..k_max)")] = None,
    model: Annotated[str | None, Query(description="release retriever (itemknn, ease, two_tower...)")] = None,
) -> Response:
    state = current_state(request)
    cat = state.pipeline.catalog
    i = cat.item_index(item_id)
    ids, scores, used = state.pipeline.similar(i, state.pipeline.check_k(k), model)
    return JSONBody(
        {
            "request_id": request_id(request),
            "release_id": state.release_id,
            "model": used,
            "item_id": cat.item_ids[i],
            "items": items_list(cat, ids, scores),
        }
    )
