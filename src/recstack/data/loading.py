"""`load_dataset`: one entry point for every ``--dataset`` argument of the CLI.

Resolution order for ``name_or_path``:

1. ``"ml-latest-small"`` (when no such path exists): the MovieLens latest-small bundled in the
   package (offline);
2. a directory written by `Dataset.save` (it has ``dataset.json``);
3. a MovieLens directory or .zip (layout detected from the files, or forced by ``format``);
4. a CSV / TSV / Parquet interactions file (`load_tabular` with default column names: user
   ``user_id`` / ``userId`` / ``user``, item ``item_id`` / ``movieId`` / ``item``, optional
   ``rating`` and ``timestamp``);
5. a MovieLens name (``ml-100k``, ``ml-1m``, ``ml-25m`` ...) in the first data directory holding
   it (`recstack.data.paths`: ``$RECSTACK_DATA_DIR``, ``./data``, ``../shared/data``...), where
   ``recstack data fetch`` puts it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import polars as pl

from recstack.data._parse import DuplicatePolicy
from recstack.data.dataset import Dataset
from recstack.data.movielens import _NAME_TO_FORMAT, MOVIELENS_FORMATS, load_movielens
from recstack.data.paths import BUNDLED, find_dataset
from recstack.data.tabular import _header, _is_parquet, load_tabular
from recstack.errors import NotFoundError

__all__ = ["DATASET_FORMATS", "dataset_summary", "load_dataset"]

#: Every value ``format=`` / ``--format`` accepts.
DATASET_FORMATS: tuple[str, ...] = ("recstack", "tabular", *MOVIELENS_FORMATS)

_USER_COLS = ("user_id", "userId", "user", "uid")
_ITEM_COLS = ("item_id", "movieId", "itemId", "item", "iid")


def _tabular_columns(path: Path) -> dict[str, Any]:
    if _is_parquet(path):
        cols = list(pl.read_parquet_schema(path))
    else:
        cols = _header(path, "\t" if path.suffix.lower() in (".tsv", ".tab") else ",", "utf-8")
    user = next((c for c in _USER_COLS if c in cols), "user_id")
    item = next((c for c in _ITEM_COLS if c in cols), "item_id")
    return {
        "user": user,
        "item": item,
        "rating": "rating" if "rating" in cols else None,
        "timestamp": "timestamp" if "timestamp" in cols else None,
    }


def load_dataset(
    name_or_path: str | Path,
    format: str | None = None,
    *,
    duplicates: DuplicatePolicy = "last",
) -> Dataset:
    """Load a dataset by name or path (see the module docstring for the resolution order).

    ``format`` is one of `DATASET_FORMATS` (``recstack`` = a saved Dataset directory, ``tabular`` = a
    CSV/Parquet file, ``movielens-*`` = a MovieLens layout); None detects it.
    """
    p = Path(name_or_path)
    if format is not None and format not in DATASET_FORMATS and format.lower() not in _NAME_TO_FORMAT:
        raise ValueError(f"unknown dataset format {format!r}; use one of {', '.join(DATASET_FORMATS)}")
    if not p.exists():
        key = str(name_or_path).lower()
        if key == BUNDLED:
            return load_movielens(None, duplicates=duplicates)
        if key in _NAME_TO_FORMAT:
            cand = find_dataset(key)
            return load_movielens(cand, format=format or _NAME_TO_FORMAT[key], duplicates=duplicates)
        raise NotFoundError(
            f"{name_or_path}: no such file or directory; pass '{BUNDLED}' (bundled), a MovieLens name "
            "(ml-100k... from the data directory), a saved dataset directory, "
            "a MovieLens directory/.zip, or a CSV/Parquet interactions file"
        )
    if format == "recstack" or (format is None and p.is_dir() and (p / "dataset.json").is_file()):
        return Dataset.load(p)
    if format == "tabular" or (format is None and p.is_file() and p.suffix.lower() != ".zip"):
        return load_tabular(p, duplicates=duplicates, **_tabular_columns(p))
    return load_movielens(p, format=format, duplicates=duplicates)


def dataset_summary(ds: Dataset) -> dict[str, Any]:
    """Counts, density, rating distribution, date range and fingerprint of a dataset (JSON-able).

    ``density`` = interactions / (users x items); ``ratings`` maps each distinct rating value to its
    count (implicit data: {1.0: n}); ``first`` / ``last`` are UTC ISO dates of the timestamps (None
    when every timestamp is 0, i.e. unknown).
    """
    from datetime import UTC, datetime

    inter = ds.interactions
    cells = ds.n_users * ds.n_items
    counts = inter.group_by("rating").len().sort("rating")
    lo, hi = inter.select(pl.col("timestamp").min().alias("lo"), pl.col("timestamp").max().alias("hi")).row(0)
    first = last = None
    if inter.height and hi is not None and int(hi) > 0:
        first = datetime.fromtimestamp(int(lo), tz=UTC).date().isoformat()
        last = datetime.fromtimestamp(int(hi), tz=UTC).date().isoformat()
    return {
        "name": ds.name,
        "users": ds.n_users,
        "items": ds.n_items,
        "interactions": ds.n_interactions,
        "density": ds.n_interactions / cells if cells else 0.0,
        "ratings": {float(r): int(n) for r, n in counts.iter_rows()},
        "first": first,
        "last": last,
        "user_columns": [c for c in ds.users.columns if c not in ("user", "external_id")],
        "item_columns": [c for c in ds.items.columns if c not in ("item", "external_id")],
        "fingerprint": ds.fingerprint(),
    }
