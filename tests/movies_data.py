"""A six-movie catalogue with real titles and tags (the search and online-item tests), and a
bag-of-words stand-in for the ONNX text encoder."""

from __future__ import annotations

import numpy as np
import polars as pl

from recstack.data.dataset import Dataset

MOVIES = [
    # (id, title, year, genres, tags: Star Wars' are among its ml-latest-small tags)
    (
        1,
        "Star Wars: Episode IV - A New Hope",
        1977,
        ["Action", "Adventure", "Sci-Fi"],
        ["classic sci-fi", "space epic", "ROBOTS AND ANDROIDS"],
    ),
    (2, "Notting Hill", 1999, ["Comedy", "Romance"], ["london", "love story"]),
    (3, "Toy Story", 1995, ["Animation", "Children", "Comedy"], ["pixar", "toys"]),
    (4, "The Godfather", 1972, ["Crime", "Drama"], ["mafia"]),
    (5, "Babe", 1995, ["Children", "Drama"], ["pig", "farm"]),
    (6, "Sleepless in Seattle", 1993, ["Comedy", "Romance"], ["romance"]),
]


def movie_dataset() -> Dataset:
    inter = pl.DataFrame(
        {
            "user_id": [1, 1, 2, 2, 3, 3, 4],
            "item_id": [1, 3, 2, 6, 4, 5, 3],
            "rating": [5.0, 4.0, 4.0, 5.0, 3.0, 4.0, 5.0],
            "timestamp": [1, 2, 3, 4, 5, 6, 7],
        }
    )
    items = pl.DataFrame(
        {
            "item_id": [m[0] for m in MOVIES],
            "title": [m[1] for m in MOVIES],
            "year": [m[2] for m in MOVIES],
            "genres": [m[3] for m in MOVIES],
            "tags": [m[4] for m in MOVIES],
        }
    )
    return Dataset.from_frames("movies", inter, items=items)


class WordEncoder:
    """A stand-in for the ONNX encoder: a unit bag-of-words vector over a fixed vocabulary."""

    VOCAB = ("space", "robots", "droids", "love", "romance", "toys", "pig", "mafia")

    def encode(self, texts: list[str]) -> np.ndarray:
        out = np.zeros((len(texts), len(self.VOCAB)), dtype=np.float32)
        for r, t in enumerate(texts):
            for j, w in enumerate(self.VOCAB):
                out[r, j] = float(w in t.lower())
        n = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.maximum(n, 1e-9)
