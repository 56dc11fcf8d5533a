"""Assignment (shares, stickiness, holdout, independent salts), attribution worked out by hand,
the delta-method statistics (against a direct computation, and calibrated under the null), TOML
round trips and the store's rules."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest

from recstack.errors import ConfigError, ConflictError, NotFoundError
from recstack.events import EVENT_SCHEMA
from recstack.experiments import (
    HOLDOUT_ARM,
    Assigner,
    ExperimentConfig,
    ExperimentStore,
    analyse,
    attribute,
    ratio_estimate,
    shown_items,
)
from recstack.experiments.analysis import per_user


def _cfg(**kw: Any) -> ExperimentConfig:
    data: dict[str, Any] = {"name": "e1", "arms": [{"name": "a"}, {"name": "b"}], **kw}
    return ExperimentConfig.from_config(data)


# ------------------------------------------------------------------------------------ assignment
def test_shares_within_one_percent_and_sticky() -> None:
    cfg = _cfg(arms=[{"name": "a", "share": 1}, {"name": "b", "share": 3}], holdout=0.2, salt="x")
    assign = Assigner(cfg)
    ids = [str(i) for i in range(20_000)]
    counts = assign.counts(ids)
    # shares: holdout 0.2, a 0.8 * 1/4 = 0.2, b 0.6
    assert cfg.shares() == pytest.approx({HOLDOUT_ARM: 0.2, "a": 0.2, "b": 0.6})
    for arm, share in cfg.shares().items():
        assert abs(counts[arm] / len(ids) - share) < 0.01
    assert [assign(u) for u in ids[:500]] == [Assigner(cfg)(u) for u in ids[:500]]  # a new process
    assert assign(42) == assign("42")  # ints and their decimal strings are one user


def test_salts_draw_independently() -> None:
    ids = [str(i) for i in range(10_000)]
    a1 = [Assigner(_cfg(salt="one"))(u) for u in ids]
    a2 = [Assigner(_cfg(salt="two"))(u) for u in ids]
    same = np.mean([x == y for x, y in zip(a1, a2, strict=True)])
    assert abs(same - 0.5) < 0.02  # independent halves agree half the time


# -------------------------------------------------------------------------------------- config
def test_toml_round_trip_and_pipeline_files(tmp_path: Path) -> None:
    (tmp_path / "pop.toml").write_text('[pipeline]\nsources = [{ name = "popular", kind = "popular" }]\n')
    (tmp_path / "exp.toml").write_text(
        '[experiment]\nname = "t"\nholdout = 0.1\n'
        '[[experiment.arms]]\nname = "pop"\nmodel = "recall"\npipeline = "pop.toml"\n'
        '[[experiment.arms]]\nname = "default"\n'
    )
    cfg = ExperimentConfig.from_toml(tmp_path / "exp.toml")
    assert cfg.arms[0].pipeline == {"sources": [{"name": "popular", "kind": "popular"}]}  # inlined
    store = ExperimentStore(tmp_path / "store")
    stored = store.create(cfg)
    assert stored.status == "running" and stored.created_at
    assert store.get("t") == stored
    with pytest.raises(ConflictError, match="stop it first"):
        store.create(_cfg(name="other"))
    with pytest.raises(ConflictError, match="exists"):
        store.create(cfg)
    assert store.stop("t").status == "stopped" and store.running() is None
    store.create(_cfg(name="other"))
    assert [e.name for e in store.list()] == ["t", "other"]
    with pytest.raises(NotFoundError, match="experiments: t, other"):
        store.get("missing")
    with pytest.raises(ConfigError):
        store.get("../etc")


@pytest.mark.parametrize(
    "bad",
    [
        {"name": "x", "arms": []},
        {"name": "x", "arms": [{"name": "a"}, {"name": "a"}]},
        {"name": "x", "arms": [{"name": "a", "share": 0}]},
        {"name": "x y", "arms": [{"name": "a"}]},
        {"name": "x", "arms": [{"name": "a"}], "holdout": 1.0},
    ],
)
def test_bad_experiments_are_refused(bad: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        ExperimentConfig.from_config(bad)


# ---------------------------------------------------------------------------------- attribution
def _events(rows: list[dict[str, Any]]) -> pl.DataFrame:
    cols: dict[str, list[Any]] = {k: [] for k in EVENT_SCHEMA}
    for off, r in enumerate(rows, start=1):
        full = {
            "offset": off,
            "item_id": None,
            "rating": None,
            "ts": int(r["received"]),
            "release_id": "r1",
            "request_id": None,
            "payload": None,
            **r,
        }
        if full["payload"] is not None:
            full["payload"] = json.dumps(full["payload"])
        for k in EVENT_SCHEMA:
            cols[k].append(full[k])
    return pl.DataFrame(cols, schema=EVENT_SCHEMA)


def _imp(user: str, items: list[str], t: float, arm: str, exp: str = "e1") -> dict[str, Any]:
    payload = {
        "experiment": exp,
        "arm": arm,
        "items": items,
        "positions": list(range(1, len(items) + 1)),
        "model": "m",
        "k": len(items),
    }
    return {"type": "impression", "user_id": user, "received": t, "payload": payload}


def _ev(kind: str, user: str, item: str, t: float, rating: float | None = None) -> dict[str, Any]:
    return {"type": kind, "user_id": user, "item_id": item, "received": t, "rating": rating}


def test_attribution_by_hand() -> None:
    ev = _events(
        [
            _imp("u1", ["i1", "i2", "i3"], 100.0, "a"),  # offset 1
            _imp("u1", ["i3", "i4"], 200.0, "a"),  # offset 2: shows i3 again
            _ev("click", "u1", "i3", 250.0),  # -> the latest showing of i3: offset 2, position 1
            _ev("click", "u1", "i3", 251.0),  # a second click on the same showing: counted once
            _ev("rating", "u1", "i3", 260.0, 4.0),
            _ev("rating", "u1", "i3", 261.0, 5.0),  # the last rating counts
            _ev("click", "u1", "i1", 2000.0),  # 1900 s after its showing: outside a 600 s window
            _ev("click", "u1", "i9", 120.0),  # never shown: organic
            _ev("click", "u2", "i2", 120.0),  # another user: organic
            _imp("u3", ["i1"], 100.0, "b", exp="other"),  # another experiment
            _ev("click", "u3", "i1", 110.0),
        ]
    )
    shown = shown_items(ev, "e1")
    assert shown.height == 5 and shown["user_id"].unique().to_list() == ["u1"]
    att = attribute(ev, shown, window_s=600)
    assert att.select("imp", "item_id", "position", "clicked", "rating").rows() == [(2, "i3", 1, True, 5.0)]
    users = per_user(shown, att, k=1)
    row = users.row(0, named=True)
    assert (row["impressions"], row["shown"], row["clicks"], row["hits"], row["rated"]) == (2, 5, 1, 1, 1)
    rep = analyse(ev, _cfg(window_s=600), catalog_size=10)
    assert rep["arms"]["a"]["ctr"]["value"] == pytest.approx(1 / 5)
    assert rep["arms"]["a"]["hit_rate"]["value"] == pytest.approx(1 / 2)
    assert rep["arms"]["a"]["mean_rating"]["value"] == pytest.approx(5.0)
    assert rep["arms"]["a"]["coverage"] == pytest.approx(4 / 10)
    assert rep["arms"]["b"]["users"] == 0 and math.isnan(rep["arms"]["b"]["ctr"]["value"])


# ---------------------------------------------------------------------------------- statistics
def test_delta_method_matches_the_formula() -> None:
    rng = np.random.default_rng(0)
    x = rng.integers(1, 20, size=500).astype(float)
    y = rng.binomial(x.astype(int), 0.1).astype(float)
    est = ratio_estimate(y, x)
    r = y.sum() / x.sum()
    # Var(R) = Var(mean(y) - R mean(x)) / mean(x)^2 = Var(y - R x) / (n mean(x)^2)
    var = np.var(y - r * x, ddof=1) / (len(x) * x.mean() ** 2)
    assert est.value == pytest.approx(r) and est.se == pytest.approx(math.sqrt(var), rel=1e-9)
    lo, hi = est.ci()
    assert lo < r < hi and hi - lo == pytest.approx(2 * 1.959964 * est.se, rel=1e-5)


def test_the_test_is_calibrated_under_the_null_and_has_power() -> None:
    """A/A: two arms of users drawn from one heavy-tailed population (per-user click rates vary, so
    a binomial test over impressions would be over-confident); p < 0.05 in about 5% of 400 runs."""
    rng = np.random.default_rng(7)

    def arm(n: int, lift: float) -> pl.DataFrame:
        imps = rng.geometric(0.2, size=n)
        shown = imps * 10
        rate = np.clip(rng.beta(0.5, 8, size=n) * lift, 0, 1)
        clicks = rng.binomial(shown, rate)
        return pl.DataFrame({"shown": shown, "clicks": clicks})

    def p_value(a: pl.DataFrame, b: pl.DataFrame) -> float:
        ea, eb = ratio_estimate(a["clicks"], a["shown"]), ratio_estimate(b["clicks"], b["shown"])
        z = (eb.value - ea.value) / math.hypot(ea.se, eb.se)
        return float(2 * (1 - 0.5 * (1 + math.erf(abs(z) / math.sqrt(2)))))

    null = [p_value(arm(300, 1.0), arm(300, 1.0)) for _ in range(400)]
    fp = np.mean(np.array(null) < 0.05)
    assert 0.025 <= fp <= 0.08, fp
    power = np.mean([p_value(arm(300, 1.0), arm(300, 1.6)) < 0.05 for _ in range(100)])
    assert power > 0.5, power
