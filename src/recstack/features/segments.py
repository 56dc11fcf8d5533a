"""Popularity within demographic segments, shrunk toward global popularity: the profile-only model of
cold start (a visitor who gave an age, a gender and / or an occupation, and nothing else).

Shared by training (`recstack.evaluation.cold_users` chooses its parameters on validation users) and
serving (the pipeline's ``popular`` source scores a profile with it when the release's verdict says
it beats global popularity).

For a segment feature f (``age`` bucket, ``gender``, ``occupation``, ``age_gender``) and the visitor's
segment s, an item i scores ``rate_f(i) = (c_fs(i) + alpha * p(i)) / (n_fs + alpha)``: ``c_fs(i)``
distinct users of segment s who interacted with i, ``n_fs`` users in s, ``p(i)`` the share of all users
who interacted with i. ``alpha`` = 0 is the raw segment popularity, a large ``alpha`` global popularity.
Several features combine by ``mean`` (of the rates) or ``product`` (``log p(i) + sum_f log(rate_f(i) /
p(i))``, naive-Bayes style). A feature the profile does not give (or a segment the data has not seen)
contributes ``p(i)``: an empty profile ranks exactly as global popularity.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import polars as pl

from recstack._numpy import distinct
from recstack.features.tables import AGE_EDGES

__all__ = [
    "SEGMENT_FEATURES",
    "SegmentPopularity",
    "has_demographics",
    "profile_keys",
    "user_profiles",
]

#: the segment features a profile can give
SEGMENT_FEATURES: tuple[str, ...] = ("age", "gender", "occupation", "age_gender")
_EPS = 1e-9

FloatArray = npt.NDArray[np.float64]
Combine = Literal["mean", "product"]


def profile_keys(profile: Mapping[str, Any] | None) -> dict[str, str]:
    """Segment key per feature of a raw profile (``age`` in years, ``gender``, ``occupation``);
    missing or empty values give no key."""
    out: dict[str, str] = {}
    if not profile:
        return out
    age = profile.get("age")
    if age is not None:
        with contextlib.suppress(TypeError, ValueError):
            out["age"] = str(int(np.searchsorted(AGE_EDGES, int(age), side="right")))
    gender = profile.get("gender")
    if gender is not None and str(gender).strip():
        out["gender"] = str(gender).strip().upper()
    occ = profile.get("occupation")
    if occ is not None and str(occ).strip():
        out["occupation"] = str(occ).strip().lower()
    if "age" in out and "gender" in out:
        out["age_gender"] = f"{out['age']}|{out['gender']}"
    return out


def has_demographics(users: pl.DataFrame) -> bool:
    """Whether the users table has a non-null ``age``, ``gender`` or ``occupation`` value."""
    return any(
        c in users.columns and users[c].null_count() < users.height for c in ("age", "gender", "occupation")
    )


def user_profiles(users: pl.DataFrame, n_users: int) -> list[dict[str, Any]]:
    """The raw profile dict of every user index (``{}`` for a user without a row)."""
    out: list[dict[str, Any]] = [{} for _ in range(n_users)]
    cols = [c for c in ("age", "gender", "occupation") if c in users.columns]
    if not cols or "user" not in users.columns:
        return out
    for row in users.select(["user", *cols]).iter_rows(named=True):
        u = int(row.pop("user"))
        if 0 <= u < n_users:
            out[u] = {k: v for k, v in row.items() if v is not None}
    return out


@dataclass(frozen=True, eq=False)
class SegmentPopularity:
    """Segment counts of one training set, scored with parameters ``features``, ``alpha``, ``combine``
    (`with_params` changes them without counting again)."""

    n_users: int
    n_items: int
    item_users: FloatArray  #: [n_items] distinct users per item
    keys: dict[str, dict[str, int]]  #: feature -> segment key -> row of ``counts[feature]``
    counts: dict[str, FloatArray]  #: feature -> [n_segments, n_items] distinct users per item
    sizes: dict[str, FloatArray]  #: feature -> [n_segments] users per segment
    features: tuple[str, ...] = ("age_gender", "occupation")
    alpha: float = 50.0
    combine: Combine = "mean"

    @classmethod
    def fit(
        cls,
        users: npt.ArrayLike,
        items: npt.ArrayLike,
        profiles: Sequence[Mapping[str, Any]],
        n_items: int,
        **params: Any,
    ) -> SegmentPopularity:
        """Count from interaction pairs ``users`` [m], ``items`` [m] (dense indices; duplicates count
        once) and ``profiles`` (raw profile per user index; users with no pair count in no segment)."""
        u = np.asarray(users, dtype=np.int64)
        it = np.asarray(items, dtype=np.int64)
        n_users = len(profiles)
        pairs = distinct(u * n_items + it) if len(u) else np.zeros(0, np.int64)
        pu, pi = pairs // n_items, pairs % n_items
        item_users = np.bincount(pi, minlength=n_items).astype(np.float64)
        active = np.zeros(n_users, dtype=bool)
        active[pu] = True
        per_user = [profile_keys(p) for p in profiles]
        keys: dict[str, dict[str, int]] = {}
        counts: dict[str, FloatArray] = {}
        sizes: dict[str, FloatArray] = {}
        for f in SEGMENT_FEATURES:
            kf: dict[str, int] = {}
            code = np.full(n_users, -1, dtype=np.int64)
            for uidx, pk in enumerate(per_user):
                key = pk.get(f)
                if key is not None:
                    code[uidx] = kf.setdefault(key, len(kf))
            if not kf:
                continue
            g = code[pu]
            ok = g >= 0
            counts[f] = (
                np.bincount(g[ok] * n_items + pi[ok], minlength=len(kf) * n_items)
                .astype(np.float64)
                .reshape(len(kf), n_items)
            )
            sizes[f] = np.bincount(code[active & (code >= 0)], minlength=len(kf)).astype(np.float64)
            keys[f] = kf
        base = cls(
            n_users=int(active.sum()),
            n_items=n_items,
            item_users=item_users,
            keys=keys,
            counts=counts,
            sizes=sizes,
        )
        return base.with_params(**params) if params else base

    def with_params(
        self,
        features: Sequence[str] | None = None,
        alpha: float | None = None,
        combine: Combine | None = None,
    ) -> SegmentPopularity:
        feats = tuple(features) if features is not None else self.features
        bad = [f for f in feats if f not in SEGMENT_FEATURES]
        if bad:
            raise ValueError(f"unknown segment features {bad}; choose from {', '.join(SEGMENT_FEATURES)}")
        a = self.alpha if alpha is None else float(alpha)
        if a < 0:
            raise ValueError(f"alpha must be >= 0, got {a}")
        c = self.combine if combine is None else combine
        if c not in ("mean", "product"):
            raise ValueError(f"combine must be 'mean' or 'product', got {c!r}")
        return replace(self, features=feats, alpha=a, combine=c)

    def params(self) -> dict[str, Any]:
        return {"features": list(self.features), "alpha": self.alpha, "combine": self.combine}

    @property
    def global_share(self) -> FloatArray:
        """p(i): the share of the counted users who interacted with each item."""
        return self.item_users / max(self.n_users, 1)

    def matched(self, profile: Mapping[str, Any] | None) -> list[str]:
        """The features of ``features`` whose segment the profile gives and the data has."""
        pk = profile_keys(profile)
        return [f for f in self.features if f in self.keys and pk.get(f) in self.keys[f]]

    def scores(self, profile: Mapping[str, Any] | None) -> FloatArray:
        """Scores [n_items] float64 (higher is better) of one raw profile."""
        p = self.global_share
        pk = profile_keys(profile)
        rates: list[FloatArray] = []
        for f in self.features:
            row = self.keys.get(f, {}).get(pk.get(f, "\0"))
            if row is None:
                rates.append(p)
                continue
            c, n = self.counts[f][row], float(self.sizes[f][row])
            rates.append((c + self.alpha * p) / max(n + self.alpha, _EPS))
        if not rates:
            return p.copy()
        if self.combine == "mean":
            out: FloatArray = np.mean(rates, axis=0)
            return out
        lp = np.log(p + _EPS)
        prod: FloatArray = lp + np.sum([np.log(r + _EPS) - lp for r in rates], axis=0)
        return prod

    def scores_many(self, profiles: Sequence[Mapping[str, Any] | None]) -> FloatArray:
        """Scores [n, n_items] of several profiles (the same profile keys are scored once)."""
        out = np.empty((len(profiles), self.n_items), dtype=np.float64)
        memo: dict[tuple[tuple[str, str], ...], FloatArray] = {}
        for r, prof in enumerate(profiles):
            key = tuple(sorted(profile_keys(prof).items()))
            if key not in memo:
                memo[key] = self.scores(prof)
            out[r] = memo[key]
        return out
