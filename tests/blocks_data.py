"""The "blocks" data shared by the two-stage tests: users prefer one of 4 item blocks."""

from __future__ import annotations

from typing import Any

import numpy as np
import polars as pl

from recstack.data.dataset import Dataset

GENRES = ("Action", "Comedy", "Drama")

#: a two-stage model small enough for unit tests on the blocks data (two cheap sources, a tiny net; the
#: blocks data is in time user by user, so random holdouts label every user's list)
SMALL_TWO_STAGE: dict[str, Any] = {
    "ranker": "ncf",
    "sources": ("itemknn", "pop"),
    "holdout": "random",
    "per_source": 8,
    "random_negatives": 4,
    "ranker_grid": ({},),
    "ranker_params": {"epochs": 2, "num_threads": 1, "hidden": (16,), "emb_dim": 4},
}


def make_blocks_dataset(n_users: int = 60, n_items: int = 40, seed: int = 0, genres: bool = True) -> Dataset:
    """Users prefer one of 4 item blocks (item % 4) and draw 10 items from it, plus 2 at random; the
    items have one of `GENRES` each (none with ``genres=False``)."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(n_users):
        block = np.flatnonzero(np.arange(n_items) % 4 == u % 4)
        its = np.concatenate([rng.choice(block, 10, replace=False), rng.choice(n_items, 2, replace=False)])
        for t, it in enumerate(np.unique(its)):
            rows.append((u + 1, int(it) + 100, float(1 + (u + it) % 5), 1000 * u + t))
    inter = pl.DataFrame(rows, schema=["user_id", "item_id", "rating", "timestamp"], orient="row")
    items = pl.DataFrame(
        {
            "item_id": [100 + i for i in range(n_items)],
            "title": [f"Movie {i}" for i in range(n_items)],
            "year": [1990 + i % 10 for i in range(n_items)],
            "genres": [[GENRES[i % 3]] for i in range(n_items)],
        }
    )
    return Dataset.from_frames("blocks", inter, None, items if genres else items.drop("genres"))
