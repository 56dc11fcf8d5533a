"""Data checks at build: each check on data made to fail it, a failing check stops `recstack build`
(or passes with --allow and the reason in the manifest), the one-user data set and the public
ml-latest-small copy with a rating of an unlisted movie (``999,999999,5.0,...``)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from recstack.data.checks import ChecksSpec, DataCheckError, check_report, parse_allow, run_checks, summary
from recstack.data.dataset import Dataset
from recstack.data.movielens import load_movielens
from recstack.errors import InvalidArgumentError
from recstack.release.build import BuildConfig, build
from recstack.release.manifest import Manifest

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "movielens"


def _dataset(rows: list[tuple[int, int, float, int]], name: str = "d", titles: bool = True) -> Dataset:
    inter = pl.DataFrame(rows, schema=["user_id", "item_id", "rating", "timestamp"], orient="row")
    items = sorted({r[1] for r in rows})
    frame = pl.DataFrame(
        {"item_id": items, "title": [f"Movie {i}" for i in items], "genres": [["Drama"] for _ in items]}
    )
    return Dataset.from_frames(name, inter, None, frame if titles else None)


def _good(n_users: int = 30, n_items: int = 20, t0: int = 1_000_000_000) -> list[tuple[int, int, float, int]]:
    pairs = [(u, i) for u in range(n_users) for i in range(n_items) if (u + i) % 3]
    times = np.random.default_rng(0).permutation(len(pairs))  # users and items spread over time
    return [(u, i, float(1 + (u + i) % 5), t0 + int(t)) for (u, i), t in zip(pairs, times, strict=True)]


def test_clean_data_passes_every_check() -> None:
    res = run_checks(_dataset(_good()), protocol="temporal")
    assert summary(res) == {
        "schema": "pass",
        "ranges": "pass",
        "duplicates": "pass",
        "unlisted_items": "pass",
        "split_sizes": "pass",
        "shift": "skipped",
    }
    assert check_report(res)["passed"] is True


def test_ranges_and_duplicates_fail() -> None:
    rows = _good()
    rows += [
        (1, 1, 11.0, 1_000_000_100),
        (2, 2, 3.0, -10),
        rows[0],
    ]  # rating 11, a negative timestamp, a copy
    res = {r["check"]: r for r in run_checks(_dataset(rows))}
    assert res["ranges"]["status"] == "fail"
    assert res["ranges"]["details"]["bad_ratings"] == 1 and res["ranges"]["details"]["bad_timestamps"] == 1
    assert res["duplicates"]["status"] == "fail" and res["duplicates"]["details"]["exact"] == 1


def test_one_user_cannot_make_a_release_without_a_word(tmp_path: Path) -> None:
    """Issue 17 item 6 and issue 22 scope 5: a one-user data set built a release with NDCG 1.0 and no
    warning; the split_sizes check now stops it (or --allow records why)."""
    ds = _dataset([(1, i, 4.0, 1_000_000_000 + i) for i in range(40)], name="one-user")
    ds.save(tmp_path / "one")
    cfg = BuildConfig.from_config(
        {
            "dataset": {"source": str(tmp_path / "one")},
            "split": {"protocol": "stratified"},
            "models": [{"name": "pop"}],
            "index": {"backend": "none"},
            "evaluation": {"report": False},
        }
    )
    with pytest.raises(DataCheckError, match=r"split_sizes.*train has 1 users") as err:
        build(cfg, tmp_path / "releases")
    assert "--allow split_sizes" in str(err.value)
    assert not (tmp_path / "releases").exists() or not [
        p for p in (tmp_path / "releases").iterdir() if not p.name.startswith(".")
    ]
    # allowed with a reason: the release exists and says why
    allowed = cfg.model_copy(update={"checks": ChecksSpec(allow={"split_sizes": "smoke test of one user"})})
    m = build(allowed, tmp_path / "releases")
    man = Manifest.read(tmp_path / "releases" / m.id)
    assert man.data_checks is not None and man.data_checks["allowed"] == {
        "split_sizes": "smoke test of one user"
    }
    assert {r["check"]: r["status"] for r in man.data_checks["results"]}["split_sizes"] == "allowed"


def test_rating_of_an_unlisted_movie_is_reported(tmp_path: Path) -> None:
    """The public ml-latest-small copy with ``999,999999,5.0,...``: movies.csv has no movie 999999."""
    src = tmp_path / "ml-latest-small"
    shutil.copytree(FIXTURES / "ml-latest-small", src)
    with (src / "ratings.csv").open("a") as fh:
        fh.write("999,999999,5.0,1537799250\n")
    ds = load_movielens(src)
    res = {r["check"]: r for r in run_checks(ds, ChecksSpec(min_users=1, min_items=1))}
    bad = res["unlisted_items"]
    assert bad["status"] == "fail" and bad["details"]["items"] == ["999999"] and bad["details"]["rows"] == 1
    assert "user 999, item 999999, rating 5" in bad["message"]
    with pytest.raises(DataCheckError, match="unlisted_items"):
        check_report(list(res.values()))


def test_shift_against_the_parent() -> None:
    parent = _dataset(_good(60, 40), name="d")
    same = _dataset(_good(60, 40), name="d")
    # the new data: only the 5 least popular items of the parent, by other users
    moved = _dataset(
        [(u, i, 4.0, 2_000_000_000 + u) for u in range(100, 160) for i in range(35, 40)], name="d"
    )
    assert summary(run_checks(same, parent=parent, parent_id="p"))["shift"] == "pass"
    res = {r["check"]: r for r in run_checks(moved, parent=parent, parent_id="p")}
    assert res["shift"]["status"] == "fail" and res["shift"]["details"]["psi"]["user_activity"] > 0.25
    other = _dataset(_good(), name="other-data")
    assert summary(run_checks(other, parent=parent, parent_id="p"))["shift"] == "skipped"


def test_allow_parsing() -> None:
    assert parse_allow(["shift=new catalogue", "ranges = old data "]) == {
        "shift": "new catalogue",
        "ranges": "old data",
    }
    for bad in (["shift"], ["shift="], ["nope=x"]):
        with pytest.raises(InvalidArgumentError):
            parse_allow(bad)
