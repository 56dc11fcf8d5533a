"""The protocol runner on tiny synthetic data with test-only retrievers."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import polars as pl
import pytest
import scipy.sparse as sp

from recstack.config import ComponentConfig
from recstack.data.dataset import Dataset
from recstack.data.splits import Split, split
from recstack.errors import InvalidArgumentError
from recstack.evaluation import protocols
from recstack.evaluation.protocols import evaluate_retriever, run_protocol
from recstack.evaluation.report import write_json
from recstack.models import registry
from recstack.models.base import FloatArray, Retriever


class FixedConfig(ComponentConfig):
    bias: float = 0.0


class LowIndexFirst(Retriever):
    """Scores item i as -i (+ bias): prefers low item indices. An empty history gives all zeros (no
    information), which the runner replaces by training popularity."""

    name: ClassVar[str] = "lowfirst"
    Config: ClassVar[type[ComponentConfig]] = FixedConfig
    tuning_grid: ClassVar[tuple[dict[str, Any], ...]] = ({"bias": 0.0}, {"bias": 1.0})
    fitted_on: ClassVar[list[set[tuple[int, int]]]] = []

    def _fit(self, dataset: Dataset) -> None:
        inter = dataset.interactions
        LowIndexFirst.fitted_on.append(
            set(zip(inter["user"].to_list(), inter["item"].to_list(), strict=True))
        )

    def score_history(self, history: sp.csr_matrix) -> FloatArray:
        n = history.shape[0]
        scores = np.tile(-np.arange(self.n_items, dtype=np.float32), (n, 1))
        empty = np.diff(history.indptr) == 0
        scores[empty] = 0.0
        return scores


class SeededConfig(ComponentConfig):
    seed: int = 0


class SeededRandom(Retriever):
    """Random scores drawn from the config's seed (the same for every user): a model whose figures
    depend on its training seed."""

    name: ClassVar[str] = "seeded"
    Config: ClassVar[type[ComponentConfig]] = SeededConfig
    seeds_fitted: ClassVar[list[int]] = []

    def _fit(self, dataset: Dataset) -> None:
        seed = int(getattr(self.config, "seed", 0))
        SeededRandom.seeds_fitted.append(seed)
        self.order = np.random.default_rng(seed).random(self.n_items).astype(np.float32)

    def score_history(self, history: sp.csr_matrix) -> FloatArray:
        return np.tile(self.order, (history.shape[0], 1))


@pytest.fixture(autouse=True)
def _test_models(monkeypatch: pytest.MonkeyPatch) -> None:
    real_get = registry.get_class
    LowIndexFirst.fitted_on.clear()
    SeededRandom.seeds_fitted.clear()
    test_models: dict[str, type[Retriever]] = {"lowfirst": LowIndexFirst, "seeded": SeededRandom}

    def get_class(name: str) -> type[Retriever]:
        return test_models.get(name) or real_get(name)

    def create(name: str, **params: Any) -> Retriever:
        return get_class(name)(**params)

    monkeypatch.setattr(registry, "get_class", get_class)
    monkeypatch.setattr(registry, "create", create)


def make_dataset(pairs: list[tuple[int, int]], n_users: int, n_items: int) -> Dataset:
    inter = pl.DataFrame(
        {
            "user_id": [u for u, _ in pairs],
            "item_id": [i for _, i in pairs],
            "timestamp": list(range(len(pairs))),
        }
    )
    users = pl.DataFrame({"user_id": list(range(n_users))})
    items = pl.DataFrame(
        {"item_id": list(range(n_items)), "genres": [["a"] if i % 2 else ["b"] for i in range(n_items)]}
    )
    return Dataset.from_frames("tiny", inter, users, items)


# train: u0 {0}, u1 {1, 2}, u2 {5}, u3 {}   test: u0 {1, 3}, u1 {0}, u2 {}, u3 {5}
TRAIN = [(0, 0), (1, 1), (1, 2), (2, 5)]
TEST = [(0, 1), (0, 3), (1, 0), (3, 5)]


def fixed_splitter(cold: list[int]) -> Any:
    def splitter(dataset: Dataset, protocol: str, *, seed: int = 42) -> Split:
        n_train = len(TRAIN)
        inter = dataset.interactions
        return Split(
            train=dataset.with_interactions(inter[:n_train]),
            test=dataset.with_interactions(inter[n_train:]),
            protocol=protocol,
            seed=seed,
            cold_users=np.asarray(cold, dtype=np.int64),
        )

    return splitter


def test_evaluate_retriever_hand_example_with_and_without_exclusion() -> None:
    ds = make_dataset(TRAIN + TEST, 4, 6)
    train, test = ds.with_interactions(ds.interactions[:4]), ds.with_interactions(ds.interactions[4:])
    model = LowIndexFirst().fit(train)
    users = [0, 1]  # u3 (empty history) is checked in the temporal test
    res = evaluate_retriever(model, train, test, ks=[1, 2, 3], users=users, report_k=2, accuracy_ks=[1, 2])
    # train items removed: u0 -> [1, 2, 3] (hits at ranks 1, 3); u1 -> [0, 3, 4] (hit at rank 1)
    assert res["n_users"] == 2
    assert res["precision@2"] == pytest.approx((1 / 2 + 1 / 2) / 2)
    assert res["recall@2"] == pytest.approx((1 / 2 + 1) / 2)
    # u0: DCG 1, IDCG(2 hits) 1 + 1/log2(3); u1: 1
    assert res["ndcg@2"] == pytest.approx((1 / (1 + 1 / math.log2(3)) + 1) / 2)
    assert res["curves"]["precision"] == pytest.approx([1.0, 0.5, (2 / 3 + 1 / 3) / 2])
    # coverage@2: {1, 2, 0, 3} of 6 items
    assert res["coverage@2"] == pytest.approx(4 / 6)
    # accuracy (nothing removed, per test pair): u0 scores rank items 0 > 1 > 2 > 3; pair (0,1) has 1
    # item above -> hit at K=2 only; (0,3) has 3 above -> miss; (1,0) has 0 above -> hit at K=1
    assert res["accuracy@1"] == pytest.approx(1 / 3)
    assert res["accuracy@2"] == pytest.approx(2 / 3)
    # genres alternate b, a, b, a...: u0 top-2 {1 (a), 2 (b)} distance 1; u1 {0 (b), 3 (a)} distance 1
    assert res["diversity@2"] == pytest.approx(1.0)

    res_all = evaluate_retriever(model, train, test, ks=[1, 2], exclude_train=False, users=users, report_k=2)
    # nothing removed: u0 -> [0, 1] (hit rank 2), u1 -> [0, 1] (hit rank 1)
    assert res_all["precision@2"] == pytest.approx(0.5)
    assert res_all["mrr@2"] == pytest.approx((1 / 2 + 1) / 2)


def test_run_protocol_json_format(tmp_path: Path) -> None:
    ds = make_dataset(TRAIN + TEST, 4, 6)
    out = run_protocol(ds, "stratified", ["lowfirst"], splitter=fixed_splitter([]))
    assert out["dataset"] == "tiny" and out["protocol"] == "stratified"
    res = out["results"]["lowfirst"]
    for key in (
        "precision@10", "recall@10", "ndcg@10", "map@10", "hr@10", "mrr@10", "coverage@10",
        "novelty@10", "diversity@10", "accuracy@1", "accuracy@5", "accuracy@10", "accuracy@50",
        "accuracy@100", "fit_seconds",
    ):  # fmt: skip
        assert isinstance(res[key], float), key
    assert res["params"] == {"bias": 0.0}
    assert set(res["curves"]) == {"ndcg", "precision", "recall"}
    assert all(len(v) == 50 for v in res["curves"].values())
    assert "tuning" not in res and "cold" not in res
    assert all(k == k.lower() for k in res)
    # 3 test users (u0, u1, u3); u3 has an empty history -> popularity fallback
    assert res["n_users"] == 3 and res["n_fallback"] == 1
    path = write_json(out, tmp_path / "r.json")
    back = json.loads(path.read_text())
    assert back["results"]["lowfirst"]["ndcg@10"] == pytest.approx(res["ndcg@10"])


def test_temporal_reports_cold_users_separately() -> None:
    ds = make_dataset(TRAIN + TEST, 4, 6)
    out = run_protocol(ds, "temporal", ["lowfirst"], splitter=fixed_splitter([3]), ks=[1, 10])
    res = out["results"]["lowfirst"]
    assert res["n_users"] == 2  # warm: u0, u1
    cold = res["cold"]
    # u3 has no history: scores are flat -> training popularity (items 0, 1, 2, 5 once each, ties by
    # lower index) -> [0, 1, 2, 5, ...] minus nothing; its test item 5 is at rank 4
    assert cold["n_users"] == 1 and cold["n_fallback"] == 1
    assert cold["hr@10"] == 1.0
    assert cold["mrr@10"] == pytest.approx(1 / 4)
    assert out["results"]["lowfirst"]["curves"]["ndcg"][0] == pytest.approx(1.0)  # both warm hit at 1


def test_tfrs_removes_nothing() -> None:
    ds = make_dataset(TRAIN + TEST, 4, 6)
    out = run_protocol(ds, "tfrs", ["lowfirst"], splitter=fixed_splitter([]), ks=[1, 10])
    # u0 -> [0, ...] (0 is a train item, kept, not relevant), u1 -> [0] hit, u3 -> pop [0] miss
    assert out["results"]["lowfirst"]["curves"]["precision"][0] == pytest.approx(1 / 3)


def synthetic(n_users: int = 30, n_items: int = 25, seed: int = 0) -> Dataset:
    rng = np.random.default_rng(seed)
    pairs = {(u, int(i)) for u in range(n_users) for i in rng.choice(n_items, size=8, replace=False)}
    return make_dataset(sorted(pairs), n_users, n_items)


def test_tuning_never_touches_test(monkeypatch: pytest.MonkeyPatch) -> None:
    ds = synthetic()
    spl = split(ds, "stratified", seed=7)

    def pairs(d: Dataset) -> set[tuple[int, int]]:
        return set(zip(d.interactions["user"].to_list(), d.interactions["item"].to_list(), strict=True))

    train_pairs, test_pairs = pairs(spl.train), pairs(spl.test)
    evaluated: list[set[tuple[int, int]]] = []
    real_eval = protocols.evaluate_retriever

    def spy_eval(model: Retriever, train: Dataset, test: Dataset, *a: Any, **kw: Any) -> dict[str, Any]:
        evaluated.append(pairs(test))
        return real_eval(model, train, test, *a, **kw)

    monkeypatch.setattr(protocols, "evaluate_retriever", spy_eval)
    out = run_protocol(ds, "stratified", ["lowfirst"], tune=True, seed=7)
    res = out["results"]["lowfirst"]
    fits = LowIndexFirst.fitted_on
    assert len(fits) == 3  # 2 grid points on validation + the final refit
    for seen in fits[:2]:
        assert seen < train_pairs  # a strict subset of train: the validation split's train part
        assert not seen & test_pairs
    assert fits[2] == train_pairs  # the final model sees all of train and nothing of test
    assert len(evaluated) == 3
    for truth in evaluated[:2]:
        assert truth <= train_pairs and not truth & test_pairs  # validation truth comes from train
    assert evaluated[2] == test_pairs  # the test set is used once, at the end
    assert [p for p, _ in res["tuning"]] == [{"bias": 0.0}, {"bias": 1.0}]
    # a constant bias does not change the ranking: equal validation scores, the first point wins
    assert res["tuning"][0][1] == res["tuning"][1][1]
    assert res["params"] == {"bias": 0.0}


def test_bad_protocol_and_models_give_clear_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    ds = synthetic()
    with pytest.raises(InvalidArgumentError, match="choose from stratified"):
        run_protocol(ds, "nope", ["lowfirst"])
    with pytest.raises(InvalidArgumentError, match="unknown model 'nope'"):
        run_protocol(ds, "stratified", ["nope"])
    with pytest.raises(InvalidArgumentError, match="at least one model"):
        run_protocol(ds, "stratified", [])
    monkeypatch.setitem(registry._RETRIEVERS, "ghost", "recstack.models.retrieval.ghost:Ghost")
    with pytest.raises(InvalidArgumentError, match="'ghost' is not available"):
        run_protocol(ds, "stratified", ["ghost"])


def test_register_protocol_extends_the_runner(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[str, ...]] = []

    def ctr(dataset: Dataset, names: Any, opts: protocols.RunOptions) -> dict[str, Any]:
        calls.append(tuple(names))
        return {"results": {n: {"auc": 0.5} for n in names}}

    monkeypatch.setitem(protocols.PROTOCOLS, "ctr", ctr)
    out = run_protocol(synthetic(), "ctr", ["lowfirst"])
    assert calls == [("lowfirst",)]
    assert out["protocol"] == "ctr" and out["results"] == {"lowfirst": {"auc": 0.5}}


def test_temporal_rolling_windows_means_and_paired_ci() -> None:
    base = synthetic(n_users=60, n_items=30, seed=3)
    # interleave users in time (synthetic() orders rows user by user)
    rng = np.random.default_rng(0)
    inter = base.interactions.with_columns(pl.Series("timestamp", rng.permutation(base.n_interactions)))
    ds = base.with_interactions(inter)
    out = run_protocol(ds, "temporal-rolling", ["pop", "lowfirst"], ks=[1, 10])
    wins = out["windows"]
    assert len(wins) == 5
    # each window trains on everything before it: train sizes grow by one window
    sizes = [w["train"] for w in wins]
    assert all(b - a == wins[0]["test"] for a, b in itertools.pairwise(sizes))
    for name in ("pop", "lowfirst"):
        res = out["results"][name]
        per = [w["warm"]["ndcg@10"] for w in res["windows"]]
        assert res["ndcg@10"] == pytest.approx(np.mean(per))  # the headline is the mean over windows
        assert res["n_users"] == sum(w["warm_users"] for w in wins)
        assert "cold" in res and len(res["fit_seconds_windows"]) == 5
    (comp,) = out["comparisons"]["warm"]
    assert (comp["a"], comp["b"], comp["metric"]) == ("pop", "lowfirst", "ndcg@10")
    diff = out["results"]["lowfirst"]["ndcg@10"] - out["results"]["pop"]["ndcg@10"]
    assert comp["diff"] == pytest.approx(diff)
    low, high = comp["ci95"]
    assert low <= comp["diff"] <= high and low < high
    assert comp["n_units"] == out["results"]["pop"]["n_users"] > 0
    # seeded: the same run gives the same interval
    again = run_protocol(ds, "temporal-rolling", ["pop", "lowfirst"], ks=[1, 10])
    assert again["comparisons"]["warm"][0]["ci95"] == comp["ci95"]


def test_temporal_rolling_with_sampled_users_combines_the_window_intervals() -> None:
    """``sample_users`` under temporal-rolling: each window's warm users are sampled; the headline's
    interval is that of the mean of independent window means (sqrt of the summed squared errors / W)."""
    base = synthetic(n_users=60, n_items=30, seed=3)
    rng = np.random.default_rng(0)
    inter = base.interactions.with_columns(pl.Series("timestamp", rng.permutation(base.n_interactions)))
    ds = base.with_interactions(inter)
    full = run_protocol(ds, "temporal-rolling", ["pop", "lowfirst"], ks=[1, 10])
    out = run_protocol(ds, "temporal-rolling", ["pop", "lowfirst"], ks=[1, 10], sample_users=5)
    for name in ("pop", "lowfirst"):
        res = out["results"][name]
        wins = [w["warm"] for w in res["windows"] if w["warm"]["n_users"] > 0]
        assert all(w["n_users"] == min(5, w["sample"]["of"]) for w in wins)
        assert res["n_users"] < full["results"][name]["n_users"]  # fewer users than the full run
        assert res["sample"]["of"] == full["results"][name]["n_users"]
        ses = [(w["sample"]["ci95"]["ndcg@10"][1] - w["sample"]["ci95"]["ndcg@10"][0]) / 3.92 for w in wins]
        half = 1.96 * math.sqrt(sum(se * se for se in ses)) / len(wins)
        lo, hi = res["sample"]["ci95"]["ndcg@10"]
        assert (lo + hi) / 2 == pytest.approx(res["ndcg@10"])
        assert (hi - lo) / 2 == pytest.approx(half)
        assert "sample" not in res["cold"]  # cold users are not sampled
    # the paired comparisons run on the sampled users (the same sample for both models)
    (comp,) = out["comparisons"]["warm"]
    assert comp["n_units"] == out["results"]["pop"]["n_users"]


def test_paired_bootstrap_ci_by_hand() -> None:
    from recstack.evaluation.metrics import paired_bootstrap_ci

    # a constant difference has a degenerate interval at that value; mean over strata, not units
    est, low, high = paired_bootstrap_ci([np.full(5, 0.1), np.full(50, 0.3)])
    assert (est, low, high) == pytest.approx((0.2, 0.2, 0.2))
    # 400 uniform(0, 1) differences: sd 1/sqrt(12), so the 95% interval is about
    # 2 * 1.96 * 0.2887 / sqrt(400) = 0.0566 wide around the sample mean
    d = np.random.default_rng(0).uniform(0, 1, 400)
    est, low, high = paired_bootstrap_ci([d], seed=1)
    assert est == pytest.approx(d.mean()) and low < est < high
    assert high - low == pytest.approx(0.0566, abs=0.008)
    assert all(np.isnan(paired_bootstrap_ci([np.empty(0)])))


def test_model_seeds_give_mean_and_sd_over_training_seeds() -> None:
    ds = make_dataset(TRAIN + TEST, 4, 30)
    run = lambda seeds: run_protocol(  # noqa: E731
        ds, "temporal", ["seeded", "lowfirst"], splitter=fixed_splitter([3]), ks=[10], model_seeds=seeds
    )
    single = [run([s])["results"]["seeded"]["ndcg@10"] for s in (1, 2, 3)]
    assert len(set(single)) > 1  # the seed changes the figure
    SeededRandom.seeds_fitted.clear()
    out = run([1, 2, 3])
    assert SeededRandom.seeds_fitted == [1, 2, 3]  # one fit per training seed, the split kept
    res = out["results"]["seeded"]
    assert res["ndcg@10"] == pytest.approx(np.mean(single))
    assert res["seeds"]["seeds"] == [1, 2, 3]
    assert res["seeds"]["values"]["ndcg@10"] == pytest.approx(single)
    assert res["seeds"]["sd"]["ndcg@10"] == pytest.approx(np.std(single, ddof=1))
    assert "cold.ndcg@10" in res["seeds"]["sd"] and res["cold"]["n_users"] == 1
    # a model without a seed is the same in every run: sd 0
    low = out["results"]["lowfirst"]
    assert low["seeds"]["sd"]["ndcg@10"] == 0.0
    with pytest.raises(InvalidArgumentError, match="at least one training seed"):
        run([])
