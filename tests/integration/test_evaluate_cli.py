"""`recstack evaluate` end to end on the bundled MovieLens 100K."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from recstack.cli import app

runner = CliRunner()


@pytest.mark.slow
@pytest.mark.ml100k
def test_evaluate_stratified_pop_ease_writes_json_and_report(tmp_path: Path) -> None:
    js, html = tmp_path / "out.json", tmp_path / "report.html"
    res = runner.invoke(
        app,
        ["-q", "evaluate", "--dataset", "ml-100k", "--protocol", "stratified", "--models", "pop,ease",
         "--json", str(js), "--report", str(html)],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "NDCG@10" in res.output and "ease" in res.output
    out = json.loads(js.read_text())
    assert out["dataset"] == "ml-100k" and out["protocol"] == "stratified"
    pop, ease = out["results"]["pop"], out["results"]["ease"]
    # MostPopular on this split is far below EASE (~0.24 vs ~0.48 NDCG@10; Microsoft Recommenders'
    # peers on the same protocol: SAR 0.382, BPR 0.44)
    assert 0.15 < pop["ndcg@10"] < 0.35
    assert ease["ndcg@10"] > 0.45
    assert ease["precision@10"] > pop["precision@10"]
    for r in (pop, ease):
        assert 0 < r["map@10"] <= r["hr@10"] <= 1
        assert len(r["curves"]["ndcg"]) == 50
        assert r["fit_seconds"] >= 0 and isinstance(r["params"], dict)
    # TFRS-style top-100 accuracy of MostPopular (nothing removed) is ~0.30 on ML-100K
    assert 0.2 < pop["accuracy@100"] < 0.4
    text = html.read_text()
    assert text.count('src="data:image/png;base64,') == 2


def test_evaluate_rejects_bad_protocol_and_models() -> None:
    res = runner.invoke(app, ["evaluate", "--protocol", "bogus"])
    assert res.exit_code == 2
    assert "stratified" in res.output and "tfrs" in res.output
    res = runner.invoke(app, ["evaluate", "--models", "pop,nope"])
    assert res.exit_code == 2
    assert "nope" in res.output and "itemknn" in res.output


def test_evaluate_temporal_rolling_prints_windows_and_cis(tmp_path: Path) -> None:
    js, html = tmp_path / "out.json", tmp_path / "report.html"
    res = runner.invoke(
        app,
        ["-q", "evaluate", "--dataset", "ml-100k", "--protocol", "temporal-rolling", "--models",
         "pop,recent_pop", "--json", str(js), "--report", str(html)],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "per window" in res.output and "recent_pop - pop" in res.output and "CI low" in res.output
    out = json.loads(js.read_text())
    assert len(out["windows"]) == 5
    # five windows of 5,000 ratings: many more warm test users than the one cut of `temporal` (90)
    assert sum(w["warm_users"] for w in out["windows"]) > 200
    (warm,) = out["comparisons"]["warm"]
    low, high = warm["ci95"]
    # popular-right-now beats all-time popularity forward in time on ML-100K, CI above zero
    assert warm["diff"] > 0 and low > 0 and low <= warm["diff"] <= high
    assert "Paired bootstrap 95% CI" in html.read_text()


def test_evaluate_seeds_prints_mean_and_sd(tmp_path: Path) -> None:
    js = tmp_path / "out.json"
    res = runner.invoke(
        app,
        ["-q", "evaluate", "--dataset", "ml-latest-small", "--protocol", "stratified", "--models",
         "pop", "--seeds", "1,2", "--json", str(js)],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "mean ± sd over training seeds 1,2" in res.output and "± 0.0000" in res.output
    pop = json.loads(js.read_text())["results"]["pop"]
    # popularity has no training seed: the same figure twice, sd 0
    assert pop["seeds"]["seeds"] == [1, 2] and pop["seeds"]["sd"]["ndcg@10"] == 0.0
    assert pop["seeds"]["values"]["ndcg@10"] == [pop["ndcg@10"]] * 2
    bad = runner.invoke(app, ["evaluate", "--models", "pop", "--seeds", "a,b"])
    assert bad.exit_code == 2 and "comma-separated integer seeds" in bad.output
