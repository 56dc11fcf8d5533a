"""Items added online reach every experiment arm (`OnlineRuntime`, `Pipeline.follow_items`): an
arm with its own pipeline settings over the serving release, and an arm on another release, whether
the arm was built before or after the item was added, with or without an event log."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from movies_data import MOVIES, WordEncoder, movie_dataset
from recstack.experiments import ExperimentConfig, ExperimentStore
from recstack.serving import pipeline as pipeline_mod
from recstack.serving._catalog import Catalog
from recstack.serving._experiments import OnlineRuntime
from recstack.serving._release import MemoryRelease, fit_memory_release
from recstack.serving._search import TextSearch
from recstack.serving._state import ServingState, build_state
from recstack.serving.pipeline import NEW_ITEMS_SOURCE, RecRequest
from recstack.serving.settings import ServingSettings

ROBOT = {"item_id": 7, "title": "Robot Wars", "year": 2024, "genres": ["Sci-Fi"], "text": "Droids in space."}
DROID = {"item_id": 8, "title": "Droid Race", "year": 2025, "genres": ["Sci-Fi"], "text": "Robots race."}
#: an arm with its own pipeline settings: item-kNN recall without a ranker
OWN_SETTINGS = {
    "sources": [{"name": "itemknn", "kind": "history", "quota": 50}],
    "rerank": {"genre_cap": None},
}


def _word_search(release: Any, catalog: Catalog) -> TextSearch:
    """Every release's text search with the bag-of-words stand-in of the ONNX encoder."""
    enc = WordEncoder()
    texts = [f"{m[1]} {' '.join(m[4])} {'droids' if m[0] == 1 else ''}" for m in MOVIES]
    return TextSearch(catalog, enc.encode(texts)[: catalog.n_items], enc)


@dataclass
class Holder:
    """What `OnlineRuntime` reads of the server's `StateHolder`."""

    current: ServingState
    releases: dict[str, MemoryRelease]
    settings: ServingSettings = field(default_factory=ServingSettings)
    config: Any = None
    event_log: Any = None

    def loader(self, target: str) -> MemoryRelease:
        return self.releases[target]


@pytest.fixture
def releases(monkeypatch: pytest.MonkeyPatch) -> dict[str, MemoryRelease]:
    monkeypatch.setattr(pipeline_mod, "open_text_search", _word_search)
    ds = movie_dataset()
    return {r: fit_memory_release(ds, r, ("pop", "itemknn")) for r in ("movies-a", "movies-b")}


def _runtime(tmp_path: Path, releases: dict[str, MemoryRelease]) -> tuple[OnlineRuntime, ServingState]:
    base = build_state(releases["movies-a"], ServingSettings())
    store = ExperimentStore(tmp_path / "experiments")
    store.create(
        ExperimentConfig.from_config(
            {
                "name": "arms",
                "salt": "s",
                "arms": [
                    {"name": "own", "share": 1, "model": "recall", "pipeline": OWN_SETTINGS},
                    {"name": "other", "share": 1, "release": "movies-b", "model": "recall"},
                    {"name": "both", "share": 1, "release": "movies-b", "pipeline": OWN_SETTINGS},
                    {"name": "default", "share": 1},
                ],
            }
        )
    )
    return OnlineRuntime(holder=Holder(base, releases), store=store), base


def _recommended(runtime: OnlineRuntime, arm: str, item_id: int) -> tuple[bool, bool]:
    """(the arm's catalogue has the item, the arm recommends it to a Star Wars fan through the
    ``new_items`` source)."""
    assert runtime.active is not None
    pipe = runtime.active.arms[arm].pipeline
    known = pipe.catalog.dataset.item_vocab.get(item_id) is not None
    res = pipe.recommend(RecRequest(liked_items=[1], k=6, model="recall"))
    ids = [pipe.catalog.item_ids[i] for i in res.items.tolist()]
    shown = item_id in ids and NEW_ITEMS_SOURCE in res.sources[ids.index(item_id)]
    return known, shown


def test_items_added_before_and_after_the_arms_are_built_reach_every_arm(
    tmp_path: Path, releases: dict[str, MemoryRelease]
) -> None:
    runtime, base = _runtime(tmp_path, releases)
    base.pipeline.add_items([ROBOT])  # before the experiment's arms are built
    runtime.refresh()
    assert runtime.active is not None and runtime.error is None
    arms = runtime.active.arms
    assert arms["own"].pipeline is not base.pipeline and arms["other"].state is not base
    assert arms["both"].pipeline is not arms["other"].pipeline
    base.pipeline.add_items([DROID])  # after: the API's POST /v1/items and the log's item records
    for arm in ("own", "other", "both", "default"):
        for item in (7, 8):
            assert _recommended(runtime, arm, item) == (True, True), (arm, item)
        pipe = arms[arm].pipeline
        # searchable by title and meaning, similar to Star Wars by text, in every arm
        hit = pipe.text_search.search("droid race", 1)
        assert [pipe.catalog.item_ids[i] for i in hit.items.tolist()] == [8]
        ids, _, _ = pipe.similar(pipe.catalog.item_index(7), 2)
        assert 0 in ids.tolist()
    # the arms on the serving release share its catalogue; the other release got its own items
    assert arms["own"].pipeline.catalog is base.pipeline.catalog
    other = arms["other"].pipeline
    assert other.catalog is not base.pipeline.catalog and other.catalog.n_items == 8
    assert arms["both"].pipeline.catalog is other.catalog
    # idempotent: adding again changes nothing anywhere
    base.pipeline.add_items([ROBOT, DROID])
    assert other.catalog.n_items == 8 and base.pipeline.catalog.n_items == 8
    assert base.pipeline.online_items()[0] == ROBOT


def test_an_arm_pipeline_keeps_the_models_on_release_items(
    tmp_path: Path, releases: dict[str, MemoryRelease]
) -> None:
    runtime, base = _runtime(tmp_path, releases)
    base.pipeline.add_items([ROBOT])
    runtime.refresh()
    assert runtime.active is not None
    own = runtime.active.arms["own"].pipeline
    # built over the release's items: item-kNN scores stay over the 6 release items, the added
    # item is an online item of the arm too (it gets a ranker proxy, never a model score)
    assert own.base_n_items == 6 and own.catalog.n_items == 7
    res = own.recommend(RecRequest(liked_items=[7, 1], k=6))
    assert 6 not in res.items.tolist() and res.history == 1
    assert np.all(res.items < 7)
