"""Synthetic interaction data with real structure to learn, at any size (ML-25M's shape in minutes).

The generative story (all seeded, vectorised numpy, users processed in chunks):

- 18 MovieLens genres, each a random direction in a ``dim``-dimensional taste space.
- Items: 1-3 genres (the first drawn by a skewed genre frequency); the item's latent vector is the
  normalised mean of its genres' directions plus noise, so genres are correlated with the factors.
  Base popularity is a power law over a random permutation: ``w_i = (rank_i + 10) ** -popularity_exponent``.
- Users: 1-3 favourite genres, a latent vector built the same way; demographics drawn from their
  tastes: gender (P(F) = sigmoid of a projection), age (7..73, shifted by a projection), occupation
  (21 MovieLens 100K occupations, Gumbel-argmax over projections), zip (first digit = region chosen
  from the tastes, four random digits).
- Activity: interactions per user ~ log-normal, at least ``min(20, n_interactions // n_users)``, at
  most half the catalog, scaled to sum exactly to ``n_interactions``.
- Choice: for each user, ``candidate_factor * k_u`` candidates are drawn (a ``genre_focus`` share
  from the popularity of the user's favourite genres, the rest from global popularity mixed with 20%
  uniform); among the distinct candidates the user takes the ``k_u`` with the largest
  ``taste_strength * cos(user, item) + Gumbel noise`` (Gumbel-top-k: sampling without replacement
  proportional to ``exp(taste_strength * cos)``). No (user, item) pair repeats.
- Rating 1..5 (integers): ``round(3.5 + 1.1 * z(cos) + user bias + item bias + noise)`` clipped, where
  z standardises the affinity of chosen pairs.
- Timestamp: uniform in the user's active window (log-normal length) inside [start, end).

External ids are 1..n_users and 1..n_items (int64), like MovieLens.
"""

from __future__ import annotations

import itertools
import math
from datetime import UTC, datetime
from typing import Any

import numpy as np
import numpy.typing as npt
import polars as pl

from recstack._progress import progress_bar
from recstack.data.dataset import Dataset, Vocabulary
from recstack.data.movielens import MOVIELENS_GENRES

__all__ = ["synthesize"]

OCCUPATIONS: tuple[str, ...] = (
    "administrator", "artist", "doctor", "educator", "engineer", "entertainment", "executive",
    "healthcare", "homemaker", "lawyer", "librarian", "marketing", "none", "other", "programmer",
    "retired", "salesman", "scientist", "student", "technician", "writer",
)  # fmt: skip

F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]


def _unit(x: F32) -> F32:
    n = np.linalg.norm(x, axis=1, keepdims=True)
    n[n == 0] = 1.0
    out: F32 = (x / n).astype(np.float32)
    return out


def _pick_genres(rng: np.random.Generator, n: int, freq: npt.NDArray[np.float64]) -> tuple[I64, I64]:
    """[n, 3] genre indices (first by ``freq``, others uniform, may repeat: then dropped) and counts."""
    g = len(freq)
    first = rng.choice(g, size=n, p=freq)
    others = rng.integers(0, g, size=(n, 2))
    counts = 1 + (rng.random(n) < 0.55).astype(np.int64) + (rng.random(n) < 0.25).astype(np.int64)
    out = np.column_stack([first, others]).astype(np.int64)
    out[:, 2] = np.where(counts >= 3, out[:, 2], out[:, 0])
    out[:, 1] = np.where(counts >= 2, out[:, 1], out[:, 0])
    return out, counts


def _latent(rng: np.random.Generator, genres: I64, directions: F32, noise: float) -> F32:
    base = directions[genres].mean(axis=1)
    return _unit(base + noise * rng.standard_normal(base.shape).astype(np.float32))


def _alias_table(weights: npt.NDArray[np.float64]) -> tuple[npt.NDArray[np.float64], I64]:
    """Walker/Vose alias table for drawing index i with probability weights[i] / sum in O(1)."""
    n = len(weights)
    p = np.asarray(weights, dtype=np.float64) * (n / float(np.sum(weights)))
    prob = np.ones(n, dtype=np.float64)
    alias = np.arange(n, dtype=np.int64)
    small = [i for i in range(n) if p[i] < 1.0]
    large = [i for i in range(n) if p[i] >= 1.0]
    pl_ = p.tolist()
    while small and large:
        s_, l_ = small.pop(), large[-1]
        prob[s_] = pl_[s_]
        alias[s_] = l_
        pl_[l_] = pl_[l_] + pl_[s_] - 1.0
        if pl_[l_] < 1.0:
            small.append(large.pop())
    return prob, alias


def _alias_draw(rng: np.random.Generator, prob: npt.NDArray[np.float64], alias: I64, n: int) -> I64:
    j = (rng.random(n) * len(prob)).astype(np.int64)
    return np.where(rng.random(n) < prob[j], j, alias[j])


