"""SASRec beyond the retriever contract: it learns order, ONNX Runtime scores as PyTorch does, and it
serves as a history source of the pipeline (fed with the user's history in time order)."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest

from recstack.data.dataset import Dataset
from recstack.models.retrieval.sasrec import SASRec, pad_sequences, user_sequences

N_ITEMS, N_USERS, WALK = 20, 80, 8
FAST: dict[str, Any] = {
    "dim": 16,
    "heads": 2,
    "blocks": 1,
    "max_len": 8,
    "epochs": 40,
    "batch_size": 16,
    "lr": 0.02,
    "dropout": 0.0,
    "val_fraction": 0.0,
    "num_threads": 1,
}


def _chains(seed: int = 3) -> Dataset:
    """Every user walks the item cycle 0 -> 1 -> ... -> 19 -> 0 from a random start for 8 steps, one
    event per minute: the next item is always the last one + 1 (mod 20). A model that sees the
    history as a set cannot tell which of the user's 8 items came last; a sequential one can."""
    rng = np.random.default_rng(seed)
    rows: list[tuple[str, int, float, int]] = []
    for u in range(N_USERS):
        start = int(rng.integers(N_ITEMS))
        for step in range(WALK):
            rows.append((f"u{u:02d}", (start + step) % N_ITEMS, 4.0, 1_000_000 + 60 * (u * WALK + step)))
    frame = pl.DataFrame(rows, schema=["user_id", "item_id", "rating", "timestamp"], orient="row")
    return Dataset.from_frames("chains", frame)


@pytest.fixture(scope="module")
def data() -> Dataset:
    return _chains()


@pytest.fixture(scope="module")
def model(data: Dataset) -> SASRec:
    return SASRec(**FAST).fit(data)


def _item(data: Dataset, external: int) -> int:
    return data.item_vocab.index(external)


def test_user_sequences_are_in_time_order(data: Dataset) -> None:
    seqs = user_sequences(data)
    assert len(seqs) == N_USERS
    for s in seqs:
        ext = data.item_vocab.external(s)
        # consecutive items of the cycle: each is the previous + 1 (mod 20)
        assert all((b - a) % N_ITEMS == 1 for a, b in itertools.pairwise(ext)), ext
    # left padding, + 1 shift, the latest max_len kept
    assert pad_sequences([np.array([4, 5, 6])], 5).tolist() == [[0, 0, 5, 6, 7]]
    assert pad_sequences([np.arange(7)], 3).tolist() == [[5, 6, 7]]


@pytest.mark.parametrize("loss", ["full", "sampled"])
def test_learns_the_next_item_from_the_order(data: Dataset, model: SASRec, loss: str) -> None:
    m = model if loss == "full" else SASRec(**FAST, loss="sampled", negatives=8).fit(data)
    hits = 0
    for last in range(N_ITEMS):
        # the same set of three items in two orders: the prediction follows the latest item
        seq = [_item(data, (last - 2) % N_ITEMS), _item(data, (last - 1) % N_ITEMS), _item(data, last)]
        top = int(np.argmax(m.score_sequences([np.array(seq)])[0]))
        hits += top == _item(data, (last + 1) % N_ITEMS)
    # a model that ignored the order would be right for at most 1 in 3 of these sets
    assert hits >= 0.9 * N_ITEMS, hits


def test_onnx_runtime_matches_pytorch(model: SASRec, tmp_path: Path) -> None:
    import onnxruntime as ort

    path = model.export_onnx(tmp_path / "sasrec.onnx")
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    seqs = [rng.integers(0, N_ITEMS, size=n) for n in (0, 1, 3, 8, 12)]  # empty, short, full, longer
    x = pad_sequences(seqs, model.config.max_len)
    onnx_scores = sess.run(["scores"], {"seq": x})[0]
    assert onnx_scores.shape == (len(seqs), N_ITEMS)
    np.testing.assert_allclose(onnx_scores, model.score_inputs(x), rtol=1e-5, atol=1e-5)


def test_saved_model_serves_the_same_graph(model: SASRec, data: Dataset, tmp_path: Path) -> None:
    d = model.save(tmp_path / "m")
    assert (d / "sasrec.onnx").is_file() and (d / "sasrec.safetensors").is_file()
    loaded = SASRec.load(d)
    assert loaded.sequence_model() == model.sequence_model()
    users = np.arange(N_USERS)
    np.testing.assert_array_equal(loaded.score_users(users), model.score_users(users))


