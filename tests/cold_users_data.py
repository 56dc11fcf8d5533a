"""A small catalogue where a profile does (or does not) predict taste: the cold-users tests' data.

40 items (ids 1000..1039, genres Drama, Comedy, Action by index % 3), ``n_users`` users (ids 1..n).
Women like items 0..19 and men items 20..39 when ``gender_matters`` (otherwise each user's taste group
is drawn independently of their gender): each user rates 8 items of their taste group (4 or 5 stars)
and 2 random items of the other (1 or 2 stars), at increasing timestamps in that (seeded, shuffled)
order. Items 0 and 20 are liked by every user of their group; the groups are of equal size, so global
popularity mixes both groups while a woman's segment popularity is all items 0..19.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from recstack.data.dataset import Dataset

N_ITEMS = 40


def make_taste_dataset(n_users: int = 200, *, gender_matters: bool = True, seed: int = 0) -> Dataset:
    rng = np.random.default_rng(seed)
    rows: list[tuple[int, int, float, int]] = []
    genders = ["F" if u % 2 == 0 else "M" for u in range(n_users)]
    for u in range(n_users):
        female_taste = genders[u] == "F" if gender_matters else bool(rng.random() < 0.5)
        mine = np.arange(20) if female_taste else np.arange(20, 40)
        other = np.arange(20, 40) if female_taste else np.arange(20)
        liked = np.r_[mine[0], rng.choice(mine[1:], 7, replace=False)]
        rng.shuffle(liked)
        items = [(int(i), float(rng.integers(4, 6))) for i in liked]
        items += [(int(i), float(rng.integers(1, 3))) for i in rng.choice(other, 2, replace=False)]
        for t, (it, r) in enumerate(items):
            rows.append((u + 1, 1000 + it, r, 100_000 * (u + 1) + t))
    inter = pl.DataFrame(rows, schema=["user_id", "item_id", "rating", "timestamp"], orient="row")
    items_df = pl.DataFrame(
        {
            "item_id": [1000 + i for i in range(N_ITEMS)],
            "title": [f"Film {i}" for i in range(N_ITEMS)],
            "year": [2000 + i % 10 for i in range(N_ITEMS)],
            "genres": [[("Drama", "Comedy", "Action")[i % 3]] for i in range(N_ITEMS)],
        }
    )
    users = pl.DataFrame(
        {
            "user_id": list(range(1, n_users + 1)),
            "age": [20 + 10 * (u % 4) for u in range(n_users)],
            "gender": genders,
            "occupation": ["student" if u % 3 else "writer" for u in range(n_users)],
        }
    )
    return Dataset.from_frames("taste", inter, users, items_df)
