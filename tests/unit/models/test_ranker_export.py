"""The rankers' ONNX graphs compute each sum over the fields (`RankerNet.field_sums`: the MLP's first
layer, the wide / first-order parts, DeepFM's FM sums) term by term: per categorical field a gather
from a constant table, plus one GEMM over the dense features only. The outputs stay those of PyTorch
(1e-5), with and without id features; without them the id fields (and NCF's GMF term) are not in the
graph at all."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper

from recstack.models.ranking._base import RankingData
from recstack.models.ranking.two_stage import ranker_class

CARDS = [11, 21, 4, 3]  # user id + 1, item id + 1, two small categorical fields
D = 5
FAST = {"epochs": 2, "hidden": (16, 8), "emb_dim": 4, "batch_size": 16, "lr": 1e-2}


def _rows(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    cat = np.stack([rng.integers(0, c, size=n) for c in CARDS], axis=1).astype(np.int64)
    return cat, rng.normal(size=(n, D)).astype(np.float32)


def _data() -> RankingData:
    cat, dense = _rows(60 * 8, seed=1)
    label = np.zeros((60, 8), dtype=np.float32)
    label[np.arange(60), dense.reshape(60, 8, D)[:, :, 0].argmax(axis=1)] = 1.0
    return RankingData(cat.reshape(60, 8, -1), dense.reshape(60, 8, D), label, np.ones((60, 8), bool), CARDS)


@pytest.mark.parametrize("ids", [True, False])
@pytest.mark.parametrize("name", ["ncf", "dnn", "widedeep", "deepfm"])
def test_projected_first_layer_keeps_the_outputs(name: str, ids: bool, tmp_path: Path) -> None:
    ranker = ranker_class(name)(**FAST, id_features=ids).fit(None, _data())
    path = ranker.export_onnx(tmp_path / "r.onnx")
    cat, dense = _rows(1000, seed=2)
    out = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(
        ["score"], {"cat": cat, "dense": dense}
    )[0]
    np.testing.assert_allclose(out, ranker.score({"cat": cat, "dense": dense}), atol=1e-5, rtol=1e-5)

    graph = onnx.load(str(path)).graph
    consts = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant":
            consts[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
    # the first layer's GEMM reads the dense features only: no [hidden, fields * emb + D] weight
    widths = [
        consts[n.input[1]].shape
        for n in graph.node
        if n.op_type in ("Gemm", "MatMul")
        if n.input[1] in consts
    ]
    assert not any(D + len(CARDS) * 4 in w for w in widths)
    assert any(w == (16, D) or w == (D, 16) for w in widths)
    # one projected table [cardinality, hidden] per field the layer reads; the id fields only with ids
    tables = sorted(a.shape[0] for a in consts.values() if a.ndim == 2 and a.shape[1] == 16)
    fields = CARDS if ids else CARDS[2:]
    assert all(c in tables for c in fields)
    if not ids:
        assert CARDS[0] not in [a.shape[0] for a in consts.values() if a.ndim == 2]


@pytest.mark.parametrize("ids", [False, True])
@pytest.mark.parametrize("name", ["ncf", "dnn", "widedeep", "deepfm", "lr", "ensemble"])
def test_factorised_graph_scores_the_rows_it_is_given_in_parts(name: str, ids: bool, tmp_path: Path) -> None:
    """`FactorisedNet`: the parts (pair columns, item index, the user's columns) give the scores of the
    whole rows they make (1e-5), for each ranker and an ensemble of them, and a user's scores do not
    depend on the other users of the call."""
    from recstack.models.ranking.ensemble import RankerEnsemble
    from recstack.models.ranking.factorised import export_factorised
    from recstack.serving._ranker import concat_feeds, factorised_feed

    ranker: Any
    if name == "ensemble":
        members = [ranker_class(a)(**FAST, id_features=ids, seed=s) for a, s in (("ncf", 1), ("dnn", 2))]
        ranker = RankerEnsemble(members).fit(None, _data())
        net = ranker.net()
    else:
        ranker = ranker_class(name)(**FAST, id_features=ids).fit(None, _data())
        net = ranker._require()
    dense_scope = ["pair", "item", "user", "pair", "item"]
    cat_scope = ["user", "item", "user", "item"]
    rng = np.random.default_rng(4)
    n_items = CARDS[1] - 1
    item_dense = rng.normal(size=(n_items, 2)).astype(np.float32)
    item_cat = np.stack([np.arange(n_items) + 1, rng.integers(0, CARDS[3], n_items)], axis=1)
    path = export_factorised(net, (dense_scope, cat_scope), item_dense, item_cat, tmp_path / "f.onnx")
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feeds, wants = [], []
    for _ in range(3):  # three users, 40 candidates each (repeated items too)
        items = rng.choice(n_items, 40).astype(np.int64)
        pair = rng.normal(size=(40, 2)).astype(np.float32)
        ucat = np.array([rng.integers(0, CARDS[0]), rng.integers(0, CARDS[2])], dtype=np.int64)
        udense = rng.normal(size=1).astype(np.float32)
        dense = np.empty((40, D), np.float32)
        dense[:, [0, 3]], dense[:, [1, 4]], dense[:, 2] = pair, item_dense[items], udense[0]
        cat = np.empty((40, 4), np.int64)
        cat[:, [1, 3]], cat[:, [0, 2]] = item_cat[items], ucat
        feeds.append(factorised_feed(pair, items, ucat, udense))
        wants.append(ranker.score({"cat": cat, "dense": dense}))
    alone = [sess.run(["score"], f)[0] for f in feeds]
    for got, want in zip(alone, wants, strict=True):
        np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)
    together = sess.run(["score"], concat_feeds(feeds))[0]
    assert np.array_equal(together, np.concatenate(alone))
