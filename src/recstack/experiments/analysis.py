"""Attribution of outcomes to impressions, and the per-arm report with its statistics.

**Impressions.** Every recommendation answer a server gives a user id is logged as an ``impression``
event (`recstack.events`): its payload holds the shown item ids, their positions (1 = top), the
experiment and arm (None outside an experiment), the model and ``k``; the event carries the release
and the request id.

**Attribution.** A ``click`` or ``rating`` of item *i* by user *u* at server time *t* is attributed to
the latest impression that showed *i* to *u* at a time in ``[t - window_s, t]`` (server times: the
log's ``received``, so a client's clock cannot move an outcome into or out of the window). An outcome
with no such impression is organic and counts for no arm. Several clicks on one shown item count once;
of several ratings the last counts.

**Metrics per arm** (`arm_metrics`): users, impressions, items shown, clicks; CTR = attributed clicks /
items shown; hit-rate@k = share of impressions with an engaged (clicked or rated) item in their top k;
mean rating of engaged items; coverage = distinct items shown / catalogue size.

**Statistics.** The unit of assignment is the user, so a user's impressions are not independent
draws: each ratio metric is a ratio of per-user sums, and its standard error comes from the delta
method over users (Deng, Knoblich & Lu, "Applying the Delta Method in Metric Analytics", KDD 2018),
not from a binomial over impressions (which would understate it and make an A/A test fire too
often). Confidence intervals are normal (``scipy.stats.norm``); the difference of an arm from the
control (the first arm) is a two-sided z-test of the two independent ratios. A chi-square test of the
users per arm against the declared shares (``scipy.stats.chisquare``) flags a sample-ratio mismatch
(broken assignment or logging), which invalidates every other figure.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import polars as pl
from scipy import stats

from recstack.experiments.config import HOLDOUT_ARM, ExperimentConfig

__all__ = [
    "IMPRESSION_PAYLOAD",
    "RATIO_METRICS",
    "RatioEstimate",
    "analyse",
    "attribute",
    "ratio_estimate",
    "shown_items",
]

#: polars dtype of an impression's payload
IMPRESSION_PAYLOAD = pl.Struct(
    {
        "experiment": pl.String,
        "arm": pl.String,
        "items": pl.List(pl.String),
        "positions": pl.List(pl.Int64),
        "model": pl.String,
        "segment": pl.String,
        "k": pl.Int64,
    }
)
#: (metric, numerator column, denominator column) of the per-user sums
RATIO_METRICS: tuple[tuple[str, str, str], ...] = (
    ("ctr", "clicks", "shown"),
    ("hit_rate", "hits", "impressions"),
    ("mean_rating", "rating_sum", "rated"),
)


# ---------------------------------------------------------------------------------- attribution
def shown_items(events: pl.DataFrame, experiment: str | None = None) -> pl.DataFrame:
    """One row per shown item of every impression (of ``experiment`` when given): ``imp`` (the
    impression's offset), user_id, arm, release_id, received, item_id, position."""
    imps = events.filter(pl.col("type") == "impression").with_columns(
        pl.col("payload").str.json_decode(IMPRESSION_PAYLOAD).alias("_p")
    )
    imps = imps.with_columns(
        pl.col("_p").struct.field("experiment").alias("experiment"),
        pl.col("_p").struct.field("arm").alias("arm"),
        pl.col("_p").struct.field("items").alias("item_id_list"),
        pl.col("_p").struct.field("positions").alias("position"),
        pl.col("_p").struct.field("segment").alias("segment"),
    )
    if experiment is not None:
        imps = imps.filter(pl.col("experiment") == experiment)
    return (
        imps.select(
            pl.col("offset").alias("imp"),
            "user_id",
            "experiment",
            "arm",
            "release_id",
            "received",
            "segment",
            pl.col("item_id_list").alias("item_id"),
            "position",
        )
        .explode("item_id", "position")
        .drop_nulls("item_id")
    )


def attribute(events: pl.DataFrame, shown: pl.DataFrame, window_s: float) -> pl.DataFrame:
    """Clicks and ratings of ``events`` matched to the latest showing in ``shown`` (`shown_items`) of
    the same item to the same user at most ``window_s`` seconds before (server time): one row per
    (impression, item) with ``clicked`` (bool) and ``rating`` (the last attributed rating, or null)."""
    outcomes = (
        events.filter(pl.col("type").is_in(["click", "rating"]))
        .filter(pl.col("user_id").is_in(shown["user_id"].unique().implode()))
        .select("user_id", "item_id", "type", "rating", "received", "offset")
        .sort("received")
    )
    cols = ["imp", "arm", "position", "user_id", "item_id", "clicked", "rating"]
    if outcomes.height == 0 or shown.height == 0:
        return pl.DataFrame(
            schema={
                "imp": pl.Int64,
                "arm": pl.String,
                "position": pl.Int64,
                "user_id": pl.String,
                "item_id": pl.String,
                "clicked": pl.Boolean,
                "rating": pl.Float64,
            }
        )
    right = shown.select(
        "imp", "arm", "position", "user_id", "item_id", pl.col("received").alias("shown_at")
    ).sort("shown_at")
    with warnings.catch_warnings():  # both sides are sorted by time above; polars cannot check per group
        warnings.simplefilter("ignore", UserWarning)
        matched = outcomes.join_asof(
            right,
            left_on="received",
            right_on="shown_at",
            by=["user_id", "item_id"],
            strategy="backward",
            tolerance=float(window_s),
        ).drop_nulls("imp")
    return (
        matched.sort("offset")
        .group_by("imp", "arm", "position", "user_id", "item_id", maintain_order=True)
        .agg(
            (pl.col("type") == "click").any().alias("clicked"),
            pl.col("rating").filter(pl.col("type") == "rating").last().alias("rating"),
        )
        .select(cols)
    )


def per_user(shown: pl.DataFrame, attributed: pl.DataFrame, k: int) -> pl.DataFrame:
    """Per (arm, user) sums: impressions, shown, clicks, hits (impressions with an engaged item in
    the top ``k``), rating_sum, rated."""
    per_imp = shown.group_by("imp", "arm", "user_id").agg(
        pl.len().alias("shown"), pl.col("segment").first(), pl.col("received").first()
    )
    eng = attributed.with_columns(
        (pl.col("clicked") | pl.col("rating").is_not_null()).alias("engaged"),
    )
    imp_out = eng.group_by("imp").agg(
        pl.col("clicked").sum().alias("clicks"),
        (pl.col("engaged") & (pl.col("position") <= k)).any().alias("hit"),
        pl.col("rating").drop_nulls().sum().alias("rating_sum"),
        pl.col("rating").drop_nulls().len().alias("rated"),
    )
    joined = per_imp.join(imp_out, on="imp", how="left").with_columns(
        pl.col("clicks").fill_null(0),
        pl.col("hit").fill_null(False),
        pl.col("rating_sum").fill_null(0.0),
        pl.col("rated").fill_null(0),
    )
    return (
        joined.sort("received")
        .group_by("arm", "user_id")
        .agg(
            pl.col("segment").first().alias("segment"),
            pl.len().alias("impressions"),
            pl.col("shown").sum(),
            pl.col("clicks").sum(),
            pl.col("hit").sum().alias("hits"),
            pl.col("rating_sum").sum(),
            pl.col("rated").sum(),
        )
    )


# ---------------------------------------------------------------------------------- statistics
@dataclass(frozen=True)
class RatioEstimate:
    """A ratio of per-user sums with its delta-method standard error."""

    value: float
    se: float
    n_users: int
    numerator: float
    denominator: float

    def ci(self, level: float = 0.95) -> tuple[float, float]:
        if not math.isfinite(self.se):
            return (math.nan, math.nan)
        z = float(stats.norm.ppf(0.5 + level / 2))
        return (self.value - z * self.se, self.value + z * self.se)


def ratio_estimate(num: npt.ArrayLike, den: npt.ArrayLike) -> RatioEstimate:
    """sum(num) / sum(den) over users and its delta-method standard error:
    Var(R) ~ (s_y^2 - 2 R s_xy + R^2 s_x^2) / (n * mean(x)^2) with y = num, x = den per user."""
    y = np.asarray(num, dtype=np.float64)
    x = np.asarray(den, dtype=np.float64)
    n = len(x)
    sx, sy = float(x.sum()), float(y.sum())
    if n == 0 or sx <= 0:
        return RatioEstimate(math.nan, math.nan, n, sy, sx)
    r = sy / sx
    if n < 2:
        return RatioEstimate(r, math.nan, n, sy, sx)
    mx = sx / n
    cov = np.cov(np.vstack([y, x]), ddof=1)
    var = (cov[0, 0] - 2 * r * cov[0, 1] + r * r * cov[1, 1]) / (n * mx * mx)
    return RatioEstimate(r, math.sqrt(max(float(var), 0.0)), n, sy, sx)


def _diff_test(a: RatioEstimate, b: RatioEstimate, level: float) -> dict[str, Any]:
    """b - a, its CI and the two-sided z-test p-value of independent arms."""
    diff = b.value - a.value
    se = math.sqrt(a.se**2 + b.se**2) if math.isfinite(a.se) and math.isfinite(b.se) else math.nan
    if not math.isfinite(se) or se == 0:
        return {"diff": diff, "ci": [math.nan, math.nan], "relative": math.nan, "p_value": math.nan}
    z = float(stats.norm.ppf(0.5 + level / 2))
    p = float(2 * stats.norm.sf(abs(diff / se)))
    rel = diff / a.value if a.value else math.nan
    return {"diff": diff, "ci": [diff - z * se, diff + z * se], "relative": rel, "p_value": p}


# ---------------------------------------------------------------------------------- the report
def analyse(
    events: pl.DataFrame,
    experiment: ExperimentConfig,
    *,
    catalog_size: int | None = None,
    level: float = 0.95,
    alpha: float = 0.05,
    primary: str = "ctr",
) -> dict[str, Any]:
    """The report of ``experiment`` from the log's ``events`` (`recstack.events.EVENT_SCHEMA`):
    ``arms`` (per arm: counts, each ratio metric with its CI, coverage), ``tests`` (each arm against
    the control, per metric: difference, CI, relative lift, p-value), ``srm`` (users per arm against
    the shares), ``winner`` (the arm best on ``primary`` whose difference from every other arm is
    significant at ``alpha``, else None), ``by_position`` and ``timeline`` (for the plots)."""
    shown = shown_items(events, experiment.name)
    attributed = attribute(events, shown, experiment.window_s)
    users = per_user(shown, attributed, experiment.k)
    groups = [*experiment.arm_names, *([HOLDOUT_ARM] if experiment.holdout > 0 else [])]
    arms: dict[str, dict[str, Any]] = {}
    ests: dict[str, dict[str, RatioEstimate]] = {}
    for arm in groups:
        u = users.filter(pl.col("arm") == arm)
        s = shown.filter(pl.col("arm") == arm)
        ests[arm] = {m: ratio_estimate(u[nu].to_numpy(), u[de].to_numpy()) for m, nu, de in RATIO_METRICS}
        distinct = int(s["item_id"].n_unique()) if s.height else 0
        row: dict[str, Any] = {
            "users": u.height,
            "impressions": int(u["impressions"].sum()) if u.height else 0,
            "shown": int(u["shown"].sum()) if u.height else 0,
            "clicks": int(u["clicks"].sum()) if u.height else 0,
            "hits": int(u["hits"].sum()) if u.height else 0,
            "rated": int(u["rated"].sum()) if u.height else 0,
            "distinct_items": distinct,
            "coverage": (distinct / catalog_size) if catalog_size else None,
            "releases": sorted(r for r in s["release_id"].unique().to_list() if r is not None),
        }
        for m, est in ests[arm].items():
            lo, hi = est.ci(level)
            row[m] = {"value": est.value, "se": est.se, "ci": [lo, hi]}
        arms[arm] = row
    control = experiment.arm_names[0]
    tests: dict[str, dict[str, Any]] = {}
    for arm in groups:
        if arm == control:
            continue
        tests[arm] = {m: _diff_test(ests[control][m], ests[arm][m], level) for m, _, _ in RATIO_METRICS}
    return {
        "experiment": experiment.name,
        "status": experiment.status,
        "created_at": experiment.created_at,
        "stopped_at": experiment.stopped_at,
        "control": control,
        "k": experiment.k,
        "window_s": experiment.window_s,
        "level": level,
        "alpha": alpha,
        "primary": primary,
        "catalog_size": catalog_size,
        "shares": experiment.shares(),
        "arms": arms,
        "tests": tests,
        "pairwise": _pairwise(ests, experiment.arm_names, primary, level),
        "segments": _segments(users, groups, control, level),
        "winner": _winner(ests, experiment.arm_names, primary, alpha, level),
        "secondary": {
            m: w
            for m, _, _ in RATIO_METRICS
            if m != primary and (w := _winner(ests, experiment.arm_names, m, alpha, level)) is not None
        },
        "srm": _srm(arms, experiment.shares()),
        "by_position": _by_position(shown, attributed, groups),
        "timeline": _timeline(shown, attributed, groups),
        "events_read": events.height,
    }


def _segments(users: pl.DataFrame, arms: Sequence[str], control: str, level: float) -> dict[str, Any]:
    """Per user segment (``new``: no history at the user's first impression, else ``returning``):
    users and CTR per arm, and each arm's CTR test against the control (subgroups: exploratory)."""
    out: dict[str, Any] = {}
    for seg in sorted(users["segment"].drop_nulls().unique().to_list()):
        u = users.filter(pl.col("segment") == seg)
        ests = {
            a: ratio_estimate(*(u.filter(pl.col("arm") == a)[c].to_numpy() for c in ("clicks", "shown")))
            for a in arms
        }
        out[seg] = {
            "users": {a: ests[a].n_users for a in arms},
            "ctr": {a: ests[a].value for a in arms},
            "tests": {a: _diff_test(ests[control], ests[a], level) for a in arms if a != control},
        }
    return out


def _pairwise(
    ests: Mapping[str, Mapping[str, RatioEstimate]], arms: Sequence[str], metric: str, level: float
) -> list[dict[str, Any]]:
    out = []
    for i, a in enumerate(arms):
        for b in arms[i + 1 :]:
            out.append(
                {"a": a, "b": b, "metric": metric, **_diff_test(ests[a][metric], ests[b][metric], level)}
            )
    return out


def _winner(
    ests: Mapping[str, Mapping[str, RatioEstimate]],
    arms: Sequence[str],
    metric: str,
    alpha: float,
    level: float,
) -> dict[str, Any] | None:
    vals = {a: ests[a][metric].value for a in arms if math.isfinite(ests[a][metric].value)}
    if len(vals) < 2:
        return None
    best = max(vals, key=lambda a: vals[a])
    ps = [_diff_test(ests[o][metric], ests[best][metric], level)["p_value"] for o in vals if o != best]
    if all(math.isfinite(p) and p < alpha for p in ps):
        return {"arm": best, "metric": metric, "p_value": max(ps)}
    return None


def _srm(arms: Mapping[str, Mapping[str, Any]], shares: Mapping[str, float]) -> dict[str, Any]:
    names = [a for a in shares if a in arms]
    obs = np.array([arms[a]["users"] for a in names], dtype=np.float64)
    total = obs.sum()
    if total == 0 or len(names) < 2:
        return {"p_value": math.nan, "observed": {}, "expected": {}}
    w = np.array([shares[a] for a in names])
    exp = total * w / w.sum()
    p = float(stats.chisquare(obs, exp).pvalue)
    return {
        "p_value": p,
        "observed": {a: int(o) for a, o in zip(names, obs, strict=True)},
        "expected": {a: float(e) for a, e in zip(names, exp, strict=True)},
        "mismatch": p < 0.001,
    }


def _by_position(shown: pl.DataFrame, attributed: pl.DataFrame, arms: Sequence[str]) -> dict[str, Any]:
    """CTR per position per arm."""
    clicks = attributed.filter(pl.col("clicked")).group_by("arm", "position").agg(pl.len().alias("c"))
    per = (
        shown.group_by("arm", "position")
        .agg(pl.len().alias("n"))
        .join(clicks, on=["arm", "position"], how="left")
    )
    out: dict[str, Any] = {}
    for arm in arms:
        rows = per.filter(pl.col("arm") == arm).sort("position")
        out[arm] = {
            "position": rows["position"].to_list(),
            "ctr": [(c or 0) / n for c, n in zip(rows["c"].to_list(), rows["n"].to_list(), strict=True)],
        }
    return out


def _timeline(
    shown: pl.DataFrame, attributed: pl.DataFrame, arms: Sequence[str], points: int = 20
) -> dict[str, Any]:
    """Cumulative CTR per arm after each 1/points of the impressions (in server time order)."""
    if shown.height == 0:
        return {}
    clicks = attributed.filter(pl.col("clicked")).group_by("imp").agg(pl.len().alias("c"))
    imps = (
        shown.group_by("imp", "arm", "received")
        .agg(pl.len().alias("n"))
        .join(clicks, on="imp", how="left")
        .with_columns(pl.col("c").fill_null(0))
        .sort("received")
    )
    out: dict[str, Any] = {}
    for arm in arms:
        a = imps.filter(pl.col("arm") == arm)
        if a.height == 0:
            continue
        n = np.cumsum(a["n"].to_numpy())
        c = np.cumsum(a["c"].to_numpy())
        idx = np.unique(np.linspace(0, a.height - 1, min(points, a.height)).astype(int))
        out[arm] = {
            "impressions": (idx + 1).tolist(),
            "ctr": (c[idx] / np.maximum(n[idx], 1)).tolist(),
            "received": a["received"].to_numpy()[idx].tolist(),
        }
    return out
