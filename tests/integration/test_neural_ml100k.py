"""Neural models on the bundled MovieLens 100K: two-tower beats MostPopular on ``tfrs``; a small
two-stage model works end to end (recall, rank, ONNX == PyTorch on real feature rows, save/load); the
``ctr`` protocol's logistic regression is far above chance."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import scipy.sparse as sp

from recstack.data.dataset import Dataset
from recstack.data.movielens import load_movielens
from recstack.data.splits import split
from recstack.evaluation.protocols import evaluate_retriever
from recstack.models.ranking.ctr import run_ctr
from recstack.models.ranking.two_stage import TwoStage
from recstack.models.registry import create

pytestmark = [pytest.mark.slow, pytest.mark.ml100k]


@pytest.fixture(scope="module")
def ml100k() -> Dataset:
    return load_movielens("ml-100k")


def test_two_tower_beats_most_popular_on_tfrs(ml100k: Dataset) -> None:
    sp_ = split(ml100k, "tfrs", seed=42)
    pop = evaluate_retriever(create("pop").fit(sp_.train), sp_.train, sp_.test, [10], False)
    tt = evaluate_retriever(create("two_tower").fit(sp_.train), sp_.train, sp_.test, [10], False)
    # BENCHMARKS.md: MostPopular measures 0.297 here; the bar is 0.35
    assert pop["accuracy@100"] == pytest.approx(0.297, abs=0.01)
    assert tt["accuracy@100"] >= 0.35


def test_small_two_stage_end_to_end(ml100k: Dataset, tmp_path: Path) -> None:
    sp_ = split(ml100k, "stratified", seed=42)
    model = create(
        "two_stage:dnn",
        sources=["ease", "pop"],
        holdout="random",
        holdout_folds=1,
        ranker_grid=[{"id_features": False}],
        ranker_params={"epochs": 3},
    )
    assert isinstance(model, TwoStage)
    model.fit(sp_.train)
    fr = model.fit_result
    assert 0.3 < fr["holdout_recall@candidates"] <= 1.0
    res = evaluate_retriever(model, sp_.train, sp_.test, [10], True)
    pop = evaluate_retriever(create("pop").fit(sp_.train), sp_.train, sp_.test, [10], True)
    assert res["ndcg@10"] > pop["ndcg@10"] + 0.1  # MostPopular ~0.3, EASE-based recall + ranker ~0.45+
    # the ranker's ONNX export scores real feature rows like PyTorch
    fz = model._featurizer()
    users = np.arange(50)
    ch = fz.build(sp_.train.to_csr()[users], users)
    cat = ch.cat.reshape(-1, ch.cat.shape[2])[:1000]
    dense = ch.dense.reshape(-1, ch.dense.shape[2])[:1000]
    assert model.ranker is not None
    sess = ort.InferenceSession(
        str(model.ranker.export_onnx(tmp_path / "r.onnx")), providers=["CPUExecutionProvider"]
    )
    np.testing.assert_allclose(
        sess.run(["score"], {"cat": cat, "dense": dense})[0],
        model.ranker.score({"cat": cat, "dense": dense}),
        atol=1e-5,
    )
    # a user without history gets the popularity order
    cold = model.score_history(sp.csr_matrix((1, ml100k.n_items), dtype=np.float32))
    assert np.argmax(cold[0]) == np.argmax(sp_.train.item_popularity())
    model.save(tmp_path / "ts")
    back = TwoStage.load(tmp_path / "ts")
    np.testing.assert_allclose(back.score_users(users[:5]), model.score_users(users[:5]), atol=1e-5)


def test_ctr_logistic_regression(ml100k: Dataset) -> None:
    res = run_ctr(ml100k, ["lr"], None)["results"]["lr"]
    assert res["auc"] > 0.75
    assert 0.3 < res["logloss"] < 0.69  # below the 0.693 of a coin flip
