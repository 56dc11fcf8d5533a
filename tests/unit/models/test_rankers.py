"""Neural rankers: ONNX Runtime == PyTorch (1e-5) on 1,000 random rows, learning a planted signal,
save/load round-trip, the trainer's determinism."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from recstack.config import load_toml
from recstack.errors import InvalidArgumentError, NotFittedError
from recstack.models.ranking._base import NeuralRanker, RankerConfig, RankingData, auc, ndcg_at_k
from recstack.models.ranking.ensemble import RankerEnsemble
from recstack.models.ranking.trainer import TrainerConfig, train
from recstack.models.ranking.two_stage import RANKERS, ranker_class

CARDS = [11, 21, 4, 3]  # user id + 1, item id + 1, two small categorical fields
D = 5


def _rows(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    cat = np.stack([rng.integers(0, c, size=n) for c in CARDS], axis=1).astype(np.int64)
    dense = rng.normal(size=(n, D)).astype(np.float32)
    return cat, dense


def _grouped(n_users: int, L: int, seed: int) -> RankingData:
    """Lists where the positive is the candidate with the largest dense[:, 0] (plus field 2 == 1)."""
    cat, dense = _rows(n_users * L, seed)
    cat = cat.reshape(n_users, L, -1)
    dense = dense.reshape(n_users, L, -1)
    signal = dense[:, :, 0] + 1.5 * (cat[:, :, 2] == 1)
    signal[:, -3:] = -np.inf  # the last 3 slots are padding, which the rankers must ignore
    label = np.zeros((n_users, L), dtype=np.float32)
    label[np.arange(n_users), signal.argmax(axis=1)] = 1.0
    mask = np.ones((n_users, L), dtype=bool)
    mask[:, -3:] = False
    return RankingData(cat, dense, label, mask, CARDS)


FAST = {"epochs": 4, "hidden": (16,), "emb_dim": 4, "batch_size": 16, "lr": 1e-2, "patience": 10}


@pytest.fixture(scope="module")
def fitted() -> dict[str, NeuralRanker]:
    data = _grouped(120, 12, seed=1)
    return {name: ranker_class(name)(**FAST).fit(None, data) for name in RANKERS}


@pytest.mark.parametrize("name", sorted(RANKERS))
def test_onnx_matches_torch(name: str, fitted: dict[str, NeuralRanker], tmp_path: Path) -> None:
    ranker = fitted[name]
    path = ranker.export_onnx(tmp_path / f"{name}.onnx")
    cat, dense = _rows(1000, seed=2)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    onnx_out = sess.run(["score"], {"cat": cat, "dense": dense})[0]
    torch_out = ranker.score({"cat": cat, "dense": dense})
    assert onnx_out.shape == (1000,)
    np.testing.assert_allclose(onnx_out, torch_out, atol=1e-5, rtol=1e-5)
    # a single row works too (dynamic batch axis)
    one = sess.run(["score"], {"cat": cat[:1], "dense": dense[:1]})[0]
    np.testing.assert_allclose(one, torch_out[:1], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("ids", [True, False])
def test_deepfm_fm_is_the_textbook_sum_over_every_field(ids: bool) -> None:
    """DeepFM's FM sums over the fields without materialising the dense fields' embeddings; it equals
    the textbook 0.5 * sum_f((sum_j v_j)^2 - sum_j v_j^2) over v = [v_cat, dense_j * dense_emb_j]."""
    from recstack.models.ranking.deepfm import DeepFMNet

    torch.manual_seed(0)
    net = DeepFMNet(
        {"cat_cards": CARDS, "n_dense": D, "emb_dim": 4, "hidden": [8], "dropout": 0.0, "id_features": ids}
    )
    for p in net.parameters():  # non-zero first-order tables too
        torch.nn.init.normal_(p, std=0.3)
    net.eval()
    cat, dense = (torch.from_numpy(a) for a in _rows(64, seed=5))
    with torch.no_grad():
        v_cat = net.field_embeddings(cat)
        v = torch.cat([v_cat, dense.unsqueeze(2) * net.dense_emb.unsqueeze(0)], dim=1)
        fm = 0.5 * (v.sum(dim=1).pow(2) - v.pow(2).sum(dim=1)).sum(dim=1)
        first = net.first_dense(dense).squeeze(1)
        for j, w in enumerate(net.first_cat):
            if ids or j >= 2:
                first = first + w(cat[:, j]).squeeze(1)
        want = first + fm + net.deep(torch.cat([v_cat.flatten(1), dense], dim=1)).squeeze(1)
        torch.testing.assert_close(net.logits(cat, dense), want, atol=1e-5, rtol=1e-5)
        sums = net.field_sums()
        assert sums is not None and set(sums) == {"h1", "first", "fm_sum", "fm_square"}
        got = net.logits_from_sums({k: s.rows(cat, dense) for k, s in sums.items()}, cat)
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(
    ("name", "loss"),
    [("ncf", "softmax"), ("widedeep", "softmax"), ("deepfm", "softmax"), ("dnn", "softmax"), ("dnn", "bpr")],
)
def test_learns_planted_signal(name: str, loss: str) -> None:
    train_d, val_d = _grouped(300, 12, seed=3), _grouped(60, 12, seed=4)
    r = ranker_class(name)(**{**FAST, "epochs": 12}, loss=loss).fit(None, train_d, validation=val_d)
    s = r.score({"cat": val_d.cat.reshape(-1, 4), "dense": val_d.dense.reshape(-1, D)}).reshape(60, 12)
    # a random order of the 9 real candidates gives NDCG@10 = mean(1 / log2(r + 1), r = 1..9) = 0.473;
    # the planted signal (dense[0] + 1.5 * [field 2 == 1]) is learnable
    assert ndcg_at_k(s, val_d.label, val_d.mask) > 0.75
    assert r.fit_result["best_epoch"] >= 1


def test_pointwise_bce_on_flat_rows() -> None:
    cat, dense = _rows(3000, seed=5)
    label = (dense[:, 1] > 0).astype(np.float32)
    data = RankingData(cat, dense, label, None, CARDS)
    vc, vd = _rows(500, seed=6)
    val = RankingData(vc, vd, (vd[:, 1] > 0).astype(np.float32), None, CARDS)
    r = ranker_class("lr")(**{**FAST, "batch_size": 128, "lr": 0.05, "epochs": 10}, loss="bce").fit(
        None, data, validation=val
    )
    assert auc(val.label, r.score({"cat": vc, "dense": vd})) > 0.95


def test_save_load_round_trip(fitted: dict[str, NeuralRanker], tmp_path: Path) -> None:
    r = fitted["deepfm"]
    r.save(tmp_path / "r")
    assert not list(tmp_path.rglob("*.pkl"))
    back = ranker_class("deepfm").load(tmp_path / "r")
    cat, dense = _rows(50, seed=7)
    np.testing.assert_array_equal(
        back.score({"cat": cat, "dense": dense}), r.score({"cat": cat, "dense": dense})
    )
    assert back.config == r.config


def test_errors() -> None:
    with pytest.raises(NotFittedError):
        ranker_class("dnn")().score(
            {"cat": np.zeros((1, 4), np.int64), "dense": np.zeros((1, D), np.float32)}
        )
    with pytest.raises(InvalidArgumentError, match="choose from"):
        ranker_class("gbdt")
    r = ranker_class("dnn")(**{**FAST, "epochs": 1}).fit(None, _grouped(10, 5, seed=0))
    with pytest.raises(InvalidArgumentError, match="'cat' and 'dense'"):
        r.score({"cat": np.zeros((1, 4), np.int64)})
    with pytest.raises(InvalidArgumentError, match="RankingData"):
        ranker_class("dnn")().fit(None, [1, 2, 3])


def test_auc_and_ndcg_by_hand() -> None:
    # positives scored 0.9 and 0.4, negatives 0.5 and 0.1: 3 of 4 pairs ordered -> AUC 0.75
    assert auc([1, 1, 0, 0], [0.9, 0.4, 0.5, 0.1]) == pytest.approx(0.75)
    # a tie between a positive and a negative counts half: pairs (1>0: yes), (tie: 0.5) -> 0.75
    assert auc([1, 0, 0], [0.5, 0.5, 0.1]) == pytest.approx(0.75)
    # one positive ranked 2nd: DCG 1/log2(3), ideal 1 -> 0.6309
    s = np.array([[0.9, 0.8, 0.1]], dtype=np.float32)
    lab = np.array([[0, 1, 0]], dtype=np.float32)
    assert ndcg_at_k(s, lab, np.ones_like(lab, dtype=bool)) == pytest.approx(1 / np.log2(3))


def test_trainer_is_deterministic_and_restores_best() -> None:
    def run() -> tuple[list[float], torch.Tensor, int]:
        torch.manual_seed(0)
        net = torch.nn.Linear(3, 1)
        x = torch.randn(64, 3)
        y = x @ torch.tensor([1.0, -2.0, 0.5]) + 0.1
        vals = iter([0.1, 0.5, 0.3, 0.2, 0.4, 0.0])  # best at epoch 2, then patience 2 runs out at 4

        def batches(epoch: int, rng: np.random.Generator) -> list[torch.Tensor]:
            perm = torch.from_numpy(rng.permutation(64))
            return [perm[:32], perm[32:]]

        snapshots: list[torch.Tensor] = []

        def validate() -> float:
            snapshots.append(net.weight.detach().clone())
            return next(vals)

        res = train(
            net,
            batches,
            lambda idx: ((net(x[idx]).squeeze(1) - y[idx]) ** 2).mean(),
            TrainerConfig(epochs=6, patience=2, lr=0.05, num_threads=1),
            validate=validate,
        )
        assert torch.equal(net.weight, snapshots[1])  # the epoch-2 state was restored
        return [h["loss"] for h in res.history], net.weight.detach().clone(), res.best_epoch

    a, b = run(), run()
    assert a[0] == b[0] and torch.equal(a[1], b[1])
    assert a[2] == 2 and len(a[0]) == 4


def test_trainer_config_from_model_takes_the_shared_fields() -> None:
    from recstack.models.retrieval.sasrec import SASRecConfig
    from recstack.models.retrieval.two_tower import TwoTowerConfig

    r = RankerConfig(epochs=3, batch_size=7, lr=0.5, lr_schedule="cosine", average_top=2, seed=9)
    tc = TrainerConfig.from_model(r)
    assert (tc.epochs, tc.batch_size, tc.lr, tc.lr_schedule, tc.average_top, tc.seed) == (
        3,
        7,
        0.5,
        "cosine",
        2,
        9,
    )
    assert (tc.weight_decay, tc.patience, tc.num_threads) == (r.weight_decay, r.patience, r.num_threads)
    # a two-tower / SASRec config has no schedule or soup: the loop's defaults (constant, 1)
    for cfg in (TwoTowerConfig(epochs=4, lr=0.25, num_threads=1), SASRecConfig(epochs=4, lr=0.25)):
        t = TrainerConfig.from_model(cfg)
        assert (t.epochs, t.lr, t.lr_schedule, t.average_top, t.min_delta) == (4, 0.25, "constant", 1, 1e-4)
        assert (t.batch_size, t.weight_decay, t.patience) == (cfg.batch_size, cfg.weight_decay, cfg.patience)


def test_ranker_config_from_toml(tmp_path: Path) -> None:
    p = tmp_path / "ranker.toml"
    p.write_text('emb_dim = 8\nhidden = [32, 16]\nloss = "bpr"\n')
    cfg = RankerConfig.from_config(load_toml(p))
    assert cfg.hidden == (32, 16) and cfg.loss == "bpr"
    assert RankerConfig.from_config(cfg.dump_config()) == cfg


@pytest.fixture(scope="module")
def ensemble() -> RankerEnsemble:
    data = _grouped(120, 12, seed=1)
    members = [
        ranker_class("ncf")(**FAST, seed=1),
        ranker_class("ncf")(**FAST, seed=2),
        ranker_class("dnn")(**FAST, seed=1),
    ]
    return RankerEnsemble(members).fit(None, data, validation=_grouped(40, 12, seed=9))


def test_ensemble_is_the_mean_of_standardised_members(ensemble: RankerEnsemble) -> None:
    cat, dense = _rows(1000, seed=2)
    feats = {"cat": cat, "dense": dense}
    # members trained with distinct seeds are distinct nets
    a, b = (m.score(feats) for m in ensemble.members[:2])
    assert np.abs(a - b).max() > 1e-3
    # by hand: (logit_k - shift_k) / scale_k averaged over the 3 members; shift / scale are the mean / std
    # of each member's logits over the training rows (the 120 x 9 unpadded ones, fewer than the stats
    # sample)
    tc, td, _ = _grouped(120, 12, seed=1).flat()
    assert len(tc) == 120 * 9
    flat = {"cat": tc, "dense": td}
    expect = np.zeros(1000)
    for m, sh, sc in zip(ensemble.members, ensemble.shift or [], ensemble.scale or [], strict=True):
        tr = m.score(flat).astype(np.float64)
        assert sh == pytest.approx(tr.mean()) and sc == pytest.approx(tr.std())
        expect += (m.score(feats) - tr.mean()) / tr.std() / 3
    np.testing.assert_allclose(ensemble.score(feats), expect, atol=1e-5)
    assert [r["model"] for r in ensemble.fit_result["members"]] == ["ncf", "ncf", "dnn"]
    assert 0.0 < ensemble.fit_result["best_val"] <= 1.0


def test_ensemble_onnx_matches_torch(ensemble: RankerEnsemble, tmp_path: Path) -> None:
    path = ensemble.export_onnx(tmp_path / "ensemble.onnx")
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    # the same inputs and one output as a single net: serving does not know it is an ensemble
    assert [i.name for i in sess.get_inputs()] == ["cat", "dense"]
    assert [o.name for o in sess.get_outputs()] == ["score"]
    cat, dense = _rows(1000, seed=2)
    out = sess.run(["score"], {"cat": cat, "dense": dense})[0]
    assert out.shape == (1000,) and out.dtype == np.float32
    np.testing.assert_allclose(out, ensemble.score({"cat": cat, "dense": dense}), atol=1e-5, rtol=1e-5)


def test_ensemble_save_load_round_trip(ensemble: RankerEnsemble, tmp_path: Path) -> None:
    ensemble.save(tmp_path / "r")
    assert RankerEnsemble.is_saved(tmp_path / "r") and not list(tmp_path.rglob("*.pkl"))
    back = RankerEnsemble.load(tmp_path / "r", ranker_class)
    cat, dense = _rows(50, seed=7)
    np.testing.assert_array_equal(
        back.score({"cat": cat, "dense": dense}), ensemble.score({"cat": cat, "dense": dense})
    )
    assert [m.name for m in back.members] == ["ncf", "ncf", "dnn"]


def test_one_member_ensemble_orders_as_its_member() -> None:
    data = _grouped(60, 12, seed=1)
    single = ranker_class("ncf")(**FAST, seed=3).fit(None, data)
    ens = RankerEnsemble([ranker_class("ncf")(**FAST, seed=3)]).fit(None, data)
    cat, dense = _rows(200, seed=2)
    s, e = single.score({"cat": cat, "dense": dense}), ens.score({"cat": cat, "dense": dense})
    # the same net (same seed, same rows), standardised: an increasing affine map of the member
    assert ens.scale is not None and ens.shift is not None
    np.testing.assert_allclose(e, (s - ens.shift[0]) / ens.scale[0], atol=1e-5)
    np.testing.assert_array_equal(np.argsort(-e, kind="stable"), np.argsort(-s, kind="stable"))


def test_ensemble_errors() -> None:
    with pytest.raises(InvalidArgumentError, match="at least one"):
        RankerEnsemble([])
    with pytest.raises(NotFittedError):
        RankerEnsemble([ranker_class("dnn")()]).score(
            {"cat": np.zeros((1, 4), np.int64), "dense": np.zeros((1, D), np.float32)}
        )
    with pytest.raises(InvalidArgumentError, match="RankingData"):
        RankerEnsemble([ranker_class("dnn")()]).fit(None, [1, 2, 3])


@pytest.mark.parametrize(("soup_val", "kept"), [(0.6, True), (0.4, False)])
def test_trainer_average_top_keeps_the_soup_only_when_it_validates(soup_val: float, kept: bool) -> None:
    torch.manual_seed(0)
    net = torch.nn.Linear(3, 1)
    x = torch.randn(64, 3)
    y = x @ torch.tensor([1.0, -2.0, 0.5])
    # epochs 1..4 score 0.1, 0.5, 0.3, 0.2 (patience 2 stops after 4); the 5th call scores the soup
    vals = iter([0.1, 0.5, 0.3, 0.2, soup_val])
    snapshots: list[torch.Tensor] = []

    def validate() -> float:
        snapshots.append(net.weight.detach().clone())
        return next(vals)

    res = train(
        net,
        lambda epoch, rng: [torch.arange(32), torch.arange(32, 64)],
        lambda idx: ((net(x[idx]).squeeze(1) - y[idx]) ** 2).mean(),
        TrainerConfig(epochs=6, patience=2, lr=0.05, num_threads=1, average_top=2),
        validate=validate,
    )
    # the soup = the mean of the best two epochs' weights (epochs 2 and 3)
    soup = (snapshots[1] + snapshots[2]) / 2
    torch.testing.assert_close(snapshots[4], soup)
    assert res.best_epoch == 2 and res.history[-1]["averaged"] == 2.0
    if kept:
        torch.testing.assert_close(net.weight.detach(), soup)
        assert res.best_metric == 0.6
    else:
        assert torch.equal(net.weight.detach(), snapshots[1])
        assert res.best_metric == 0.5


def test_trainer_cosine_schedule_changes_the_steps() -> None:
    def run(schedule: str) -> torch.Tensor:
        torch.manual_seed(0)
        net = torch.nn.Linear(3, 1)
        x = torch.randn(64, 3)
        train(
            net,
            lambda epoch, rng: [torch.arange(64)],
            lambda idx: (net(x[idx]) ** 2).mean(),
            TrainerConfig(epochs=3, lr=0.1, num_threads=1, lr_schedule=schedule),  # type: ignore[arg-type]
            n_batches=1,
        )
        return net.weight.detach().clone()

    assert not torch.equal(run("constant"), run("cosine"))


def test_ensemble_member_data_bags() -> None:
    calls: list[int] = []
    everything = _grouped(90, 12, seed=1)

    def member_data(i: int) -> tuple[RankingData, RankingData]:
        calls.append(i)
        return _grouped(60, 12, seed=10 + i), _grouped(30, 12, seed=20 + i)

    ens = RankerEnsemble([ranker_class("dnn")(**FAST, seed=1), ranker_class("dnn")(**FAST, seed=1)])
    ens.fit(None, everything, member_data=member_data)
    assert calls == [0, 1]
    # the same seed on different rows: different nets; best_val = the mean of the members' own
    cat, dense = _rows(100, seed=2)
    a, b = (m.score({"cat": cat, "dense": dense}) for m in ens.members)
    assert np.abs(a - b).max() > 1e-3
    own = [m.fit_result["best_val"] for m in ens.members]
    assert ens.fit_result["bagged"] and ens.fit_result["best_val"] == pytest.approx(np.mean(own))
