"""The text of an item: title, year, genres, its top tags and top genome tags, in one line.

Example (ml-latest-small, Toy Story)::

    Toy Story (1995). Genres: Adventure, Animation, Children, Comedy, Fantasy. Tags: pixar, fun.

Items added online (`recstack.events.ItemRecord`) carry a free ``text`` that is appended.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from recstack.data.dataset import Dataset

__all__ = ["compose_text", "item_texts"]


def compose_text(
    title: str | None,
    year: int | None = None,
    genres: Sequence[str] = (),
    tags: Sequence[str] = (),
    genome: Sequence[str] = (),
    text: str | None = None,
) -> str:
    """One item's text from its parts (empty parts are left out)."""
    head = (title or "").strip()
    if year is not None and year > 0:
        head = f"{head} ({year})" if head else str(year)
    parts = [head] if head else []
    if genres:
        parts.append("Genres: " + ", ".join(genres))
    if tags:
        parts.append("Tags: " + ", ".join(tags))
    if genome:
        parts.append("Themes: " + ", ".join(genome))
    if text and text.strip():
        parts.append(text.strip().rstrip("."))
    return ". ".join(parts) + ("." if parts else "")


def item_texts(dataset: Dataset, *, top_tags: int = 10, top_genome: int = 10) -> list[str]:
    """The text of every item, in item-index order [n_items]. ``tags`` (the loader orders them most
    applied first) give their first ``top_tags``; a ``genome`` vector gives the names of its
    ``top_genome`` most relevant genome tags (``dataset.meta["genome_tags"]``); a ``text`` column
    (items added online, a description) is appended."""
    items = dataset.items.sort("item")
    n = dataset.n_items
    cols = set(items.columns)

    def column(name: str, default: Any) -> list[Any]:
        out: list[Any] = [default] * n
        if name in cols:
            for i, v in zip(items["item"].to_list(), items[name].to_list(), strict=True):
                out[int(i)] = v if v is not None else default
        return out

    titles = column("title", None)
    years = column("year", None)
    genres = column("genres", [])
    tags = column("tags", [])
    texts = column("text", None)
    genome_names: list[str] = list(dataset.meta.get("genome_tags") or [])
    genome: list[list[str]] = [[] for _ in range(n)]
    if "genome" in cols and genome_names and top_genome > 0:
        for i, vec in zip(items["item"].to_list(), items["genome"].to_list(), strict=True):
            if vec is None:
                continue
            rel = np.asarray(vec, dtype=np.float32)
            best = np.argsort(-rel, kind="stable")[:top_genome]
            genome[int(i)] = [genome_names[j] for j in best.tolist() if j < len(genome_names)]
    return [
        compose_text(
            None if titles[i] is None else str(titles[i]),
            None if years[i] is None else int(years[i]),
            [g for g in genres[i] if g and g != "unknown"],
            list(tags[i])[:top_tags],
            genome[i],
            texts[i],
        )
        for i in range(n)
    ]
