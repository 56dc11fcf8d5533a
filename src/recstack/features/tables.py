"""User and item feature tables, built with polars, shared by training and serving.

Every categorical feature is encoded with its own vocabulary in which code 0 means "unknown / missing"
(so an unseen user or item, or a value first seen at serving time, maps to a shared OOV row).

User features (one row per dense user index):
    ``age_bucket`` (int, 0 = unknown; buckets of `AGE_EDGES`), ``gender``, ``occupation``, ``zip_prefix``
    (first digit of the zip code) as codes; ``activity`` = log1p(#interactions in the fit data) and
    ``user_mean_rating`` (float32; 0 when none).
Item features (one row per dense item index):
    ``genres`` multi-hot [n_items, n_genres] (float32; one all-zero column, named `NO_GENRE`, when the
    data has no genres: every consumer gets at least one column), ``year_bucket`` code (5-year buckets),
    ``title_tokens`` [n_items, MAX_TITLE_TOKENS] token codes padded with 0, ``popularity`` =
    log1p(#interactions) and ``item_mean_rating`` (float32).

Time context (when the interactions carry timestamps): the fit data's time span is cut into
`TIME_BINS` equal bins; ``user_time`` [n_users, 2] = the bins (float, fractional) of each user's first
and last interaction, ``item_first_time`` [n_items] the bin of each item's first interaction, and
``item_time_counts`` [n_items, TIME_BINS + 1] the cumulative interaction counts per bin, from which
`local_popularity` counts an item's interactions inside any user's active window. Absent (None) when
the data has no timestamps.

Storage: ``users.parquet``, ``items.parquet`` and ``vocabularies.parquet`` (feature, code, value) plus
``features.json``; never pickle.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import polars as pl

from recstack.data.dataset import Dataset
from recstack.errors import ArtifactError

__all__ = [
    "AGE_EDGES",
    "MAX_TITLE_TOKENS",
    "NO_GENRE",
    "TIME_BINS",
    "USER_CATEGORICAL",
    "FeatureTables",
    "TimeWindows",
    "build_features",
    "time_context",
    "user_genre_affinity",
    "window_bins",
]

AGE_EDGES: tuple[int, ...] = (18, 25, 35, 45, 50, 56)
MAX_TITLE_TOKENS = 8
#: the name of the all-zero genre column of data without genres (never a real genre's: it only exists
#: when the genre vocabulary is empty)
NO_GENRE = "none"
_YEAR_BUCKET = 5
_TOKEN_RE = re.compile(r"[a-z0-9]+")
_STOP = frozenset({"the", "a", "an", "of", "and", "in", "to", "la", "le", "les", "de", "il", "el"})

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float32]

USER_CATEGORICAL = ("age_bucket", "gender", "occupation", "zip_prefix")
#: bins of the fit data's time span (the time context's resolution)
TIME_BINS = 64
#: the active window of a user known only by their history (no timestamps): the last bins of the data
RECENT_BINS = 4


def _col(frame: pl.DataFrame, *names: str) -> pl.Series | None:
    for n in names:
        if n in frame.columns:
            return frame[n]
    return None


def _encode(values: list[Any]) -> tuple[IntArray, list[str]]:
    """Codes for string values (0 = missing), vocabulary sorted for determinism; vocab[0] = ''."""
    present = sorted({str(v) for v in values if v is not None and str(v) != ""})
    lookup = {v: j + 1 for j, v in enumerate(present)}
    codes = np.array([lookup.get(str(v), 0) if v is not None else 0 for v in values], dtype=np.int64)
    return codes, ["", *present]


def _tokens(title: str | None) -> list[str]:
    if not title:
        return []
    title = re.sub(r"\(\d{4}\)\s*$", "", title.lower())
    return [t for t in _TOKEN_RE.findall(title) if t not in _STOP and not t.isdigit()]


@dataclass(frozen=True)
class TimeWindows:
    """The user side of `FeatureTables.time_features` for n users, as [n, 1] columns: the active
    window's bin range [b0, b1), its width, the last active bin and whether the user is known."""

    b0: IntArray
    b1: IntArray
    width: FloatArray
    last: FloatArray
    known: npt.NDArray[np.bool_]


