"""Per-release precomputed arrays that the pipeline and the API read without per-item Python loops.

Built once per release (at load / reload): item metadata (external ids, titles, years, genre
bitmasks), popularity orders (overall and per demographic group), and the base interaction history
as CSR matrices sorted by time.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import numpy.typing as npt
import polars as pl
import scipy.sparse as sp

from recstack.data.dataset import Dataset, Vocabulary
from recstack.errors import InvalidArgumentError, UnknownIdError
from recstack.features.tables import AGE_EDGES

__all__ = ["Catalog", "build_catalog", "extend_catalog", "extend_items"]

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float32]

#: at most 63 genres fit into the int64 bitmask
_MAX_GENRES = 63


@dataclass(frozen=True, eq=False)
class Catalog:
    """Items and users of one release as flat arrays (index = dense index)."""

    dataset: Dataset
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
    demo_keys: dict[tuple[int, str], int]  #: (age bucket, gender) -> row of ``demo_pop``
    demo_pop: FloatArray  #: [n_groups, n_items] distinct users per item within each group
    occ_keys: dict[str, int]  #: occupation -> row of ``occ_pop``
    occ_pop: FloatArray  #: [n_occupations, n_items]
    hist_items: sp.csr_matrix  #: [n_users, n_items] CSR; row's ``indices`` ordered by time
    hist_ratings: FloatArray  #: aligned with ``hist_items.indices``
    hist_times: npt.NDArray[np.int64]  #: aligned with ``hist_items.indices``
    user_rows: pl.DataFrame  #: users table sorted by dense index

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    @property
    def n_users(self) -> int:
        return int(self.hist_items.shape[0])

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

    # ------------------------------------------------------------- history
    def base_history(self, user_idx: int) -> tuple[IntArray, FloatArray, npt.NDArray[np.int64]]:
        """(items, ratings, timestamps) of a known user from the release, oldest first."""
        a, b = self.hist_items.indptr[user_idx], self.hist_items.indptr[user_idx + 1]
        return (
            self.hist_items.indices[a:b].astype(np.int64),
            self.hist_ratings[a:b],
            self.hist_times[a:b],
        )


def _group_pop(
    user_of: npt.NDArray[np.int64],
    item_of: npt.NDArray[np.int64],
    group_of_user: IntArray,
    n_groups: int,
    n_items: int,
) -> FloatArray:
    g = group_of_user[user_of]
    ok = g >= 0
    flat = g[ok] * n_items + item_of[ok]
    counts = np.bincount(flat, minlength=n_groups * n_items).astype(np.float32)
    return counts.reshape(n_groups, n_items)


def build_catalog(dataset: Dataset) -> Catalog:
    """Precompute every per-release array (a few hundred ms on ML-100K)."""
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

    inter = dataset.interactions.sort(["user", "timestamp", "item"])
    u = inter["user"].to_numpy().astype(np.int64)
    it_ = inter["item"].to_numpy().astype(np.int64)
    r = inter["rating"].to_numpy().astype(np.float32)
    ts = inter["timestamp"].to_numpy().astype(np.int64)
    indptr = np.zeros(n_users + 1, dtype=np.int64)
    np.cumsum(np.bincount(u, minlength=n_users), out=indptr[1:])
    hist = sp.csr_matrix((np.ones(len(u), dtype=np.float32), it_, indptr), shape=(n_users, n_items))

    pairs = np.unique(u * n_items + it_)
    pu, pi = pairs // n_items, pairs % n_items
    popularity = np.bincount(pi, minlength=n_items).astype(np.float32)
    pop_order = np.lexsort((np.arange(n_items), -popularity)).astype(np.int64)

    users = dataset.users.sort("user")
    demo_keys: dict[tuple[int, str], int] = {}
    group = np.full(n_users, -1, dtype=np.int64)
    if "age" in users.columns or "gender" in users.columns:
        ages = users["age"].to_list() if "age" in users.columns else [None] * users.height
        genders = (
            users["gender"].cast(pl.String).to_list() if "gender" in users.columns else [None] * users.height
        )
        # each user counts in its exact group, its age-only group and its gender-only group
        keys: list[list[tuple[int, str]]] = []
        for a, g in zip(ages, genders, strict=True):
            b = -1 if a is None else int(np.searchsorted(AGE_EDGES, int(a), side="right"))
            gg = str(g or "").upper()
            keys.append([(b, gg), (b, ""), (-1, gg)])
        for ks in keys:
            for k in ks:
                demo_keys.setdefault(k, len(demo_keys))
        uidx = users["user"].to_numpy().astype(np.int64)
        demo_pop = np.zeros((len(demo_keys), n_items), dtype=np.float32)
        for slot in range(3):
            group[:] = -1
            group[uidx] = [demo_keys[ks[slot]] for ks in keys]
            demo_pop += _group_pop(pu, pi, group, len(demo_keys), n_items)
    else:
        demo_pop = np.zeros((0, n_items), dtype=np.float32)
    occ_keys: dict[str, int] = {}
    if "occupation" in users.columns:
        occs = [
            str(o).lower() if o is not None else None for o in users["occupation"].cast(pl.String).to_list()
        ]
        for o in occs:
            if o is not None:
                occ_keys.setdefault(o, len(occ_keys))
        group[:] = -1
        group[users["user"].to_numpy().astype(np.int64)] = [
            occ_keys[o] if o is not None else -1 for o in occs
        ]
        occ_pop = _group_pop(pu, pi, group, len(occ_keys), n_items)
    else:
        occ_pop = np.zeros((0, n_items), dtype=np.float32)

    return Catalog(
        dataset=dataset,
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
        demo_keys=demo_keys,
        demo_pop=demo_pop,
        occ_keys=occ_keys,
        occ_pop=occ_pop,
        hist_items=hist,
        hist_ratings=r,
        hist_times=ts,
        user_rows=users,
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
        return build_catalog(dataset)
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
    hist = sp.csr_matrix(
        (cat.hist_items.data, cat.hist_items.indices, cat.hist_items.indptr), shape=(cat.n_users, n_old + m)
    )
    return Catalog(
        dataset=dataset,
        item_ids=dataset.item_vocab.ids.to_list(),
        titles=[*cat.titles, *titles],
        titles_lower=pl.concat([cat.titles_lower, pl.Series("t", titles).str.to_lowercase()]),
        years=np.concatenate([cat.years, years]),
        genre_names=cat.genre_names,
        genre_lookup=cat.genre_lookup,
        genre_bits=np.concatenate([cat.genre_bits, bits]),
        genre_matrix=np.vstack([cat.genre_matrix, gm]),
        genre_lists=[*cat.genre_lists, *[[g for g in r.get("genres") or [] if g in pos] for r in rows]],
        genre_codes=[*cat.genre_codes, *[tuple(int(j) for j in np.flatnonzero(row)) for row in gm]],
        popularity=np.concatenate([cat.popularity, np.zeros(m, np.float32)]),
        pop_order=np.concatenate([cat.pop_order, np.arange(n_old, n_old + m, dtype=np.int64)]),
        demo_keys=cat.demo_keys,
        demo_pop=np.hstack([cat.demo_pop, np.zeros((cat.demo_pop.shape[0], m), np.float32)]),
        occ_keys=cat.occ_keys,
        occ_pop=np.hstack([cat.occ_pop, np.zeros((cat.occ_pop.shape[0], m), np.float32)]),
        hist_items=hist,
        hist_ratings=cat.hist_ratings,
        hist_times=cat.hist_times,
        user_rows=cat.user_rows,
    )
