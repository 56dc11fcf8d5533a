"""Issue 21, text features: the two-stage ranker's ``text_features`` (`ItemText`: the candidate's
cosine with the user's text profile, principal components of its embedding) from training to the
served factorised graph, and the two-tower item tower's ``text`` input. Embeddings come from a fake
`embed_items` (each item's block as a direction: the blocks data's users like one block), so the
tests do not load a sentence-transformers model."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import scipy.sparse as sp

from blocks_data import SMALL_TWO_STAGE, make_blocks_dataset
from recstack.data.dataset import Dataset
from recstack.errors import ArtifactError
from recstack.features.tables import build_features
from recstack.models.ranking._text import ItemText
from recstack.models.ranking.two_stage import TwoStage
from recstack.models.retrieval.two_tower import TwoTower
from recstack.serving._ranker import RankContext, TwoStageRanker
from recstack.serving._release import MemoryRelease
from recstack.serving.pipeline import Pipeline
from recstack.text import encoder as encoder_mod

SMALL: dict[str, Any] = {**SMALL_TWO_STAGE, "text_features": True, "text_components": 3}


def fake_embeddings(n_items: int, dim: int = 6) -> np.ndarray:
    """Item i: the direction of its block (i % 4) plus a little seeded noise, not unit length."""
    rng = np.random.default_rng(7)
    emb = np.zeros((n_items, dim), dtype=np.float32)
    emb[np.arange(n_items), np.arange(n_items) % 4] = 2.0
    return emb + rng.normal(0, 0.1, (n_items, dim)).astype(np.float32)


@pytest.fixture(scope="module")
def fake_encoder() -> Iterator[list[int]]:
    """`embed_items` replaced by `fake_embeddings`; yields the list of item counts it was called for."""
    calls: list[int] = []

    def embed(dataset: Dataset, *args: Any, **kwargs: Any) -> np.ndarray:
        calls.append(dataset.n_items)
        return fake_embeddings(dataset.n_items)

    with pytest.MonkeyPatch.context() as m:
        m.setattr(encoder_mod, "embed_items", embed)
        yield calls


@pytest.fixture(scope="module")
def data() -> Dataset:
    return make_blocks_dataset()


@pytest.fixture(scope="module")
def text_model(fake_encoder: list[int], data: Dataset) -> TwoStage:
    return TwoStage(**SMALL).fit(data)


def test_item_text_by_hand() -> None:
    # three items in 2-d: [1, 0], [0, 1], [1, 1]; mean [2/3, 2/3]; centred [1/3, -2/3], [-2/3, 1/3],
    # [1/3, 1/3] -> unit: [1, -2] / sqrt5, [-2, 1] / sqrt5, [1, 1] / sqrt2
    t = ItemText.from_embeddings(np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]), components=1)
    s5, s2 = np.sqrt(5.0), np.sqrt(2.0)
    np.testing.assert_allclose(t.emb, [[1 / s5, -2 / s5], [-2 / s5, 1 / s5], [1 / s2, 1 / s2]], atol=1e-6)
    # a user who liked item 0 and item 2: profile = unit(mean) -> cosine with item 1
    hist = sp.csr_matrix(np.array([[1.0, 0.0, 1.0]]))
    prof = t.profiles(hist)
    want = (t.emb[0] + t.emb[2]) / np.linalg.norm(t.emb[0] + t.emb[2])
    np.testing.assert_allclose(prof[0], want, atol=1e-6)
    cols = t.columns(prof, np.array([[1, 0]]))
    assert cols.shape == (1, 2, 2) and t.names() == ["text_cos", "text_pc_0"]
    np.testing.assert_allclose(cols[0, :, 0], [want @ t.emb[1], want @ t.emb[0]], atol=1e-6)
    # the first component: items 0 and 1 lie on opposite sides, its largest loading is positive
    assert cols[0, 0, 1] * cols[0, 1, 1] < 0 and np.isclose(t.comps.std(ddof=1), 1.0, atol=1e-6)
    # an empty history: a zero profile, cosine 0
    assert not t.profiles(sp.csr_matrix((1, 3))).any()
    with pytest.raises(ValueError, match="n_items"):
        ItemText.from_embeddings(np.zeros((0, 4)), components=2)


def test_two_stage_rows_carry_the_text_features(text_model: TwoStage, data: Dataset) -> None:
    fz = text_model.featurizer()
    names = fz.dense_names()
    assert names[-4:] == ["text_cos", "text_pc_0", "text_pc_1", "text_pc_2"]
    assert fz.column_scopes()[0][-4:] == ["pair", "item", "item", "item"]
    train = text_model.train_matrix()
    users = np.arange(0, 60, 6, dtype=np.int64)
    built = fz.build(train[users], users)
    t = ItemText.from_embeddings(fake_embeddings(data.n_items), 3)
    for r, u in enumerate(users):
        prof = t.emb[train[u].indices].mean(axis=0)
        prof /= np.linalg.norm(prof)
        items = built.items[r][built.mask[r]]
        np.testing.assert_allclose(built.dense[r, : len(items), -4], t.emb[items] @ prof, atol=1e-5)
        np.testing.assert_allclose(built.dense[r, : len(items), -3:], t.comps[items], atol=1e-6)
    # the users like one block: their own block's items have the higher text cosine
    every = np.arange(data.n_items, dtype=np.int64)
    _, dense, _ = fz.features_for(train[[1]], np.array([1]), every[None, :])
    cos = dense[0, :, -4]
    assert cos[every % 4 == 1].mean() > cos[every % 4 != 1].mean() + 0.5


def test_text_features_off_by_default_and_their_ablation(fake_encoder: list[int], data: Dataset) -> None:
    assert TwoStage.Config().text_features is False
    plain = TwoStage(**{**SMALL, "text_features": False}).fit(data)
    assert plain.text is None and not any(n.startswith("text_") for n in plain.featurizer().dense_names())


def test_text_model_round_trip_and_serving(text_model: TwoStage, data: Dataset, tmp_path: Path) -> None:
    """Saved and loaded: the same scores; served (`TwoStageRanker`, factorised ONNX graph): the
    model's own scores, for known users (memoised), new users with a history and batch feeds."""
    text_model.save(tmp_path / "m")
    assert (tmp_path / "m" / "text" / "text_embeddings.npy").is_file()
    back = TwoStage.load(tmp_path / "m")
    users = np.arange(0, 60, 9)
    np.testing.assert_allclose(back.score_users(users), text_model.score_users(users), atol=1e-5)
    path = back.ranker.export_onnx(tmp_path / "ranker.onnx")  # type: ignore[union-attr]
    rel = MemoryRelease(
        id="text-0001",
        dataset=data,
        retrievers={"itemknn": back.sources["itemknn"], "pop": back.sources["pop"], "ranker": back},
        features=build_features(data),
        ranker_paths={"ncf": path},
    )
    ranker = Pipeline(rel).rankers["ncf"]
    assert isinstance(ranker, TwoStageRanker)
    train = back.train_matrix()
    for u in range(0, 60, 11):
        cands = back.candidates([u])[0]
        recent = np.asarray(train[u].indices, dtype=np.int64)
        own = back.score_users([u])[0][cands]
        for _ in range(2):  # the second call reads the memo
            np.testing.assert_allclose(
                ranker.score(RankContext(u, np.zeros(4, np.int64), recent), cands), own, atol=1e-5
            )
        new = back.score_history(sp.csr_matrix(train[u]))[0][cands]
        np.testing.assert_allclose(
            ranker.score(RankContext(None, np.zeros(4, np.int64), recent), cands), new, atol=1e-5
        )
    # a release whose text features are missing is refused with a clear error
    import shutil

    shutil.rmtree(tmp_path / "m" / "text")
    with pytest.raises(ArtifactError, match="dense features"):
        TwoStage.load(tmp_path / "m")