def _top_per_group(group: I64, key: F32, cnt: I64, take: I64) -> I64:
    """Positions of the ``take[g]`` largest ``key`` within each group ``g`` (``group`` sorted, group g has
    ``cnt[g]`` members). One integer sort of (group, quantised descending key, position) packed into
    uint64 instead of a float argsort."""
    n = len(group)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    b_idx = max(1, int(n - 1).bit_length())
    b_grp = max(1, int(group[-1]).bit_length())
    b_key = 64 - b_idx - b_grp
    if b_key < 12:
        raise ValueError("chunk too large for the packed sort; lower chunk_interactions")
    levels = (1 << b_key) - 1
    lo, hi = -40.0, 40.0
    qk = ((hi - np.clip(key.astype(np.float64), lo, hi)) * (levels / (hi - lo))).astype(np.uint64)
    packed = (group.astype(np.uint64) << np.uint64(b_key + b_idx)) | (qk << np.uint64(b_idx))
    packed |= np.arange(n, dtype=np.uint64)
    packed.sort()
    order = (packed & np.uint64((1 << b_idx) - 1)).astype(np.int64)
    starts = np.concatenate([[0], np.cumsum(cnt)[:-1]])
    g_sorted = group[order]
    pos = np.arange(n) - starts[g_sorted]
    chosen: I64 = order[pos < take[g_sorted]]
    return chosen


