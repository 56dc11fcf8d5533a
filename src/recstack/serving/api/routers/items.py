"""Items: ``GET /v1/items/{item_id}``, ``GET /v1/items/{item_id}/similar``, ``GET /v1/items``,
``GET /v1/search`` (text embeddings, BM25 over titles / genres / tags, title match and a popularity
prior: `recstack.serving._search`), ``POST /v1/items`` (add an
item online: admin key)."""

from __future__ import annotations

import time
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Path, Query
from starlette.requests import Request
from starlette.responses import Response

from recstack.serving._items import item_record
from recstack.serving._state import ServingState
from recstack.serving.api._json import JSONBody, request_id
from recstack.serving.api._render import item_dict, items_list, split_csv
from recstack.serving.api._responses import errors, run_blocking
from recstack.serving.api.deps import AdminKey, current_state, holder
from recstack.serving.api.schemas import ID_MAX_LENGTH, MAX_GENRES, Genre, KParam, NewItem, check_new_item_id

__all__ = ["router"]

router = APIRouter(tags=["items"])

_404 = errors(404, 422, 503, e404="unknown item id")
ItemId = Annotated[str, Path(max_length=ID_MAX_LENGTH)]
#: largest offset of GET /v1/items (a catalogue is far smaller)
MAX_OFFSET = 10_000_000


@router.get(
    "/v1/items",
    responses=errors(422, 503),
    summary="Browse / search items by genre and title substring, most popular first",
)
async def list_items(
    request: Request,
    genre: Annotated[
        list[Genre] | None, Query(max_length=MAX_GENRES, description="genre name(s); any matches")
    ] = None,
    q: Annotated[str | None, Query(max_length=200, description="case-insensitive title substring")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
) -> Response:
    state = current_state(request)
    body = await run_blocking(request, _list_items, state, genre, q, limit, offset)
    body["request_id"] = request_id(request)
    return JSONBody(body)


def _list_items(
    state: ServingState, genre: list[str] | None, q: str | None, limit: int, offset: int
) -> dict[str, Any]:
    cat = state.pipeline.catalog
    keep = np.ones(cat.n_items, dtype=bool)
    genres = split_csv(genre)
    if genres:
        keep &= (cat.genre_bits & cat.genre_mask(genres)) != 0
    if q:
        keep &= cat.titles_lower.str.contains(q.lower(), literal=True).fill_null(False).to_numpy()
    order = cat.pop_order[keep[cat.pop_order]]
    page = order[offset : offset + limit]
    return {
        "release_id": state.release_id,
        "total": len(order),
        "offset": offset,
        "items": [item_dict(cat, int(i)) for i in page],
    }


@router.get("/v1/items/{item_id}", responses=_404, summary="One item's metadata")
async def get_item(request: Request, item_id: ItemId) -> Response:
    state = current_state(request)
    body = await run_blocking(request, _item_body, state, item_id)
    body["request_id"] = request_id(request)
    return JSONBody(body)


def _item_body(state: ServingState, item_id: str) -> dict[str, Any]:
    cat = state.pipeline.catalog
    i = cat.item_index(item_id)
    mean = float(cat.rating_mean[i])
    body = item_dict(cat, i)
    body.update(
        {
            "release_id": state.release_id,
            # ratings in the release's data, the distinct people behind them, and the distinct
            # people with any interaction (MovieLens: one rating per person, so all three agree)
            "rating_count": int(cat.rating_count[i]),
            "rater_count": int(cat.rater_count[i]),
            "viewer_count": int(cat.popularity[i]),
            "average_rating": mean if int(cat.rating_count[i]) else None,
        }
    )
    return body


SimilarModel = Annotated[
    str,
    Query(
        max_length=64,
        description="release retriever (itemknn, ease, two_tower...)",
        json_schema_extra={"x-recstack": "similar_model"},
    ),
]


@router.get("/v1/items/{item_id}/similar", responses=_404, summary="Items similar to one item")
async def similar_items(
    request: Request,
    item_id: ItemId,
    k: Annotated[KParam | None, Query()] = None,
    model: Annotated[SimilarModel | None, Query()] = None,
) -> Response:
    state = current_state(request)
    body = await run_blocking(request, _similar_body, state, item_id, k, model)
    body["request_id"] = request_id(request)
    return JSONBody(body)


def _similar_body(state: ServingState, item_id: str, k: int | None, model: str | None) -> dict[str, Any]:
    cat = state.pipeline.catalog
    i = cat.item_index(item_id)
    ids, scores, used = state.pipeline.similar(i, state.pipeline.check_k(k), model)
    return {
        "release_id": state.release_id,
        "model": used,
        "item_id": cat.item_ids[i],
        "items": items_list(cat, ids, scores),
    }


@router.get(
    "/v1/search",
    responses=errors(422, 503),
    summary="Search items by meaning, words and title (text embeddings + BM25 + title match)",
)
async def search_items(
    request: Request,
    q: Annotated[str, Query(min_length=1, max_length=200, description="free text, e.g. a title or a theme")],
    k: Annotated[KParam | None, Query()] = None,
) -> Response:
    state = current_state(request)
    body = await run_blocking(request, _search_body, state, q, k)
    body["request_id"] = request_id(request)
    return JSONBody(body)


def _search_body(state: ServingState, q: str, k: int | None) -> dict[str, Any]:
    pipe = state.pipeline
    hit = pipe.text_search.search(q, pipe.check_k(k))
    return {
        "release_id": state.release_id,
        "query": q,
        "mode": hit.mode,
        "total": len(hit.items),
        "items": items_list(pipe.catalog, hit.items, hit.scores),
    }


@router.post(
    "/v1/items",
    status_code=201,
    responses={
        **errors(
            400, 401, 403, 413, 422, 503, e422="invalid item (integer ids in a catalogue of integer ids)"
        ),
        200: {"description": "the id is already in the catalogue: nothing changed"},
    },
    dependencies=[AdminKey],
    summary="Add an item online: embedded, in the catalogue and the index at once, logged",
)
async def add_item(request: Request, item: NewItem) -> Response:
    """The item is written to the event log first (an ``item`` record: a restart, the other workers
    and the next build from the log get it), then added to this worker's catalogue, text index and
    search (`Pipeline.add_items`). An id already in the catalogue changes nothing (200)."""
    state = current_state(request)
    sink = holder(request).sink
    cat = state.pipeline.catalog
    item_id = check_new_item_id(item.item_id, cat.dataset.item_vocab.is_integer)
    known = cat.dataset.item_vocab.get(item_id) is not None
    row = {
        "item_id": item_id,
        "title": item.title,
        "year": item.year,
        "genres": item.genres,
        "text": item.text,
    }
    offset = None
    t0 = time.perf_counter()
    if sink is not None and not known:
        offset = await sink.append(item_record(row, state.release_id, request_id(request)))
    t1 = time.perf_counter()
    [idx] = await run_blocking(request, state.pipeline.add_items, [row])
    t2 = time.perf_counter()
    body = item_dict(state.pipeline.catalog, int(idx))
    body.update(
        {
            "request_id": request_id(request),
            "release_id": state.release_id,
            "created": not known,
            "offset": offset,
            "persisted": offset is not None,
            "embedded": state.pipeline.text_search.semantic,
            #: where the time went: the durable append to the log, then embedding + catalogue + index
            "seconds": {"log": round(t1 - t0, 4), "add": round(t2 - t1, 4)},
        }
    )
    return JSONBody(body, status_code=200 if known else 201)