def test_two_tower_item_tower_reads_the_text(fake_encoder: list[int], data: Dataset, tmp_path: Path) -> None:
    params = {"epochs": 1, "val_fraction": 0.0, "hidden": 16, "dim": 8, "id_dim": 8, "feat_dim": 4}
    tt = TwoTower(**params, text=True).fit(data)
    assert tt.text_emb is not None and tt.net is not None and tt.net.spec["text_dim"] == 6
    emb = tt.item_embeddings()
    # the text input matters: another item's text moves the item's embedding
    tt.text_emb = tt.text_emb[::-1].copy()
    tt._item_emb = None
    assert not np.allclose(tt.item_embeddings(), emb, atol=1e-4)
    tt.text_emb = tt.text_emb[::-1].copy()
    tt._item_emb = None
    tt.save(tmp_path / "tt")
    back = TwoTower.load(tmp_path / "tt")
    np.testing.assert_allclose(back.item_embeddings(), emb, atol=1e-6)
    np.testing.assert_allclose(back.score_users([0, 5]), tt.score_users([0, 5]), atol=1e-5)
    (tmp_path / "tt" / "text_embeddings.npy").unlink()
    with pytest.raises(ArtifactError, match="text embeddings"):
        TwoTower.load(tmp_path / "tt")
    plain = TwoTower(**params).fit(data)
    assert plain.text_emb is None and plain.net is not None and plain.net.text is None


def test_content_retrievers_as_recall_sources(fake_encoder: list[int], data: Dataset, tmp_path: Path) -> None:
    """``content`` and ``content_userknn`` as recall sources of the two-stage model: their scores are
    ranker features, the model saves (without a query encoder: the release's own ``content`` model
    carries it) and loads with the same scores."""
    params = {**SMALL, "text_features": False, "sources": ("itemknn", "content", "content_userknn")}
    # the default source_params (content without its ONNX query encoder) + a small neighbourhood
    small = {"content_userknn": {"neighbours": 5, "min_candidates": 10}}
    params["source_params"] = {**TwoStage.Config().source_params, **small}
    ts = TwoStage(**params).fit(data)
    names = ts.featurizer().dense_names()
    assert {"content_z", "content_userknn_z", "content_flag"} <= set(names)
    # user 1 likes block 1: the content source scores its block's items higher
    sc = ts.sources["content"].score_users([1])[0]
    every = np.arange(data.n_items)
    assert sc[every % 4 == 1].mean() > sc[every % 4 != 1].mean() + 0.5
    # its recall flags are ranker inputs
    built = ts.featurizer().build(ts.train_matrix()[[1]], np.array([1]))
    assert built.dense[0, built.mask[0], names.index("content_flag")].sum() >= 1
    ts.save(tmp_path / "m")
    assert not (tmp_path / "m" / "sources" / "content" / "encoder").exists()
    back = TwoStage.load(tmp_path / "m")
    np.testing.assert_allclose(back.score_users([0, 7]), ts.score_users([0, 7]), atol=1e-5)
