"""Turn pipeline outputs into JSON-able dicts (a list comprehension over the k returned items)."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from recstack.serving._catalog import Catalog
from recstack.serving.pipeline import RecResult

__all__ = ["item_dict", "items_list", "rec_body", "split_csv"]


def item_dict(cat: Catalog, i: int) -> dict[str, Any]:
    year = int(cat.years[i])
    return {
        "item_id": cat.item_ids[i],
        "title": cat.titles[i],
        "year": year if year >= 0 else None,
        "genres": cat.genre_lists[i],
        "popularity": int(cat.popularity[i]),
    }


def items_list(
    cat: Catalog, idx: npt.NDArray[np.int64], scores: npt.NDArray[np.float32]
) -> list[dict[str, Any]]:
    ids, titles, years, genres = cat.item_ids, cat.titles, cat.years, cat.genre_lists
    out: list[dict[str, Any]] = []
    for i, s in zip(idx.tolist(), scores.tolist(), strict=True):
        y = int(years[i])
        out.append(
            {
                "item_id": ids[i],
                "score": s,
                "title": titles[i],
                "year": y if y >= 0 else None,
                "genres": genres[i],
            }
        )
    return out


def rec_body(
    cat: Catalog, res: RecResult, *, request_id: str, release_id: str, user_id: Any, k: int
) -> dict[str, Any]:
    items = items_list(cat, res.items, res.scores)
    for j, it in enumerate(items):
        it["sources"] = res.sources[j]
        if res.explain is not None:
            it["explain"] = res.explain[j]
    return {
        "request_id": request_id,
        "release_id": release_id,
        "model": res.model,
        "user_id": user_id,
        "user_kind": res.user_kind,
        "cold_start": res.cold_start,
        "fallbacks": res.fallbacks,
        "degraded": res.degraded,
        "k": k,
        "items": items,
    }


def split_csv(values: list[str] | None) -> list[str]:
    """``?genres=Comedy,Drama&genres=War`` -> ["Comedy", "Drama", "War"]."""
    out: list[str] = []
    for v in values or []:
        out.extend(p.strip() for p in v.split(",") if p.strip())
    return out
