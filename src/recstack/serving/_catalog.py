"""Per-release precomputed arrays that the pipeline and the API read without per-item Python loops.

Built once per release (at load / reload): item metadata (external ids, titles, years, genre
bitmasks), the popularity order and per-item rating statistics. The catalogue holds nothing per
interaction: users' histories are read through the pipeline's `HistoryBackend`
(`recstack.serving._history`: the feature store, shared by every worker when it is Redis), and the
release's interactions frame through `Catalog.interactions`, which a serving worker drops once its
state is built (`ReleaseInteractions.drop`): a later read (rare: a drift reference, a batch job) reads
it from the release's files again.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import numpy.typing as npt
import polars as pl

from recstack._numpy import distinct
from recstack.data.dataset import Dataset, Vocabulary
from recstack.errors import InvalidArgumentError, UnknownIdError

__all__ = ["Catalog", "ReleaseInteractions", "build_catalog", "extend_catalog", "extend_items"]

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float32]

#: at most 63 genres fit into the int64 bitmask
_MAX_GENRES = 63


class ReleaseInteractions:
    """The release's interactions frame for the few readers that need all of it (at load: the
    catalogue, the trending scores, the segment model, an embedded store; later: a drift reference,
    a batch job). Held from construction until `drop`; after it, `get` reads it again through
    ``reload`` (the release's files) without keeping it."""

    def __init__(self, frame: pl.DataFrame, reload: Callable[[], pl.DataFrame] | None = None) -> None:
        self._frame: pl.DataFrame | None = frame
        self._reload = reload
        self._lock = threading.Lock()

    @property
    def held(self) -> bool:
        """True while the frame is in this process's memory."""
        return self._frame is not None

    def get(self) -> pl.DataFrame:
        frame = self._frame
        if frame is not None:
            return frame
        assert self._reload is not None  # dropped only with a way to read it again
        return self._reload()

    def drop(self) -> bool:
        """Forget the frame when it can be read again (``reload``); True when dropped."""
        with self._lock:
            if self._reload is None:
                return False
            self._frame = None
            return True


@dataclass(frozen=True, eq=False)
class Catalog:
    """Items and users of one release as flat arrays (index = dense index)."""

    #: users, items and vocabularies of the release; its interactions frame is empty (zero rows,
    #: the schema kept): `interactions` gives the frame
    dataset: Dataset
    #: the release's interactions (`interactions`)
    release_interactions: ReleaseInteractions
    n_users: int
    item_ids: list[Any]  #: external item id per item index
    titles: list[str | None]
    titles_lower: pl.Series  #: lower-cased titles for substring search
    years: npt.NDArray[np.int32]  #: year per item, -1 when unknown
    genre_names: list[str]  #: genre vocabulary; bit j of ``genre_bits`` = genre_names[j]
    genre_lookup: dict[str, int]  #: lower-cased genre name -> bit position
    genre_bits: IntArray  #: [n_items] int64 bitmask of the item's genres
    genre_matrix: npt.NDArray[np.int32]  #: [n_items, n_genres] 0/1
    genre_lists: list[list[str]]
    genre_codes: list[tuple[int, ...]]  #: per item, the bit positions of its genres
    popularity: FloatArray  #: [n_items] distinct users per item
    pop_order: IntArray  #: item indices by decreasing popularity (ties: lower index first)
    rating_count: IntArray  #: [n_items] interactions with a rating
    rater_count: IntArray  #: [n_items] distinct users with a rating
    rating_mean: npt.NDArray[np.float64]  #: [n_items] mean rating, NaN without ratings
    user_rows: pl.DataFrame  #: users table sorted by dense index

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    def interactions(self) -> pl.DataFrame:
        """The release's interactions frame (``user``, ``item``, ``rating``, ``timestamp``): for
        whole-release computations, never per request (a serving worker reads it from disk)."""
        return self.release_interactions.get()

    # ----------------------------------------------------------------- ids
    def item_index(self, external: Any) -> int:
        """Dense index of an external item id; `UnknownIdError` (404) when absent."""
        idx = self.dataset.item_vocab.get(external)
        if idx is None:
            raise UnknownIdError(f"unknown item id {external!r}; GET /v1/items lists the catalogue")
        return idx

    def item_indices(self, externals: list[Any], *, what: str = "item") -> IntArray:
        """Dense indices of external item ids; unknown ones raise `UnknownIdError` naming them."""
        idx = self.dataset.item_vocab.indices(externals, strict=False)
        if (idx < 0).any():
            bad = [e for e, i in zip(externals, idx, strict=True) if i < 0]
            raise UnknownIdError(f"unknown {what} id(s) {bad[:5]}; use ids listed by GET /v1/items")
        return idx

    def user_index(self, external: Any) -> int | None:
        return self.dataset.user_vocab.get(external)

    def genre_mask(self, names: list[str]) -> int:
        """Bitmask of genre names (case-insensitive); unknown names -> 422 listing the allowed."""
        mask = 0
        for n in names:
            bit = self.genre_lookup.get(n.strip().lower())
            if bit is None:
                raise InvalidArgumentError(
                    f"unknown genre {n!r}; allowed genres: {', '.join(self.genre_names)}"
                )
            mask |= 1 << bit
        return mask


def build_catalog(dataset: Dataset, reload: Callable[[], pl.DataFrame] | None = None) -> Catalog:
    """Precompute every per-release array (a few hundred ms on ML-100K). ``reload`` reads the
    release's interactions again (from its files): with it, `ReleaseInteractions.drop` can forget
    the frame once the serving state is built."""
    n_items, n_users = dataset.n_items, dataset.n_users
    items = dataset.items.sort("item")
    by_idx = items["item"].to_numpy()

    titles: list[str | None] = [None] * n_items
    if "title" in items.columns:
        for i, t in zip(by_idx, items["title"].cast(pl.String).to_list(), strict=True):
            titles[int(i)] = t
    years = np.full(n_items, -1, dtype=np.int32)
    if "year" in items.columns:
        y = items["year"].cast(pl.Int32).fill_null(-1).to_numpy()
        years[by_idx] = y
    genre_lists = dataset.item_genres()
    names = sorted({g for gs in genre_lists for g in gs if g and g != "unknown"})
    if len(names) > _MAX_GENRES:
        names = names[:_MAX_GENRES]
    pos = {g: j for j, g in enumerate(names)}
    gm = np.zeros((n_items, len(names)), dtype=np.int32)
    for it, gs in enumerate(genre_lists):
        for g in gs:
            if g in pos:
                gm[it, pos[g]] = 1
    weights = (np.int64(1) << np.arange(len(names), dtype=np.int64)) if names else np.zeros(0, np.int64)
    bits = (
        (gm.astype(np.int64) * weights).sum(axis=1).astype(np.int64) if names else np.zeros(n_items, np.int64)
    )

    inter = dataset.interactions
    u = inter["user"].to_numpy().astype(np.int64)
    it_ = inter["item"].to_numpy().astype(np.int64)
    pairs = distinct(u * n_items + it_)
    popularity = np.bincount(pairs % n_items, minlength=n_items).astype(np.float32)
    pop_order = np.lexsort((np.arange(n_items), -popularity)).astype(np.int64)
    # ratings in the release's data and the distinct people behind them (the item page)
    r = inter["rating"].cast(pl.Float64)
    rated = r.is_not_null().to_numpy()
    rating_count = np.bincount(it_[rated], minlength=n_items).astype(np.int64)
    rater_count = np.bincount(distinct(u[rated] * n_items + it_[rated]) % n_items, minlength=n_items)
    sums = np.bincount(it_[rated], weights=r.to_numpy()[rated], minlength=n_items)
    with np.errstate(invalid="ignore", divide="ignore"):
        rating_mean = np.where(rating_count > 0, sums / np.maximum(rating_count, 1), np.nan)
    del u, it_, pairs, r, rated, sums

    return Catalog(
        dataset=dataset.with_interactions(inter.clear()),
        release_interactions=ReleaseInteractions(inter, reload),
        n_users=n_users,
        item_ids=dataset.item_vocab.ids.to_list(),
        titles=titles,
        titles_lower=pl.Series("t", [t or "" for t in titles]).str.to_lowercase(),
        years=years,
        genre_names=names,
        genre_lookup={g.lower(): j for j, g in enumerate(names)},
        genre_bits=bits,
        genre_matrix=gm,
        genre_lists=[[g for g in gs if g in pos] for gs in genre_lists],
        genre_codes=[tuple(int(j) for j in np.flatnonzero(row)) for row in gm],
        popularity=popularity,
        pop_order=pop_order,
        rating_count=rating_count,
        rater_count=rater_count.astype(np.int64),
        rating_mean=rating_mean.astype(np.float64),
        user_rows=dataset.users.sort("user"),
    )


def extend_items(dataset: Dataset, rows: Sequence[dict[str, Any]]) -> Dataset:
    """``dataset`` with items appended (``rows``: ``item_id``, ``title``, ``year``, ``genres``,
    ``text``; ids not in the vocabulary): their indices follow the existing ones, interactions and
    users are shared."""
    vocab = dataset.item_vocab
    ids = [int(r["item_id"]) if vocab.is_integer else str(r["item_id"]) for r in rows]
    start = len(vocab)
    new_vocab = Vocabulary(
        vocab.name, pl.concat([vocab.ids, pl.Series(vocab.name, ids, dtype=vocab.ids.dtype)])
    )
    table = pl.DataFrame(
        {
            "item": pl.Series(range(start, start + len(rows)), dtype=pl.Int32),
            "external_id": pl.Series(ids, dtype=vocab.ids.dtype),
            "title": [str(r.get("title") or "") for r in rows],
            "year": pl.Series([r.get("year") for r in rows], dtype=pl.Int32),
            "genres": pl.Series([list(r.get("genres") or []) for r in rows], dtype=pl.List(pl.String)),
            "text": pl.Series([r.get("text") for r in rows], dtype=pl.String),
        }
    )
    keep = [c for c in table.columns if c in dataset.items.columns or c in ("item", "title", "text")]
    items = pl.concat([dataset.items, table.select(keep)], how="diagonal_relaxed")
    return replace(dataset, items=items, item_vocab=new_vocab)


def extend_catalog(cat: Catalog, rows: Sequence[dict[str, Any]]) -> Catalog:
    """``cat`` with items appended (`extend_items`) without recomputing the rest: the new items have
    no interactions (popularity 0, last in the popularity order). A genre the catalogue does not
    know yet changes the genre bit positions: then the catalogue is rebuilt (`build_catalog`)."""
    dataset = extend_items(cat.dataset, rows)
    new_genres = {g for r in rows for g in (r.get("genres") or []) if g and g != "unknown"}
    if not new_genres <= set(cat.genre_names):
        rebuilt = build_catalog(dataset.with_interactions(cat.interactions()))
        return replace(rebuilt, release_interactions=cat.release_interactions)
    m = len(rows)
    pos = {g: j for j, g in enumerate(cat.genre_names)}
    gm = np.zeros((m, len(cat.genre_names)), dtype=np.int32)
    for r_, row in enumerate(rows):
        for g in row.get("genres") or []:
            if g in pos:
                gm[r_, pos[g]] = 1
    weights = np.int64(1) << np.arange(len(cat.genre_names), dtype=np.int64)
    bits = (gm.astype(np.int64) * weights).sum(axis=1).astype(np.int64)
    titles = [str(r.get("title") or "") for r in rows]
    years = np.array([int(r["year"]) if r.get("year") is not None else -1 for r in rows], dtype=np.int32)
    n_old = cat.n_items
    return replace(
        cat,
        dataset=dataset,
        item_ids=dataset.item_vocab.ids.to_list(),
        titles=[*cat.titles, *titles],
        titles_lower=pl.concat([cat.titles_lower, pl.Series("t", titles).str.to_lowercase()]),
        years=np.concatenate([cat.years, years]),
        genre_bits=np.concatenate([cat.genre_bits, bits]),
        genre_matrix=np.vstack([cat.genre_matrix, gm]),
        genre_lists=[*cat.genre_lists, *[[g for g in r.get("genres") or [] if g in pos] for r in rows]],
        genre_codes=[*cat.genre_codes, *[tuple(int(j) for j in np.flatnonzero(row)) for row in gm]],
        popularity=np.concatenate([cat.popularity, np.zeros(m, np.float32)]),
        pop_order=np.concatenate([cat.pop_order, np.arange(n_old, n_old + m, dtype=np.int64)]),
        rating_count=np.concatenate([cat.rating_count, np.zeros(m, np.int64)]),
        rater_count=np.concatenate([cat.rater_count, np.zeros(m, np.int64)]),
        rating_mean=np.concatenate([cat.rating_mean, np.full(m, np.nan)]),
    )
