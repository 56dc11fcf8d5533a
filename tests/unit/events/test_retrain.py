"""`retrain`: first release, nothing new, a candidate that learns a new item (promoted), a candidate
spoiled by junk events (refused, production stays), too little evidence; the holdout metric worked
out by hand; the CLI and ``recstack events``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from typer.testing import CliRunner

from recstack.cli import app
from recstack.data.checks import ChecksSpec
from recstack.data.dataset import Dataset
from recstack.errors import InvalidArgumentError
from recstack.events import NewEvent, open_log
from recstack.models.registry import create
from recstack.release import BuildConfig, Registry
from recstack.release.retrain import RetrainConfig, evaluate_on_holdout, parse_interval, retrain

DAY = 86_400
T0 = 1_700_000_000


def _cfg(data_dir: Path, log_url: str, **kw: Any) -> RetrainConfig:
    build = BuildConfig.from_config(
        {
            "dataset": {"source": str(data_dir)},
            "evaluation": {"report": False, "max_k": 10},
            "features": {"enabled": False},
            "models": [{"name": "pop"}],
            # the test's events pile onto a few items on purpose: a shift the data checks would stop
            "checks": {"allow": {"shift": "the test's events concentrate on a few items"}},
        }
    )
    return RetrainConfig(build=build, event_log=log_url, **{"min_holdout_users": 3, **kw})


@pytest.fixture
def log_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'events.db'}"


def _views(users: range, item: str, ts: int) -> list[NewEvent]:
    return [NewEvent("view", str(u), item, ts + u) for u in users]


def test_evaluate_on_holdout_by_hand() -> None:
    # items a, b, c with popularity a 3, b 2, c 1: pop ranks a, b, c
    df = pl.DataFrame(
        {"user_id": [1, 2, 3, 1, 2, 1], "item_id": ["a", "a", "a", "b", "b", "c"], "timestamp": range(6)}
    )
    ds = Dataset.from_frames("t", df)
    model = create("pop").fit(ds)
    # user x: context {a} -> ranking b, c; truth {c}: hit at rank 2 -> NDCG = (1/log2 3) / 1
    # user y: context {z} (unknown to the model) -> popularity a, b, c; truth {a, q}: a at rank 1,
    #   q unknown -> NDCG = 1 / (1 + 1/log2 3), recall 1/2
    s = evaluate_on_holdout(model, ds, {"x": ["a"], "y": ["z"]}, {"x": {"c"}, "y": {"a", "q"}}, k=3)
    ndcg_x = 1 / 1.5849625007211562
    ndcg_y = 1 / (1 + 1 / 1.5849625007211562)
    assert s["ndcg"] == pytest.approx((ndcg_x + ndcg_y) / 2)
    assert s["recall"] == pytest.approx((1 + 0.5) / 2) and s["hr"] == 1.0 and s["users"] == 2


def test_parse_interval() -> None:
    assert [parse_interval(x) for x in ("90s", "30m", "6h", "1d", "15")] == [90, 1800, 21600, 86400, 15]
    with pytest.raises(InvalidArgumentError):
        parse_interval("soon")


def test_retrain_loop(tiny_dataset_dir: Path, tmp_path: Path, log_url: str) -> None:
    root = tmp_path / "releases"
    cfg = _cfg(tiny_dataset_dir, log_url)
    log = open_log(log_url)
    assert log is not None
    # 1. no production release: the first one is built from base + log and promoted
    first = retrain(cfg, root)
    assert first.action == "promoted" and first.production is None
    reg = Registry(root)
    assert reg.channel("production").current == first.candidate
    # 2. nothing new
    again = retrain(cfg, root)
    assert again.action == "skipped" and "0 new events" in again.reason
    # 3. a new item "new-hit" becomes the most popular: production (trained before) cannot know it
    log.append(_views(range(0, 20), "900", T0))  # 20 users view item 900 (earlier)
    log.append(_views(range(20, 30), "900", T0 + 8 * DAY))  # the last 7 days: 10 more users
    res = retrain(cfg, root)
    assert res.action == "promoted", res.reason
    assert res.holdout["users"] == 10
    assert res.scores["candidate_ndcg@10"] > res.scores["production_ndcg@10"]
    assert reg.channel("production").current == res.candidate != first.candidate
    m = reg.show(res.candidate or "")
    assert m.events is not None and m.events.last_offset == log.last_offset()
    assert "retrain: pop ndcg@10" in reg.channel("production").history[-1]["gate"]
    # 4. junk: bots make item 901 the most popular; the holdout users want what they wanted before
    prod = res.candidate
    log.append([NewEvent("view", f"bot{b}", "901", T0 + 9 * DAY + b) for b in range(60)])
    # the holdout: real users view the base data's most popular items, not 901
    ds = Dataset.load(tiny_dataset_dir)
    pop = ds.item_popularity().argsort()[::-1]
    best = [str(ds.item_vocab.ids[int(i)]) for i in pop[:3]]
    holdout = [
        NewEvent("view", str(u), best[j], T0 + 16 * DAY + u)
        for u in range(30)
        for j in range(3)
        if best[j] not in _seen(ds, u)
    ]
    log.append(holdout)
    bad = retrain(cfg.model_copy(update={"holdout_days": 3.0}), root)
    assert bad.action == "refused", bad.reason
    assert (
        "production stays" in bad.reason
        and bad.scores["candidate_ndcg@10"] < bad.scores["production_ndcg@10"]
    )
    assert reg.channel("production").current == prod
    # 5. too little evidence
    log.append([NewEvent("view", "1", "3", T0 + 30 * DAY)])
    few = retrain(cfg, root)
    assert few.action == "refused" and "too little evidence" in few.reason
    lines = (root / "retrain.jsonl").read_text().splitlines()
    assert [json.loads(x)["action"] for x in lines] == [
        "promoted",
        "skipped",
        "promoted",
        "refused",
        "refused",
    ]


def test_retrain_is_refused_by_the_data_checks(tiny_dataset_dir: Path, tmp_path: Path, log_url: str) -> None:
    """Without the test's allowance the shift check of the build stops the candidate: production
    stays, and the reason names the check."""
    root = tmp_path / "releases"
    allowed = _cfg(tiny_dataset_dir, log_url)
    strict = allowed.model_copy(update={"build": allowed.build.model_copy(update={"checks": ChecksSpec()})})
    log = open_log(log_url)
    assert log is not None
    first = retrain(strict, root)
    assert first.action == "promoted"
    log.append(_views(range(0, 20), "900", T0))
    log.append(_views(range(20, 30), "900", T0 + 8 * DAY))
    res = retrain(strict, root)
    assert res.action == "refused" and res.reason.startswith("data checks: ") and "shift" in res.reason
    assert "production stays" in res.reason
    assert Registry(root).channel("production").current == first.candidate


def _seen(ds: Dataset, user: int) -> set[str]:
    u = ds.user_vocab.index(user)
    items = ds.interactions.filter(pl.col("user") == u)["item"].to_list()
    return {str(ds.item_vocab.ids[i]) for i in items}


def test_cli_retrain_and_events(tiny_dataset_dir: Path, tmp_path: Path) -> None:
    root = tmp_path / "releases"
    url = f"sqlite:///{tmp_path / 'ev.db'}"
    cfg = tmp_path / "build.toml"
    cfg.write_text(
        f'[dataset]\nsource = "{tiny_dataset_dir}"\n[evaluation]\nreport = false\nmax_k = 10\n'
        '[features]\nenabled = false\n[[models]]\nname = "pop"\n'
    )
    log = open_log(url)
    assert log is not None
    log.append([*_views(range(5), "3", T0), NewEvent("impression", "1", None, T0, payload={"arm": "A"})])
    runner = CliRunner()
    args = ["--releases-dir", str(root), "--event-log", url]
    r = runner.invoke(app, ["retrain", "--config", str(cfg), *args, "--json", str(tmp_path / "r.json")])
    assert r.exit_code == 0, r.output
    assert "promoted" in r.output and json.loads((tmp_path / "r.json").read_text())["action"] == "promoted"
    r = runner.invoke(app, ["events", "info", *args])
    assert r.exit_code == 0 and "offsets 1..6" in r.output and "impression  1" in r.output
    r = runner.invoke(app, ["events", "export", *args, "--out", str(tmp_path / "all.parquet")])
    assert r.exit_code == 0 and pl.read_parquet(tmp_path / "all.parquet").height == 6
    r = runner.invoke(app, ["events", "compact", *args, "--upto", "4", "--archive", str(tmp_path / "arch")])
    assert r.exit_code == 0, r.output
    assert log.count() == 2 and len(list((tmp_path / "arch").glob("*.parquet"))) == 1
