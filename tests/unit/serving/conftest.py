"""Tiny seeded catalogue for the serving tests: 12 items, 20 users, hand-checkable popularity.

Items 100..111 (index 0..11): genre cycle Action, Comedy, Drama (index % 3), year 1990 + index,
title "Movie <index>". User u (ids 1..20, index u-1) interacted with items (u-1) % 12, u % 12 and
(u+2) % 12 at times 1000*u + 0/1/2 (so the last is the most recent); users 11..20 also with items 0
and 1. Popularity (distinct users): items 0 and 1 are the most popular.

Also shared: the "blocks" data and a small two-stage model fitted on it (`blocks_two_stage`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import polars as pl
import pytest
from onnx import TensorProto, helper

from blocks_data import make_blocks_dataset
from recstack.data.dataset import Dataset
from recstack.features.tables import build_features
from recstack.models.ranking.two_stage import TwoStage
from recstack.serving._release import MemoryRelease, fit_memory_release

N_ITEMS = 12
GENRES = ("Action", "Comedy", "Drama")


def make_dataset() -> Dataset:
    rows: list[tuple[int, int, float, int]] = []
    for u in range(1, 21):
        for j, it in enumerate(((u - 1) % 12, u % 12, (u + 2) % 12)):
            rows.append((u, 100 + it, float(1 + (u + it) % 5), 1000 * u + j))
        if u > 10:
            for it in (0, 1):
                if it not in ((u - 1) % 12, u % 12, (u + 2) % 12):
                    rows.append((u, 100 + it, 4.0, 1000 * u - 10 + it))
    inter = pl.DataFrame(rows, schema=["user_id", "item_id", "rating", "timestamp"], orient="row")
    items = pl.DataFrame(
        {
            "item_id": [100 + i for i in range(N_ITEMS)],
            "title": [f"Movie {i}" for i in range(N_ITEMS)],
            "year": [1990 + i for i in range(N_ITEMS)],
            "genres": [[GENRES[i % 3]] for i in range(N_ITEMS)],
        }
    )
    users = pl.DataFrame(
        {
            "user_id": list(range(1, 21)),
            "age": [20 + (u % 3) * 15 for u in range(1, 21)],
            "gender": ["M" if u % 2 else "F" for u in range(1, 21)],
            "occupation": ["student" if u <= 10 else "engineer" for u in range(1, 21)],
            "zip_code": [f"{u % 10}0000" for u in range(1, 21)],
        }
    )
    return Dataset.from_frames("tiny", inter, users, items)


def _save(model: onnx.ModelProto, path: Path) -> Path:
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


@pytest.fixture(scope="session")
def blocks_two_stage(tmp_path_factory: pytest.TempPathFactory) -> tuple[MemoryRelease, TwoStage, Path]:
    """(release, model, ranker ONNX path): a two-stage NCF over itemknn + pop on the blocks data,
    served from a `MemoryRelease` whose ``ncf`` ranker is the model's own ONNX export."""
    ds = make_blocks_dataset()
    ts = TwoStage(
        ranker="ncf",
        sources=("itemknn", "pop"),
        holdout="random",  # the blocks data is in time user by user: every user gets a labelled list
        per_source=8,
        random_negatives=4,
        ranker_grid=({},),
        ranker_params={"epochs": 2, "num_threads": 1},
    ).fit(ds)
    assert ts.ranker is not None
    path = ts.ranker.export_onnx(tmp_path_factory.mktemp("blocks") / "ranker.onnx")
    rel = MemoryRelease(
        id="blocks-0001",
        dataset=ds,
        retrievers={"itemknn": ts.sources["itemknn"], "pop": ts.sources["pop"], "ranker": ts},
        features=build_features(ds),
        ranker_paths={"ncf": path},
    )
    return rel, ts, path


def linear_ranker(path: Path, sign: float) -> Path:
    """ONNX ranker: score = sign * iid (iid = item index + 1) -> ``neg`` prefers low item indices."""
    iid = helper.make_tensor_value_info("iid", TensorProto.INT64, ["n"])
    out = helper.make_tensor_value_info("score", TensorProto.FLOAT, ["n"])
    nodes = [
        helper.make_node("Cast", ["iid"], ["f"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["f", "w"], ["score"]),
    ]
    w = helper.make_tensor("w", TensorProto.FLOAT, [], [sign])
    graph = helper.make_graph(nodes, "ranker", [iid], [out], initializer=[w])
    return _save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)


def const_user_tower(path: Path, max_history: int = 4) -> Path:
    """ONNX user tower: every user embeds to [1, 0] (inputs are accepted and ignored but one)."""
    uid = helper.make_tensor_value_info("uid", TensorProto.INT64, ["b"])
    ucat = helper.make_tensor_value_info("ucat", TensorProto.INT64, ["b", 4])
    hist = helper.make_tensor_value_info("hist", TensorProto.INT64, ["b", max_history])
    out = helper.make_tensor_value_info("user_emb", TensorProto.FLOAT, ["b", 2])
    nodes = [
        helper.make_node("Cast", ["uid"], ["uf"], to=TensorProto.FLOAT),
        helper.make_node("Unsqueeze", ["uf", "axis"], ["u2"]),
        helper.make_node("Mul", ["u2", "zero"], ["z"]),
        helper.make_node("Add", ["z", "base"], ["user_emb"]),
    ]
    inits = [
        helper.make_tensor("axis", TensorProto.INT64, [1], [1]),
        helper.make_tensor("zero", TensorProto.FLOAT, [], [0.0]),
        helper.make_tensor("base", TensorProto.FLOAT, [1, 2], [1.0, 0.0]),
    ]
    graph = helper.make_graph(nodes, "tower", [uid, ucat, hist], [out], initializer=inits)
    return _save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)


@pytest.fixture(scope="session")
def tiny_dataset() -> Dataset:
    return make_dataset()


@pytest.fixture(scope="session")
def tiny_release(tiny_dataset: Dataset) -> MemoryRelease:
    """pop + itemknn, no ranker, no two-tower."""
    return fit_memory_release(tiny_dataset, "tiny-a", ("pop", "itemknn"))


@pytest.fixture(scope="session")
def full_release(tiny_dataset: Dataset, tmp_path_factory: pytest.TempPathFactory) -> MemoryRelease:
    """pop + itemknn + two rankers (``neg``, ``pos``) + a two-tower (constant user tower; item i
    embeds to [i / 12, 1], so the ANN source ranks high item indices first)."""
    d = tmp_path_factory.mktemp("onnx")
    rel = fit_memory_release(tiny_dataset, "tiny-full", ("pop", "itemknn"))
    rel.ranker_paths = {"neg": linear_ranker(d / "neg.onnx", -1.0), "pos": linear_ranker(d / "pos.onnx", 1.0)}
    emb = np.stack([np.arange(N_ITEMS) / N_ITEMS, np.ones(N_ITEMS)], axis=1).astype(np.float32)
    rel.item_embeddings = emb
    rel.user_tower_path = const_user_tower(d / "user_tower.onnx")
    return rel