@dataclass
class FeatureTables:
    """Dense feature arrays indexed by the dataset's user / item indices, plus vocabularies.

    ``users_cat`` [n_users, 4] int64 codes of `USER_CATEGORICAL`; ``genres`` [n_items, n_genres];
    ``year_bucket`` [n_items]; ``title_tokens`` [n_items, MAX_TITLE_TOKENS]; dense stats float32.
    """

    users_cat: IntArray
    activity: FloatArray
    user_mean_rating: FloatArray
    genres: FloatArray
    year_bucket: IntArray
    title_tokens: IntArray
    popularity: FloatArray
    item_mean_rating: FloatArray
    vocabularies: dict[str, list[str]] = field(default_factory=dict)
    user_time: FloatArray | None = None
    item_first_time: FloatArray | None = None
    item_time_counts: FloatArray | None = None

    @property
    def has_time(self) -> bool:
        return self.user_time is not None and self.item_time_counts is not None

    def user_windows(self, users: IntArray | None, n: int) -> TimeWindows | None:
        """The user side of `time_features` for n ``users`` (dense indices; None: n users known only
        by their history, whose active window is the last `RECENT_BINS` bins); None when `has_time`
        is False. Computed once per user and reused for every candidate (serving memoises it)."""
        if self.user_time is None or self.item_time_counts is None:
            return None
        nb = self.item_time_counts.shape[1] - 1
        if users is not None:
            window = self.user_time[users]  # [n, 2]
            known = window[:, 0] >= 0
        else:
            window = np.full((n, 2), -1.0, dtype=np.float32)
            known = np.ones(n, dtype=bool)
        b0, b1 = window_bins(window, nb)
        # the last active bin (the recent window ends with the data)
        last = np.where(window[:, 0] < 0, np.float32(nb - 1e-6), window[:, 1])
        width = (b1 - b0)[:, None].astype(np.float32)
        return TimeWindows(b0[:, None], b1[:, None], width, last[:, None], known[:, None])

    def time_features(
        self, users: IntArray | None, items: IntArray, windows: TimeWindows | None = None
    ) -> list[FloatArray]:
        """The time context of (user, item) pairs: ``items`` [n, L] (valid indices) of n ``users``
        (as `user_windows`; ``windows``: theirs, precomputed) -> [local popularity, item age]: log1p of
        the item's interactions per bin inside the user's active window, and (user's last bin - item's
        first bin) / TIME_BINS (negative: the item appeared after the user's last activity). Empty
        when `has_time` is False."""
        if self.item_time_counts is None or self.item_first_time is None:
            return []
        w = windows if windows is not None else self.user_windows(users, items.shape[0])
        if w is None:
            return []
        nb = self.item_time_counts.shape[1] - 1
        counts = self.item_time_counts[items, w.b1] - self.item_time_counts[items, w.b0]
        local = np.log1p(counts / w.width)
        first = self.item_first_time[items]
        age = np.where(first >= 0, (w.last - first) / nb, -1.0)
        local = np.where(w.known, local, 0.0)
        age = np.where(w.known, age, 0.0)
        return [local.astype(np.float32), age.astype(np.float32)]

    # ------------------------------------------------------------ sizes
    @property
    def n_users(self) -> int:
        return int(self.users_cat.shape[0])

    @property
    def n_items(self) -> int:
        return int(self.genres.shape[0])

    @property
    def n_genres(self) -> int:
        """Columns of `genres`: the genre vocabulary's size, or 1 (the `NO_GENRE` column) without one."""
        return int(self.genres.shape[1])

    @property
    def genre_columns(self) -> list[str]:
        """The name of each column of `genres` (`n_genres` names): the genre vocabulary without code 0,
        or [`NO_GENRE`] when the data has no genres."""
        names = self.vocabularies["genre"][1:]
        if len(names) == self.n_genres:
            return names
        if names or self.n_genres != 1:
            raise ArtifactError(f"{self.n_genres} genre columns but {len(names)} genres in the vocabulary")
        return [NO_GENRE]

    def cardinality(self, name: str) -> int:
        """Number of codes (including 0 = unknown) of a categorical feature."""
        return len(self.vocabularies[name])

    def user_cardinalities(self) -> list[int]:
        return [self.cardinality(n) for n in USER_CATEGORICAL]

    # ------------------------------------------------------------ profile
    def encode_profile(self, profile: dict[str, Any] | None) -> IntArray:
        """Codes [4] of a raw profile dict (``age``, ``gender``, ``occupation``, ``zip_code``); unknown
        or missing values give 0."""
        out = np.zeros(len(USER_CATEGORICAL), dtype=np.int64)
        if not profile:
            return out
        age = profile.get("age")
        if age is not None:
            out[0] = self._code("age_bucket", str(int(np.searchsorted(AGE_EDGES, int(age), side="right"))))
        for j, (feat, key) in enumerate(
            (("gender", "gender"), ("occupation", "occupation"), ("zip_prefix", "zip_code")), start=1
        ):
            raw = profile.get(key, profile.get("zip")) if key == "zip_code" else profile.get(key)
            if raw is not None:
                val = str(raw)[:1] if feat == "zip_prefix" else str(raw)
                out[j] = self._code(feat, val)
        return out

    def _code(self, feature: str, value: str) -> int:
        vocab = self.vocabularies[feature]
        try:
            return vocab.index(value)
        except ValueError:
            return 0

    # ------------------------------------------------------------ storage
    def save(self, directory: str | Path) -> Path:
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        users = pl.DataFrame(
            {
                "user": np.arange(self.n_users, dtype=np.int32),
                **{n: self.users_cat[:, j] for j, n in enumerate(USER_CATEGORICAL)},
                "activity": self.activity,
                "user_mean_rating": self.user_mean_rating,
            }
        )
        if self.user_time is not None:
            users = users.with_columns(
                pl.Series("time_first", self.user_time[:, 0]), pl.Series("time_last", self.user_time[:, 1])
            )
        items = pl.DataFrame(
            {
                "item": np.arange(self.n_items, dtype=np.int32),
                "genres": self.genres,
                "year_bucket": self.year_bucket,
                "title_tokens": self.title_tokens,
                "popularity": self.popularity,
                "item_mean_rating": self.item_mean_rating,
            }
        )
        if self.item_first_time is not None and self.item_time_counts is not None:
            items = items.with_columns(
                pl.Series("time_first", self.item_first_time), pl.Series("time_counts", self.item_time_counts)
            )
        users.write_parquet(d / "users.parquet")
        items.write_parquet(d / "items.parquet")
        vocab_rows = [(f, c, v) for f, vals in self.vocabularies.items() for c, v in enumerate(vals)]
        pl.DataFrame(
            {
                "feature": [r[0] for r in vocab_rows],
                "code": [r[1] for r in vocab_rows],
                "value": [r[2] for r in vocab_rows],
            },
            schema={"feature": pl.String, "code": pl.Int64, "value": pl.String},
        ).write_parquet(d / "vocabularies.parquet")
        (d / "features.json").write_text(
            json.dumps({"format": 1, "n_users": self.n_users, "n_items": self.n_items}, indent=2)
        )
        return d

    @classmethod
    def load(cls, directory: str | Path) -> FeatureTables:
        d = Path(directory)
        if not (d / "features.json").is_file():
            raise ArtifactError(f"{d}: not a saved FeatureTables directory (features.json missing)")
        users = pl.read_parquet(d / "users.parquet").sort("user")
        items = pl.read_parquet(d / "items.parquet").sort("item")
        voc = pl.read_parquet(d / "vocabularies.parquet").sort(["feature", "code"])
        vocabularies: dict[str, list[str]] = {}
        for feat, code, value in voc.iter_rows():
            vocabularies.setdefault(feat, [])
            if code != len(vocabularies[feat]):
                raise ArtifactError(f"{d}/vocabularies.parquet: codes of {feat!r} are not contiguous")
            vocabularies[feat].append(value)
        has_time = "time_first" in users.columns and "time_counts" in items.columns
        return cls(
            user_time=(
                np.stack([users["time_first"].to_numpy(), users["time_last"].to_numpy()], axis=1).astype(
                    np.float32
                )
                if has_time
                else None
            ),
            item_first_time=items["time_first"].to_numpy().astype(np.float32) if has_time else None,
            item_time_counts=(
                np.asarray(items["time_counts"].to_numpy(), dtype=np.float32).reshape(len(items), -1)
                if has_time
                else None
            ),
            users_cat=np.stack([users[n].to_numpy().astype(np.int64) for n in USER_CATEGORICAL], axis=1),
            activity=users["activity"].to_numpy().astype(np.float32),
            user_mean_rating=users["user_mean_rating"].to_numpy().astype(np.float32),
            genres=np.asarray(items["genres"].to_numpy(), dtype=np.float32).reshape(len(items), -1),
            year_bucket=items["year_bucket"].to_numpy().astype(np.int64),
            title_tokens=np.asarray(items["title_tokens"].to_numpy(), dtype=np.int64).reshape(len(items), -1),
            popularity=items["popularity"].to_numpy().astype(np.float32),
            item_mean_rating=items["item_mean_rating"].to_numpy().astype(np.float32),
            vocabularies=vocabularies,
        )


