"""The cold-users protocol (`recstack.evaluation.cold_users`) on data where a profile does, or does
not, predict taste (`tests/cold_users_data.py`)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from cold_users_data import make_taste_dataset
from recstack.errors import InvalidArgumentError
from recstack.evaluation import run_protocol
from recstack.evaluation.cold_users import (
    _given_and_truth,
    _per_user,
    choose_profile_model,
    cold_user_split,
    run_cold_users,
)


def test_split_holds_users_out_entirely() -> None:
    ds = make_taste_dataset()
    train, held = cold_user_split(ds, share=0.1, seed=3)
    assert len(held) == 20
    assert not set(held.tolist()) & set(train.interactions["user"].to_list())
    assert train.n_interactions + 10 * len(held) == ds.n_interactions
    with pytest.raises(InvalidArgumentError, match="share"):
        cold_user_split(ds, share=1.5)


def test_given_items_are_the_first_liked_in_time() -> None:
    ds = make_taste_dataset()
    _, held = cold_user_split(ds, seed=3)
    u = int(held[0])
    rows = ds.interactions.filter(pl.col("user") == u).sort("timestamp")
    first_liked = rows.filter(pl.col("rating") >= 4)["item"].to_list()[:3]
    given, truth = _given_and_truth(_per_user(ds, held[:1]), held[:1], 3, ds.n_items)
    assert given[0].tolist() == first_liked
    # the rest of the user's items (7 of 10) is the test set, the given ones are not in it
    assert truth.nnz == 7 and not set(truth.indices.tolist()) & set(first_liked)


def test_profile_verdict_follows_the_data() -> None:
    personal = choose_profile_model(make_taste_dataset(gender_matters=True))
    assert personal["personal"] and personal["model"] == "segment"
    v = personal["validation"]
    assert v["segment"] > v["popular"] and v["ci95"][0] > 0
    assert "gender" in personal["params"]["features"] or "age_gender" in personal["params"]["features"]
    # the same catalogue with taste independent of gender: the profile must not be called personal
    noise = choose_profile_model(make_taste_dataset(gender_matters=False))
    assert not noise["personal"] and noise["model"] == "popular" and "does not beat" in noise["reason"]


def test_no_demographics_no_profile_model() -> None:
    ds = make_taste_dataset()
    bare = ds.__class__.from_frames(
        "bare",
        ds.interactions.select(
            pl.col("user").alias("user_id"), pl.col("item").alias("item_id"), "rating", "timestamp"
        ),
        None,
        None,
    )
    res = choose_profile_model(bare)
    assert not res["personal"] and "no demographics" in res["reason"]


def test_run_cold_users_measures_the_serving_pipeline() -> None:
    ds = make_taste_dataset()
    res = run_cold_users(ds, ["itemknn"], seed=5)
    assert res["n_test_users"] == 20 and res["demographics"]
    prof = res["conditions"]["profile"]["models"]
    # the served pipeline follows the verdict (segment popularity when personal; its genre cap
    # reorders a little)
    assert res["verdict"]["profile_personal"]
    assert prof["segment"]["ndcg@10"] > prof["popular"]["ndcg@10"] + 0.1
    assert prof["served"]["ndcg@10"] > prof["popular"]["ndcg@10"] + 0.1
    for n in (1, 3, 5):
        block = res["conditions"][f"liked_{n}"]
        assert set(block["models"]) == {"popular", "itemknn"}
        c = next(c for c in block["comparisons"] if c["b"] == "itemknn" and c["metric"] == "ndcg@10")
        assert c["ci95"][0] <= c["diff"] <= c["ci95"][1]
        # from a few liked items, item-kNN (same-taste co-occurrence) beats popular clearly
        assert c["ci95"][0] > 0
    assert res["validation"]["chosen_pipeline"] == "itemknn"


def test_registered_as_a_protocol() -> None:
    res = run_protocol(make_taste_dataset(), "cold-users", ["itemknn"], seed=5)
    assert res["protocol"] == "cold-users"
    assert np.isfinite(res["results"]["itemknn"]["liked_3:ndcg@10"])
    assert "profile:ndcg@10" in res["results"]["segment"]


def test_cli_evaluate_cold_users(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from recstack.cli import app

    make_taste_dataset().save(tmp_path / "taste")
    out = tmp_path / "cu.json"
    args = ["evaluate", "-p", "cold-users", "-m", "itemknn", "--dataset", str(tmp_path / "taste")]
    res = CliRunner().invoke(app, [*args, "--json", str(out)])
    assert res.exit_code == 0, res.output
    assert "profile: personal" in res.output and "liked_5:" in res.output
    body = json.loads(out.read_text())
    assert body["protocol"] == "cold-users" and body["verdict"]["liked_pipeline"] == "itemknn"


def test_pipeline_variants() -> None:
    from recstack.evaluation.cold_users import _variants

    v = _variants(["itemknn", "ease", "content"], (1.0, 2.0))
    assert v["itemknn"] == (("itemknn",), 1.0) and v["all"] == (("itemknn", "ease", "content"), 1.0)
    # the collaborative sources together (the kind the served default merges)
    assert v["collaborative"] == (("itemknn", "ease"), 1.0)
    assert v["collaborative+popular x2"] == (("itemknn", "ease"), 2.0) and len(v) == 10
