"""Issue 18's server side of the web UI (no browser): the HTML 404 page beside JSON API errors, the
release's model labels and demographics, honest movie counts, "because you liked" explanations,
one error for an unknown ``model=`` and the ``--batch-sink`` serve option."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from recstack.serving._release import MemoryRelease
from recstack.serving.api.app import create_app
from recstack.serving.settings import ServingSettings

HTML = {"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"}


@pytest.fixture
def client(tiny_release: MemoryRelease) -> Iterator[TestClient]:
    with TestClient(create_app(ServingSettings(), release=tiny_release)) as c:
        yield c


def test_unknown_web_url_is_an_html_404_page_and_api_paths_stay_json(client: TestClient) -> None:
    r = client.get("/no/such/page", headers=HTML)
    assert r.status_code == 404 and r.headers["content-type"].startswith("text/html")
    assert "Page not found" in r.text and "/no/such/page" in r.text and 'href="/"' in r.text
    # the API keeps JSON errors, whatever the client accepts
    for path in ("/v1/nothing", "/v2/nothing", "/admin/nothing", "/static/nothing.js", "/static-docs/x"):
        r = client.get(path, headers=HTML)
        assert r.status_code == 404 and r.json()["error"]["code"] == "not_found", path
    # a client that does not ask for HTML gets the JSON error everywhere
    r = client.get("/no/such/page")
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"


def test_release_lists_model_labels_and_demographics(client: TestClient) -> None:
    body = client.get("/v1/release").json()
    labels = body["labels"]
    assert labels["itemknn"] == "Item-kNN" and labels["pop"] == "Popular"
    assert labels["recall"] == "Recall only (no ranker)"
    assert set(body["models"]) | set(body["retrievers"]) | set(body["sources"]) <= set(labels)
    # the tiny users table has ages, genders and occupations
    demo = body["demographics"]
    assert demo == {"age": True, "gender": ["F", "M"], "occupation": ["engineer", "student"]}
    assert body["source_kinds"]["itemknn"] == "history"


def test_demographics_are_empty_without_profile_columns() -> None:
    from recstack.serving.api.routers.admin import demographics

    assert demographics(pl.DataFrame({"user": [0, 1], "external_id": ["1", "2"]})) == {}
    assert demographics(pl.DataFrame({"user": [0], "age": [None], "gender": [None]})) == {}


def test_display_names_are_one_mapping() -> None:
    from recstack.models.registry import display_name, names

    assert display_name("two_stage:ncf") == "Two-stage (NCF ranker)"
    assert display_name("ncf") == "Two-stage (NCF ranker)"  # a served ranker variant
    assert display_name("time_ease") == "Time-aware EASE"
    assert display_name("als64", "als") == "ALS (als64)"
    assert display_name("ease", "ease") == "EASE"
    assert display_name("mystery") == "mystery"
    # every model the CLI accepts has a name of its own (no raw "a_b" or "a:b" names)
    for n in names():
        label = display_name(n)
        assert label != n and "_" not in label and ":" not in label, (n, label)


def test_item_counts_say_what_they_count(client: TestClient, tiny_release: MemoryRelease) -> None:
    inter = tiny_release.dataset.interactions
    body = client.get("/v1/items/100").json()
    rows = inter.filter(pl.col("item") == tiny_release.dataset.item_vocab.get(100))
    assert body["rating_count"] == rows.height
    assert body["rater_count"] == body["viewer_count"] == rows["user"].n_unique()


def test_explain_names_the_history_item_behind_an_item_item_recommendation(client: TestClient) -> None:
    body = client.post(
        "/v1/recommendations", json={"liked_items": [100, 101], "k": 5, "explain": True}
    ).json()
    liked = {"100": "Movie 0", "101": "Movie 1"}
    becauses = [it["explain"]["because"] for it in body["items"] if "itemknn" in it["sources"]]
    assert becauses and all(b is not None for b in becauses)
    for b in becauses:
        assert str(b["item_id"]) in liked and b["title"] == liked[str(b["item_id"])]
        assert b["source"] == "itemknn"
    # popularity alone cannot say which history item: no "because"
    for it in body["items"]:
        if "itemknn" not in it["sources"]:
            assert it["explain"]["because"] is None


@pytest.mark.parametrize("dense_max", [3000, 5])  # dense, and sparse as on a large catalogue
def test_because_is_the_largest_contribution(
    tiny_release: MemoryRelease, monkeypatch: pytest.MonkeyPatch, dense_max: int
) -> None:
    from recstack.serving import _kernels
    from recstack.serving._kernels import history_scorer

    monkeypatch.setattr(_kernels, "DENSE_MAX_ITEMS", dense_max)
    retr = tiny_release.retriever("itemknn")
    assert _kernels.item_item_kernel(retr, 12)[0] == ("dense" if dense_max > 12 else "sparse")
    scorer, _ = history_scorer(retr, 12)
    hist = np.array([0, 1, 5], dtype=np.int64)
    cands = np.array([2, 3, 7], dtype=np.int64)
    contrib = scorer.contributions(hist, cands)
    assert contrib is not None and contrib.shape == (3, 3)
    # the contributions add up to the history's score of each candidate
    np.testing.assert_allclose(contrib.sum(axis=0), scorer(hist)[cands], rtol=1e-5, atol=1e-6)


def test_unknown_model_is_422_with_the_valid_names(client: TestClient) -> None:
    r = client.get("/v1/users/1/recommendations", params={"model": "bogus"})
    assert r.status_code == 422 and "bogus" in r.json()["error"]["message"]
    assert "recall" in r.json()["error"]["message"]
    r = client.get("/v1/items/100/similar", params={"model": "bogus"})
    assert r.status_code == 422 and "itemknn" in r.json()["error"]["message"]


def test_batch_sink_option(tiny_release: MemoryRelease, tmp_path: Path) -> None:
    from recstack.cli import app as cli

    help_text = CliRunner().invoke(cli, ["serve", "--help"], env={"COLUMNS": "200"}).output
    assert "--batch-sink" in help_text and "source=batch" in help_text
    sink = f"sqlite:///{tmp_path / 'mine.db'}"
    with TestClient(create_app(ServingSettings(batch_sink=sink), release=tiny_release)) as c:
        for r in (
            c.get("/v1/pairs", params={"a": "100", "b": "101"}),
            c.get("/v1/users/1/recommendations", params={"source": "batch"}),
        ):
            msg = r.json()["error"]["message"]
            assert r.status_code == 404 and str(tmp_path / "mine.db") in msg
            assert "recstack serve --batch-sink" in msg


def test_batch_sink_reaches_worker_processes() -> None:
    from recstack.serving._serve import settings_env

    env = settings_env(ServingSettings(batch_sink="sqlite:///x.db"))
    assert env["RECSTACK_SERVE_BATCH_SINK"] == "sqlite:///x.db"