def _allocate(rng: np.random.Generator, n_users: int, n_items: int, total: int, sigma: float) -> I64:
    """Interactions per user: log-normal shares, floor ``min(20, total // n_users)``, cap n_items // 2,
    summing exactly to ``total``."""
    cap = max(1, n_items // 2)
    if total > n_users * cap:
        raise ValueError(
            f"n_interactions={total} is more than n_users * n_items / 2 = {n_users * cap}; "
            "ask for fewer interactions or more users/items"
        )
    floor = min(20, total // n_users, cap)
    k = np.full(n_users, floor, dtype=np.int64)
    rest = total - floor * n_users
    w = rng.lognormal(0.0, sigma, size=n_users)
    while rest > 0:
        free = k < cap
        share = np.where(free, w, 0.0)
        add = np.floor(rest * share / share.sum()).astype(np.int64)
        add = np.minimum(add, cap - k)
        k += add
        rest -= int(add.sum())
        if rest > 0 and add.sum() == 0:  # hand out the remainder one by one
            idx = np.flatnonzero(k < cap)
            pick = rng.choice(idx, size=min(rest, len(idx)), replace=False)
            k[pick] += 1
            rest -= len(pick)
    return k


def synthesize(
    n_users: int = 1000,
    n_items: int = 500,
    n_interactions: int = 20_000,
    seed: int = 42,
    *,
    dim: int = 16,
    popularity_exponent: float = 1.2,
    taste_strength: float = 6.0,
    genre_focus: float = 0.7,
    candidate_factor: float = 3.0,
    activity_sigma: float = 1.0,
    start: str = "2010-01-01",
    end: str = "2020-01-01",
    chunk_interactions: int = 1_000_000,
    name: str | None = None,
) -> Dataset:
    """A synthetic explicit-feedback `Dataset` (see the module docstring for the model).

    ``n_interactions`` distinct (user, item) pairs; ratings 1..5 (float32); timestamps int64 Unix
    seconds in [start, end). Memory is about 60 bytes per interaction plus ~100 MB per chunk.
    """
    if n_users <= 0 or n_items <= 0 or n_interactions <= 0:
        raise ValueError("n_users, n_items and n_interactions must be positive")
    if not 0.0 <= genre_focus <= 1.0:
        raise ValueError("genre_focus must be in [0, 1]")
    if candidate_factor < 1.0:
        raise ValueError("candidate_factor must be >= 1")
    rng = np.random.default_rng(seed)
    t0 = int(datetime.fromisoformat(start).replace(tzinfo=UTC).timestamp())
    t1 = int(datetime.fromisoformat(end).replace(tzinfo=UTC).timestamp())
    if t1 <= t0:
        raise ValueError("end must be after start")
    n_genres = len(MOVIELENS_GENRES)
    directions = _unit(rng.standard_normal((n_genres, dim)).astype(np.float32))
    gfreq: npt.NDArray[np.float64] = 1.0 / np.arange(1, n_genres + 1, dtype=np.float64) ** 0.8
    gfreq = gfreq[rng.permutation(n_genres)]
    gfreq /= gfreq.sum()

    # ---------------------------------------------------------------- items
    item_genres, item_gcount = _pick_genres(rng, n_items, gfreq)
    V = _latent(rng, item_genres, directions, 0.6)
    rank = rng.permutation(n_items)
    w = (rank + 10.0) ** -popularity_exponent
    q = 0.8 * w / w.sum() + 0.2 / n_items
    g_prob, g_alias = _alias_table(q)
    # per-genre popularity: genre g's members are memb_item[off[g] : off[g] + size[g]]
    is_member = np.stack([(item_genres == g).any(axis=1) for g in range(n_genres)])
    memb_item = np.concatenate([np.flatnonzero(is_member[g]) for g in range(n_genres)])
    size = is_member.sum(axis=1).astype(np.int64)
    off = np.concatenate([[0], np.cumsum(size)[:-1]]).astype(np.int64)
    m_prob = np.empty(len(memb_item), dtype=np.float64)
    m_alias = np.empty(len(memb_item), dtype=np.int64)
    for g in range(n_genres):
        if size[g]:
            pr, al = _alias_table(w[memb_item[off[g] : off[g] + size[g]]])
            m_prob[off[g] : off[g] + size[g]] = pr
            m_alias[off[g] : off[g] + size[g]] = al + off[g]
    has_items = size > 0
    item_bias = (0.35 * rng.standard_normal(n_items)).astype(np.float32)

    # ---------------------------------------------------------------- users
    user_genres, user_gcount = _pick_genres(rng, n_users, gfreq)
    user_genres = np.where(has_items[user_genres], user_genres, int(np.argmax(size)))
    U = _latent(rng, user_genres, directions, 0.7)
    user_bias = (0.4 * rng.standard_normal(n_users)).astype(np.float32)
    k = _allocate(rng, n_users, n_items, n_interactions, activity_sigma)
    span = np.minimum(np.exp(rng.normal(math.log(200 * 86400), 1.3, n_users)), t1 - t0).astype(np.int64)
    ustart = t0 + (rng.random(n_users) * (t1 - t0 - span)).astype(np.int64)

    # ---------------------------------------------------------- interactions
    out_u: list[npt.NDArray[np.int32]] = []
    out_i: list[npt.NDArray[np.int32]] = []
    out_r: list[npt.NDArray[np.float32]] = []
    out_t: list[npt.NDArray[np.int64]] = []
    bounds = [0]
    acc = 0
    csum = np.cumsum(k)
    while bounds[-1] < n_users:
        acc += chunk_interactions
        nxt = int(np.searchsorted(csum, acc, side="right"))
        bounds.append(min(n_users, max(nxt, bounds[-1] + 1)))
    a_stats: tuple[float, float] | None = None
    with progress_bar() as prog:
        task = prog.add_task("synthesizing", total=n_interactions, status="")
        for lo, hi in itertools.pairwise(bounds):
            users = np.arange(lo, hi)
            ku = k[lo:hi]
            B = hi - lo
            cu = np.minimum(np.ceil(candidate_factor * ku).astype(np.int64) + 10, 4 * n_items)
            rows = np.repeat(np.arange(B, dtype=np.int64), cu)
            n = len(rows)
            from_genre = rng.random(n) < genre_focus
            items = np.empty(n, dtype=np.int64)
            ng = int(from_genre.sum())
            items[~from_genre] = _alias_draw(rng, g_prob, g_alias, n - ng)
            if ng:
                r = rows[from_genre]
                which = (rng.random(ng) * user_gcount[lo + r]).astype(np.int64)
                gsel = user_genres[lo + r, which]
                j = off[gsel] + (rng.random(ng) * size[gsel]).astype(np.int64)
                j = np.where(rng.random(ng) < m_prob[j], j, m_alias[j])
                items[from_genre] = memb_item[j]
            np.minimum(items, n_items - 1, out=items)
            pair = rows * n_items + items
            pair.sort()
            keep = np.empty(len(pair), dtype=bool)
            keep[0] = True
            np.not_equal(pair[1:], pair[:-1], out=keep[1:])
            uniq = pair[keep]
            del pair, keep
            del rows, items, from_genre
            urow = uniq // n_items
            uitem = uniq % n_items
            cnt = np.bincount(urow, minlength=B)
            take = np.minimum(ku, cnt)
            deficit = int((ku - take).sum())
            if deficit:  # users short of distinct candidates: give their share to others in the chunk
                spare_rows = np.repeat(np.arange(B), cnt - take)
                extra = rng.choice(len(spare_rows), size=min(deficit, len(spare_rows)), replace=False)
                take += np.bincount(spare_rows[extra], minlength=B)
            aff = np.empty(len(uniq), dtype=np.float32)
            step = 1_000_000
            for s0 in range(0, len(uniq), step):
                ur, ui = urow[s0 : s0 + step], uitem[s0 : s0 + step]
                aff[s0 : s0 + step] = (U[lo + ur] * V[ui]).sum(axis=1)
            key = taste_strength * aff + rng.gumbel(size=len(uniq)).astype(np.float32)
            chosen = _top_per_group(urow, key, cnt, take)
            cr, ci, ca = urow[chosen], uitem[chosen], aff[chosen]
            if a_stats is None:
                a_stats = (float(ca.mean()), float(ca.std()) or 1.0)
            z = (ca - a_stats[0]) / a_stats[1]
            gu = users[cr]
            raw = 3.5 + 1.1 * z + user_bias[gu] + item_bias[ci] + 0.6 * rng.standard_normal(len(ci))
            out_u.append(gu.astype(np.int32))
            out_i.append(ci.astype(np.int32))
            out_r.append(np.clip(np.rint(raw), 1, 5).astype(np.float32))
            out_t.append(ustart[gu] + (rng.random(len(ci)) * span[gu]).astype(np.int64))
            prog.advance(task, len(ci))

    inter = pl.DataFrame(
        {
            "user": np.concatenate(out_u),
            "item": np.concatenate(out_i),
            "rating": np.concatenate(out_r),
            "timestamp": np.concatenate(out_t),
        }
    )
    del out_u, out_i, out_r, out_t

    # ------------------------------------------------------------- tables
    slot = np.arange(3)[None, :]
    first_seen = np.ones_like(item_genres, dtype=bool)
    first_seen[:, 1] = item_genres[:, 1] != item_genres[:, 0]
    first_seen[:, 2] = (item_genres[:, 2] != item_genres[:, 0]) & (item_genres[:, 2] != item_genres[:, 1])
    valid = (slot < item_gcount[:, None]) & first_seen
    pairs = pl.DataFrame(
        {
            "item": np.repeat(np.arange(n_items, dtype=np.int32), 3)[valid.ravel()],
            "genre": np.array(MOVIELENS_GENRES)[item_genres.ravel()[valid.ravel()]],
        }
    )
    genre_lists = pairs.group_by("item", maintain_order=True).agg(pl.col("genre").alias("genres"))
    year = np.clip(np.rint(2019 - rng.exponential(14.0, n_items)), 1920, 2019).astype(np.int32)
    items_t = pl.DataFrame(
        {
            "item": np.arange(n_items, dtype=np.int32),
            "external_id": np.arange(1, n_items + 1, dtype=np.int64),
            "title": [f"Synthetic movie {i}" for i in range(1, n_items + 1)],
            "year": year,
        }
    ).join(genre_lists, on="item", how="left", maintain_order="left")
    proj = _unit(rng.standard_normal((2 + len(OCCUPATIONS) + 10, dim)).astype(np.float32))
    p_female = 1.0 / (1.0 + np.exp(-3.0 * (U @ proj[0])))
    gender = np.where(rng.random(n_users) < p_female, "F", "M")
    age = np.clip(np.rint(32 + 14 * (U @ proj[1]) + 9 * rng.standard_normal(n_users)), 7, 73).astype(np.int32)
    occ_logits = 3.0 * (U @ proj[2 : 2 + len(OCCUPATIONS)].T) + rng.gumbel(size=(n_users, len(OCCUPATIONS)))
    occupation = np.array(OCCUPATIONS, dtype=object)[occ_logits.argmax(axis=1)]
    region_logits = 3.0 * (U @ proj[2 + len(OCCUPATIONS) :].T) + rng.gumbel(size=(n_users, 10))
    zips = region_logits.argmax(axis=1) * 10000 + rng.integers(0, 10000, n_users)
    users_t = pl.DataFrame(
        {
            "user": np.arange(n_users, dtype=np.int32),
            "external_id": np.arange(1, n_users + 1, dtype=np.int64),
            "age": age,
            "gender": gender.astype(str),
            "occupation": occupation.astype(str),
            "zip": pl.Series(zips).cast(pl.String).str.zfill(5),
        }
    )
    params: dict[str, Any] = {
        "n_users": n_users,
        "n_items": n_items,
        "n_interactions": n_interactions,
        "seed": seed,
        "dim": dim,
        "popularity_exponent": popularity_exponent,
        "taste_strength": taste_strength,
        "genre_focus": genre_focus,
        "candidate_factor": candidate_factor,
        "activity_sigma": activity_sigma,
        "start": start,
        "end": end,
    }
    return Dataset(
        name=name or f"synthetic-{n_users}x{n_items}-{n_interactions}-s{seed}",
        interactions=inter,
        users=users_t,
        items=items_t,
        user_vocab=Vocabulary("user", pl.Series("user", np.arange(1, n_users + 1, dtype=np.int64))),
        item_vocab=Vocabulary("item", pl.Series("item", np.arange(1, n_items + 1, dtype=np.int64))),
        meta={"format": "synthetic", "params": params},
    )