def test_serving_kernel_reads_the_history_most_recent_first(model: SASRec, data: Dataset) -> None:
    from recstack.serving._kernels import history_scorer

    scorer, sparse = history_scorer(model, N_ITEMS)
    assert not sparse
    seq = np.array([_item(data, 7), _item(data, 8), _item(data, 9)])  # time order
    np.testing.assert_allclose(
        scorer(seq[::-1].copy()), model.score_sequences([seq])[0], rtol=1e-5, atol=1e-5
    )


def test_pipeline_sequential_source(model: SASRec, data: Dataset) -> None:
    from recstack.serving._release import MemoryRelease
    from recstack.serving.pipeline import Pipeline, PipelineConfig, RecRequest, SourceConfig

    rel = MemoryRelease(id="seq-1", dataset=data, retrievers={"sasrec": model})
    cfg = PipelineConfig(
        sources=(SourceConfig(name="sasrec", kind="history", quota=5, recent=8),),
        rerank={"genre_cap": None},
    )
    pipe = Pipeline(rel, cfg)
    assert [s.name for s in pipe.active_sources] == ["sasrec"]
    # liked items in the order they were liked: 3, 4, 5 -> the next on the cycle is 6
    res = pipe.recommend(RecRequest(liked_items=[3, 4, 5], k=3))
    assert data.item_vocab.ids[int(res.items[0])] == 6
    assert not {3, 4, 5} & {data.item_vocab.ids[int(i)] for i in res.items}
    # a known user: the history from the store, whose latest item is followed by the next one
    seqs = user_sequences(data)
    res = pipe.recommend(RecRequest(user_id="u05", k=1))
    last = data.item_vocab.ids[int(seqs[data.user_vocab.index("u05")][-1])]
    assert data.item_vocab.ids[int(res.items[0])] == (last + 1) % N_ITEMS


def test_ranker_feature_in_the_two_stage_model() -> None:
    """As a recall source of the two-stage model, SASRec's score of each candidate is a ranker input
    (z-score over the user's list, rank, in-top flag), computed from its own scores."""
    from blocks_data import make_blocks_dataset
    from recstack.models.ranking.two_stage import TwoStage

    data = make_blocks_dataset()
    ts = TwoStage(
        ranker="ncf",
        sources=("itemknn", "sasrec"),
        source_params={"sasrec": {**FAST, "epochs": 3}},
        per_source=8,
        random_negatives=4,
        ranker_grid=({},),
        ranker_params={"epochs": 1, "num_threads": 1, "hidden": (8,), "emb_dim": 4},
    ).fit(data)
    fz = ts.featurizer()
    names = fz.dense_names()
    col = names.index("sasrec_z")
    assert names[col + 1 : col + 3] == ["sasrec_rank", "sasrec_flag"]
    users = np.array([0, 1])
    hist = data.to_csr("binary")[users]
    items = np.array([[0, 1, 2, 3], [4, 5, 6, 7]], dtype=np.int64)
    _, dense, _ = fz.features_for(hist, users, items)
    own = fz.sources["sasrec"].score_users(users)
    for r in range(2):
        ok = hist[r].toarray()[0, items[r]] == 0  # history items are -inf in the source scores
        z, s = dense[r, ok, col], own[r, items[r][ok]]
        # the feature orders the candidates as SASRec's scores do
        assert (np.argsort(z, kind="stable") == np.argsort(s, kind="stable")).all(), (z, s)


def test_cli_evaluate_leave_last_out(data: Dataset, tmp_path: Path) -> None:
    """`recstack evaluate --protocol leave-last-out --models sasrec,ease` (full ranking) on a saved
    dataset: both models scored on every user's last item."""
    import json

    from typer.testing import CliRunner

    from recstack.cli import app

    d = data.save(tmp_path / "chains")
    js = tmp_path / "out.json"
    res = CliRunner().invoke(
        app,
        ["-q", "evaluate", "--dataset", str(d), "--protocol", "leave-last-out", "--models", "sasrec,ease",
         "--json", str(js)],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    out = json.loads(js.read_text())
    assert out["protocol"] == "leave-last-out" and set(out["results"]) == {"sasrec", "ease"}
    for r in out["results"].values():
        assert r["n_users"] == N_USERS  # one held-out item per user
        assert 0.0 <= r["ndcg@10"] <= r["hr@10"] <= 1.0
    assert out["results"]["sasrec"]["params"]["max_len"] == 50