def build_features(dataset: Dataset, interactions: pl.DataFrame | None = None) -> FeatureTables:
    """Feature tables of ``dataset``'s users and items. Statistics (activity, popularity, mean
    ratings) come from ``interactions`` (default: the dataset's own; pass the training part only so
    that no test data leaks into features)."""
    inter = dataset.interactions if interactions is None else interactions
    n_u, n_i = dataset.n_users, dataset.n_items

    # ---- users
    users = dataset.users.sort("user")
    uidx = users["user"].to_numpy()
    vocabularies: dict[str, list[str]] = {}
    users_cat = np.zeros((n_u, len(USER_CATEGORICAL)), dtype=np.int64)
    age = _col(users, "age")
    if age is not None:
        buckets = [None if a is None else str(int(np.searchsorted(AGE_EDGES, a, side="right"))) for a in age]
        codes, vocab = _encode(buckets)
    else:
        codes, vocab = np.zeros(len(uidx), dtype=np.int64), [""]
    users_cat[uidx, 0] = codes
    vocabularies["age_bucket"] = vocab
    for j, (feat, names) in enumerate(
        (("gender", ("gender",)), ("occupation", ("occupation",)), ("zip_prefix", ("zip_code", "zip"))),
        start=1,
    ):
        col = _col(users, *names)
        vals: list[Any] = [None] * len(uidx) if col is None else col.cast(pl.String).to_list()
        if feat == "zip_prefix":
            vals = [None if v is None else str(v)[:1] for v in vals]
        codes, vocab = _encode(vals)
        users_cat[uidx, j] = codes
        vocabularies[feat] = vocab

    u = inter["user"].to_numpy()
    i = inter["item"].to_numpy()
    r = inter["rating"].to_numpy().astype(np.float64)
    ucount = np.bincount(u, minlength=n_u).astype(np.float64)
    icount = np.bincount(i, minlength=n_i).astype(np.float64)
    usum = np.bincount(u, weights=r, minlength=n_u)
    isum = np.bincount(i, weights=r, minlength=n_i)
    with np.errstate(invalid="ignore", divide="ignore"):
        umean = np.where(ucount > 0, usum / np.maximum(ucount, 1), 0.0)
        imean = np.where(icount > 0, isum / np.maximum(icount, 1), 0.0)

    # ---- items
    items = dataset.items.sort("item")
    iidx = items["item"].to_numpy()
    genre_lists = dataset.item_genres()
    genre_vocab = sorted({g for gs in genre_lists for g in gs if g and g != "unknown"})
    gpos = {g: j for j, g in enumerate(genre_vocab)}
    # at least one column (all zero without genres, `NO_GENRE`): see `FeatureTables.genre_columns`
    genres = np.zeros((n_i, max(len(genre_vocab), 1)), dtype=np.float32)
    for it, gs in enumerate(genre_lists):
        for g in gs:
            if g in gpos:
                genres[it, gpos[g]] = 1.0
    vocabularies["genre"] = ["", *genre_vocab]

    year = _col(items, "year")
    year_bucket = np.zeros(n_i, dtype=np.int64)
    if year is not None:
        yb = [None if y is None else str(int(y) // _YEAR_BUCKET * _YEAR_BUCKET) for y in year]
        codes, vocab = _encode(yb)
        year_bucket[iidx] = codes
    else:
        vocab = [""]
    vocabularies["year_bucket"] = vocab

    title = _col(items, "title")
    titles: list[str | None] = [None] * len(iidx) if title is None else title.cast(pl.String).to_list()
    toks = [_tokens(t) for t in titles]
    tok_counts: dict[str, int] = {}
    for ts in toks:
        for t in set(ts):
            tok_counts[t] = tok_counts.get(t, 0) + 1
    # tokens seen in at least 2 titles generalise; the rest map to 0
    tok_vocab = sorted(t for t, c in tok_counts.items() if c >= 2)
    tpos = {t: j + 1 for j, t in enumerate(tok_vocab)}
    title_tokens = np.zeros((n_i, MAX_TITLE_TOKENS), dtype=np.int64)
    for row, ts in zip(iidx, toks, strict=True):
        codes_t = [tpos[t] for t in ts if t in tpos][:MAX_TITLE_TOKENS]
        title_tokens[row, : len(codes_t)] = codes_t
    vocabularies["title_token"] = ["", *tok_vocab]

    user_time, item_first_time, item_time_counts = time_context(inter, n_u, n_i)
    return FeatureTables(
        user_time=user_time,
        item_first_time=item_first_time,
        item_time_counts=item_time_counts,
        users_cat=users_cat,
        activity=np.log1p(ucount).astype(np.float32),
        user_mean_rating=umean.astype(np.float32),
        genres=genres,
        year_bucket=year_bucket,
        title_tokens=title_tokens,
        popularity=np.log1p(icount).astype(np.float32),
        item_mean_rating=imean.astype(np.float32),
        vocabularies=vocabularies,
    )


def window_bins(window: FloatArray, n_bins: int, margin: int = 0) -> tuple[IntArray, IntArray]:
    """The bin range [b0, b1) of active windows ``window`` [n, 2] (fractional first / last bins of
    `time_context`), widened by ``margin`` bins on both sides and clipped to [0, n_bins]; rows whose
    first bin is < 0 (no activity known) get the last `RECENT_BINS` bins: what is popular now."""
    recent = window[:, 0] < 0
    lo = np.where(recent, n_bins - RECENT_BINS, np.floor(window[:, 0]) - margin)
    hi = np.where(recent, n_bins, np.floor(window[:, 1]) + 1 + margin)
    return np.clip(lo, 0, n_bins).astype(np.int64), np.clip(hi, 0, n_bins).astype(np.int64)


def time_context(
    inter: pl.DataFrame, n_users: int, n_items: int
) -> tuple[FloatArray | None, FloatArray | None, FloatArray | None]:
    """(user_time, item_first_time, item_time_counts) of `FeatureTables` from interactions with
    ``user``, ``item`` and ``timestamp`` columns; three Nones when the timestamps are all equal."""
    if inter.height == 0 or "timestamp" not in inter.columns:
        return None, None, None
    t = inter["timestamp"].to_numpy().astype(np.float64)
    lo, hi = float(t.min()), float(t.max())
    if hi <= lo:
        return None, None, None
    # fractional bin in [0, TIME_BINS), kept below TIME_BINS also once rounded to float32
    pos = np.minimum((t - lo) / (hi - lo) * TIME_BINS, TIME_BINS - 1e-3)
    u = inter["user"].to_numpy().astype(np.int64)
    i = inter["item"].to_numpy().astype(np.int64)
    user_time = np.full((n_users, 2), -1.0, dtype=np.float64)
    user_time[:, 0] = np.inf
    np.minimum.at(user_time[:, 0], u, pos)
    np.maximum.at(user_time[:, 1], u, pos)
    user_time[~np.isfinite(user_time[:, 0]), 0] = -1.0
    first = np.full(n_items, np.inf)
    np.minimum.at(first, i, pos)
    first[~np.isfinite(first)] = -1.0
    counts = np.zeros((n_items, TIME_BINS + 1), dtype=np.float64)
    np.add.at(counts, (i, np.floor(pos).astype(np.int64) + 1), 1.0)
    return (
        user_time.astype(np.float32),
        first.astype(np.float32),
        np.cumsum(counts, axis=1).astype(np.float32),
    )


def user_genre_affinity(history: Any, genres: FloatArray) -> FloatArray:
    """Share of each genre among a user's items: ``history`` [n, n_items] (binary, sparse or dense)
    times ``genres`` [n_items, G], rows normalised to sum 1 -> [n, G] float32 (zeros for empty rows)."""
    counts = np.asarray(history @ genres, dtype=np.float32)
    tot = counts.sum(axis=1, keepdims=True)
    out: FloatArray = np.divide(counts, tot, out=np.zeros_like(counts), where=tot > 0).astype(np.float32)
    return out
