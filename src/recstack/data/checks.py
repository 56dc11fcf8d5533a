"""Data checks that `recstack build` runs on its data before fitting anything.

==================  ==========================================================================
check               fails when
==================  ==========================================================================
``schema``          an interaction column is missing, has the wrong type or holds nulls
``ranges``          a rating is not finite or outside ``[rating_min, rating_max]`` (0..10, as the
                    API accepts); a timestamp is negative (below ``timestamp_min``) or more than a
                    day in the future
``duplicates``      the same (user, item, timestamp) appears twice (exact re-deliveries);
                    repeated (user, item) pairs at other times are re-ratings: counted only
``unlisted_items``  interactions name items the catalogue (``movies.csv``, ``u.item``) does not
                    list: they would be recommended without title or genres
``split_sizes``     a part of the evaluation split has fewer than ``min_users`` users or
                    ``min_items`` items (a data set of one user would "score" NDCG 1.0)
``shift``           the data's distribution moved against the parent release's data by more than
                    ``max_shift_psi`` on a feature (`recstack.ops.drift.profile_shift`: user
                    activity, item popularity, genre mix, ratings); skipped when the parent was
                    built from another data set (a different name)
==================  ==========================================================================

A failing check stops the build (`DataCheckError`, every failure listed) unless the build allows it
with a reason (``[checks] allow = { shift = "new catalogue" }`` or ``recstack build --allow
shift="new catalogue"``); the reason, and every check's result, go into the release manifest
(``data_checks``). Evaluation warns about small test sets through the same mechanism: there is one.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from typing import Any, Literal

import numpy as np
import polars as pl
from pydantic import Field, field_validator

from recstack.config import ComponentConfig
from recstack.data.dataset import Dataset
from recstack.errors import InvalidArgumentError

__all__ = [
    "CHECKS",
    "CheckResult",
    "ChecksSpec",
    "DataCheckError",
    "check_report",
    "run_checks",
]

CHECKS: tuple[str, ...] = ("schema", "ranges", "duplicates", "unlisted_items", "split_sizes", "shift")
#: timestamps below this fail (0 = 1970; data without times carries 0 everywhere, which passes)
TIMESTAMP_MIN = 0
_DAY = 86_400

Status = Literal["pass", "warn", "fail", "allowed", "skipped"]


class ChecksSpec(ComponentConfig):
    """``[checks]`` of a build config. ``allow``: check name -> the reason it may fail."""

    enabled: bool = True
    rating_min: float = 0.0
    rating_max: float = 10.0
    timestamp_min: int = TIMESTAMP_MIN
    min_users: int = Field(default=10, ge=1)
    min_items: int = Field(default=10, ge=1)
    max_shift_psi: float = Field(default=0.25, gt=0)
    allow: dict[str, str] = Field(default_factory=dict)

    @field_validator("allow")
    @classmethod
    def _known(cls, v: dict[str, str]) -> dict[str, str]:
        for name, reason in v.items():
            if name not in CHECKS:
                raise ValueError(f"unknown check {name!r} in allow; checks: {', '.join(CHECKS)}")
            if not str(reason).strip():
                raise ValueError(f"allow.{name} needs a reason (why the build may go on)")
        return v


class CheckResult(dict[str, Any]):
    """``{"check", "status", "message", "details"}`` (a dict: it goes into the manifest as is)."""

    @classmethod
    def of(cls, check: str, status: Status, message: str, **details: Any) -> CheckResult:
        return cls(check=check, status=status, message=message, details=details)


class DataCheckError(InvalidArgumentError):
    """The data failed checks that the build does not allow (the message lists them)."""

    code = "data_check_failed"

    def __init__(self, results: list[CheckResult]) -> None:
        failed = [r for r in results if r["status"] == "fail"]
        lines = "; ".join(f"{r['check']}: {r['message']}" for r in failed)
        names = ",".join(r["check"] for r in failed)
        super().__init__(
            f"data checks failed: {lines}. Fix the data, or build with --allow "
            f'{names.split(",")[0]}="reason" (recorded in the manifest)'
        )
        self.results = results


# ------------------------------------------------------------------------------------ the checks
def _schema(ds: Dataset) -> CheckResult:
    want = {"user": "int", "item": "int", "rating": "float", "timestamp": "int"}
    inter = ds.interactions
    problems = []
    for col, kind in want.items():
        if col not in inter.columns:
            problems.append(f"column {col!r} missing")
            continue
        dt = inter.schema[col]
        ok = dt.is_integer() if kind == "int" else dt.is_float() or dt.is_integer()
        if not ok:
            problems.append(f"{col} is {dt}, expected {kind}")
        nulls = inter[col].null_count()
        if nulls:
            problems.append(f"{col} has {nulls} nulls")
    if "item" not in ds.items.columns or "user" not in ds.users.columns:
        problems.append("the users / items tables lack their index column")
    if problems:
        return CheckResult.of("schema", "fail", "; ".join(problems))
    return CheckResult.of("schema", "pass", f"{inter.height} interactions, columns and types as expected")


def _ranges(ds: Dataset, spec: ChecksSpec) -> CheckResult:
    inter = ds.interactions
    r = inter["rating"].cast(pl.Float64).to_numpy()
    ts = inter["timestamp"].to_numpy()
    bad_r = ~np.isfinite(r) | (r < spec.rating_min) | (r > spec.rating_max)
    future = int(time.time()) + _DAY
    bad_t = (ts < spec.timestamp_min) | (ts > future)
    details: dict[str, Any] = {
        "rating": [float(np.nanmin(r)), float(np.nanmax(r))] if len(r) else [],
        "timestamp": [int(ts.min()), int(ts.max())] if len(ts) else [],
        "bad_ratings": int(bad_r.sum()),
        "bad_timestamps": int(bad_t.sum()),
    }
    if bad_r.any() or bad_t.any():
        msg = []
        if bad_r.any():
            msg.append(
                f"{int(bad_r.sum())} ratings outside [{spec.rating_min:g}, {spec.rating_max:g}] or not finite"
            )
        if bad_t.any():
            msg.append(f"{int(bad_t.sum())} timestamps below {spec.timestamp_min} or in the future")
        return CheckResult.of("ranges", "fail", "; ".join(msg), **details)
    return CheckResult.of(
        "ranges",
        "pass",
        f"ratings {details['rating'][0]:g}..{details['rating'][1]:g}, timestamps in range"
        if len(r)
        else "no interactions",
        **details,
    )


def _duplicates(ds: Dataset) -> CheckResult:
    inter = ds.interactions
    exact = inter.height - inter.select("user", "item", "timestamp").unique().height
    pairs = inter.height - inter.select("user", "item").unique().height
    details = {"exact": exact, "repeated_pairs": pairs}
    if exact:
        return CheckResult.of(
            "duplicates", "fail", f"{exact} rows repeat a (user, item, timestamp) exactly", **details
        )
    note = f"; {pairs} (user, item) pairs repeat at other times (re-ratings)" if pairs else ""
    return CheckResult.of("duplicates", "pass", f"no exact duplicates{note}", **details)


def _unlisted(ds: Dataset) -> CheckResult:
    """Items that interactions name but the catalogue does not list (no title when the catalogue
    has titles)."""
    items = ds.items
    if "title" not in items.columns or items["title"].null_count() == items.height:
        return CheckResult.of("unlisted_items", "skipped", "the data has no item catalogue (titles)")
    unlisted = items.filter(pl.col("title").is_null())
    if unlisted.height == 0:
        return CheckResult.of("unlisted_items", "pass", "every item of the interactions is in the catalogue")
    idx = unlisted["item"].to_numpy()
    mask = np.isin(ds.interactions["item"].to_numpy(), idx)
    rows = ds.interactions.filter(pl.Series(mask))
    uids, iids = ds.user_vocab.ids.to_list(), ds.item_vocab.ids.to_list()
    examples = [
        f"user {uids[u]}, item {iids[i]}, rating {r:g}, ts {t}"
        for u, i, r, t in rows.head(5).select("user", "item", "rating", "timestamp").iter_rows()
    ]
    return CheckResult.of(
        "unlisted_items",
        "fail",
        f"{rows.height} interactions with {unlisted.height} items the catalogue does not list "
        f"(e.g. {examples[0]})",
        items=[str(iids[i]) for i in idx[:50].tolist()],
        rows=rows.height,
        examples=examples,
    )


def _split_sizes(
    ds: Dataset, protocol: str | None, seed: int, spec: ChecksSpec, options: dict[str, Any] | None = None
) -> CheckResult:
    parts: dict[str, Dataset] = {"data": ds}
    if protocol is not None:
        from recstack.data.splits import split

        try:
            sp = split(ds, protocol, seed=seed, **(options or {}))
        except InvalidArgumentError as exc:
            return CheckResult.of("split_sizes", "fail", f"the {protocol} split fails: {exc}")
        parts = {"train": sp.train, "test": sp.test}
    counts = {
        name: {
            "users": int(d.interactions["user"].n_unique()),
            "items": int(d.interactions["item"].n_unique()),
            "interactions": d.n_interactions,
        }
        for name, d in parts.items()
    }
    small = [
        f"{name} has {c['users']} users (min {spec.min_users})"
        for name, c in counts.items()
        if c["users"] < spec.min_users
    ] + [
        f"{name} has {c['items']} items (min {spec.min_items})"
        for name, c in counts.items()
        if c["items"] < spec.min_items
    ]
    what = f"the {protocol} split" if protocol else "the data"
    if small:
        return CheckResult.of(
            "split_sizes",
            "fail",
            f"{what} is too small to evaluate: {'; '.join(small)} (metrics over so few mean nothing)",
            **counts,
        )
    desc = ", ".join(f"{n} {c['users']} users / {c['items']} items" for n, c in counts.items())
    return CheckResult.of("split_sizes", "pass", desc, **counts)


def _shift(ds: Dataset, parent: Dataset | None, parent_id: str | None, spec: ChecksSpec) -> CheckResult:
    if parent is None:
        return CheckResult.of("shift", "skipped", "no parent release to compare with")
    if parent.name.split("/")[0] != ds.name.split("/")[0]:
        return CheckResult.of(
            "shift",
            "skipped",
            f"the parent {parent_id} was built from another data set ({parent.name!r}): no shift check",
        )
    from recstack.ops.drift import profile_shift

    psi = profile_shift(parent, ds)
    over = {f: v for f, v in psi.items() if math.isfinite(v) and v > spec.max_shift_psi}
    details = {"parent": parent_id, "psi": psi, "threshold": spec.max_shift_psi}
    desc = ", ".join(f"{f} {v:.3f}" for f, v in psi.items() if math.isfinite(v))
    if over:
        return CheckResult.of(
            "shift",
            "fail",
            f"the data moved against parent {parent_id}: "
            + ", ".join(f"{f} PSI {v:.3f} > {spec.max_shift_psi:g}" for f, v in over.items()),
            **details,
        )
    return CheckResult.of("shift", "pass", f"PSI against parent {parent_id}: {desc}", **details)


def run_checks(
    ds: Dataset,
    spec: ChecksSpec | None = None,
    *,
    protocol: str | None = None,
    seed: int = 42,
    parent: Dataset | None = None,
    parent_id: str | None = None,
    split_options: dict[str, Any] | None = None,
) -> list[CheckResult]:
    """Every check of `CHECKS` on ``ds`` (see the module docstring). Failures the spec allows come
    back with status ``allowed`` and the reason; raising is the caller's choice (`check_report`).
    ``split_options`` go to `recstack.data.splits.split` (``temporal-rolling``'s windows: the check
    sizes its last fold)."""
    spec = spec or ChecksSpec()
    results = [
        _schema(ds),
        _ranges(ds, spec),
        _duplicates(ds),
        _unlisted(ds),
        _split_sizes(ds, protocol, seed, spec, split_options),
        _shift(ds, parent, parent_id, spec),
    ]
    for r in results:
        if r["status"] == "fail" and r["check"] in spec.allow:
            r["status"] = "allowed"
            r["reason"] = spec.allow[r["check"]]
    return results


def check_report(results: list[CheckResult], *, raise_on_fail: bool = True) -> dict[str, Any]:
    """The manifest's ``data_checks``: {"passed": bool, "results": [...], "allowed": {check: reason}};
    raises `DataCheckError` when a check failed and ``raise_on_fail``."""
    failed = [r for r in results if r["status"] == "fail"]
    if failed and raise_on_fail:
        raise DataCheckError(results)
    return {
        "passed": not failed,
        "results": [dict(r) for r in results],
        "allowed": {r["check"]: r["reason"] for r in results if r["status"] == "allowed"},
    }


def parse_allow(values: list[str] | None) -> dict[str, str]:
    """``["shift=new catalogue", ...]`` (the CLI's --allow) -> {check: reason}."""
    out: dict[str, str] = {}
    for v in values or []:
        name, sep, reason = v.partition("=")
        if not sep or not reason.strip():
            raise InvalidArgumentError(f'--allow {v!r}: write CHECK="reason" (checks: {", ".join(CHECKS)})')
        if name.strip() not in CHECKS:
            raise InvalidArgumentError(f"--allow {v!r}: unknown check; checks: {', '.join(CHECKS)}")
        out[name.strip()] = reason.strip()
    return out


def summary(results: list[CheckResult]) -> Mapping[str, str]:
    """check -> status (for progress lines and tests)."""
    return {r["check"]: r["status"] for r in results}
