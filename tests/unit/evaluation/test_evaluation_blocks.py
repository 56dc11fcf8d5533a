"""Evaluation in user blocks: threads give the figures of the inline loop, and a sampled-users run
reports a 95% interval that holds the full-population mean."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from recstack.data.dataset import Dataset
from recstack.data.splits import split
from recstack.errors import InvalidArgumentError
from recstack.evaluation._blocks import ThreadScorer
from recstack.evaluation.protocols import evaluate_retriever
from recstack.models.retrieval.itemknn import ItemKNN


@pytest.fixture(scope="module")
def fitted() -> tuple[ItemKNN, Dataset, Dataset]:
    rng = np.random.default_rng(7)
    n_users, n_items, n = 600, 120, 9000
    taste = rng.integers(0, 4, n_users)
    items = (taste[rng.integers(0, n_users, n)] * 30 + rng.integers(0, 30, n)) % n_items
    frame = pl.DataFrame(
        {"user_id": rng.integers(0, n_users, n), "item_id": items, "timestamp": rng.integers(0, 10_000, n)}
    ).unique(["user_id", "item_id"], keep="first", maintain_order=True)
    s = split(Dataset.from_frames("blocks", frame), "stratified", seed=1)
    return ItemKNN(neighbours=20).fit(s.train), s.train, s.test


def test_threads_and_block_sizes_give_the_same_figures(fitted: tuple[ItemKNN, Dataset, Dataset]) -> None:
    model, train, test = fitted
    inline = evaluate_retriever(model, train, test, range(1, 21), batch_size=1024)
    assert inline["n_users"] > 500
    threaded = evaluate_retriever(model, train, test, range(1, 21), batch_size=37, scorer=ThreadScorer(3))
    assert threaded.keys() == inline.keys()
    for key, value in inline.items():
        if isinstance(value, float):  # accuracy: the same hits, summed in another order
            assert threaded[key] == pytest.approx(value, rel=1e-12), key
        else:
            assert threaded[key] == value, key


def test_sampled_users_report_an_interval(fitted: tuple[ItemKNN, Dataset, Dataset]) -> None:
    model, train, test = fitted
    full = evaluate_retriever(model, train, test, [10])
    res = evaluate_retriever(model, train, test, [10], sample_users=200, sample_seed=3)
    assert res["n_users"] == 200 and res["sample"]["of"] == full["n_users"]
    lo, hi = res["sample"]["ci95"]["ndcg@10"]
    assert lo < res["ndcg@10"] < hi
    assert lo <= full["ndcg@10"] <= hi  # seed 3: the interval holds the population mean
    # the finite-population correction: sampling everyone leaves no uncertainty
    everyone = evaluate_retriever(model, train, test, [10], sample_users=full["n_users"])
    lo, hi = everyone["sample"]["ci95"]["ndcg@10"]
    assert lo == pytest.approx(hi) == pytest.approx(full["ndcg@10"])
    # the same seed draws the same users
    again = evaluate_retriever(model, train, test, [10], sample_users=200, sample_seed=3)
    assert again["ndcg@10"] == res["ndcg@10"]
    with pytest.raises(InvalidArgumentError, match="sample_users"):
        evaluate_retriever(model, train, test, [10], sample_users=0)


def test_interval_covers_the_population_mean_at_about_95_percent(
    fitted: tuple[ItemKNN, Dataset, Dataset],
) -> None:
    model, train, test = fitted
    truth = evaluate_retriever(model, train, test, [10])["ndcg@10"]
    covered = 0
    for seed in range(40):
        lo, hi = evaluate_retriever(model, train, test, [10], sample_users=100, sample_seed=seed)["sample"][
            "ci95"
        ]["ndcg@10"]
        covered += lo <= truth <= hi
    assert 33 <= covered <= 40  # binomial(40, 0.95): below 34 with probability ~1%


def test_run_protocol_passes_the_sample_to_the_test_figures(fitted: tuple[ItemKNN, Dataset, Dataset]) -> None:
    from recstack.evaluation.protocols import run_protocol

    _, train, test = fitted
    data = Dataset.from_frames(
        "blocks",
        pl.concat([train.interactions, test.interactions]).select(
            pl.col("user").alias("user_id"), pl.col("item").alias("item_id"), "timestamp"
        ),
    )
    res = run_protocol(data, "stratified", ["pop"], sample_users=50)["results"]["pop"]
    assert res["n_users"] == 50 and res["sample"]["of"] > 50
