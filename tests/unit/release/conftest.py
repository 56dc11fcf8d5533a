"""Fixtures of the release tests: hand-written releases (no training) and a tiny saved dataset."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from recstack.data.dataset import Dataset
from recstack.release.manifest import (
    DatasetInfo,
    HeadlineInfo,
    Manifest,
    hash_files,
    new_release_id,
)

MakeRelease = Callable[..., Manifest]

_T0 = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)


@pytest.fixture
def make_release(tmp_path: Path) -> MakeRelease:
    """``make_release(ndcg, parent=None, minutes=0)`` writes a small but valid release (one data
    file, a manifest with ``metrics["ease"]["ndcg@10"] = ndcg``) under ``tmp_path / "releases"``."""
    root = tmp_path / "releases"
    counter = {"n": 0}

    def make(
        ndcg: float | None,
        parent: str | None = None,
        *,
        minutes: int | None = None,
        config: dict[str, object] | None = None,
    ) -> Manifest:
        counter["n"] += 1
        created = _T0 + timedelta(minutes=counter["n"] if minutes is None else minutes)
        staging = root / f".tmp-{counter['n']}"
        (staging / "models").mkdir(parents=True)
        (staging / "models" / "weights.npy").write_bytes(f"weights {counter['n']}".encode())
        (staging / "metrics.json").write_text("{}")
        files = hash_files(staging)
        rid = new_release_id(created, counter["n"])
        m = Manifest(
            id=rid,
            created_at=created,
            dataset=DatasetInfo(name="tiny", fingerprint="f" * 64, counts={"users": 3}),
            config=config or {"models": [{"name": "ease"}]},
            package_version="0.1.0",
            parent=parent,
            headline=HeadlineInfo(model="ease", metric="ndcg@10"),
            metrics={} if ndcg is None else {"ease": {"ndcg@10": ndcg}},
            files=files,
        )
        m.write(staging)
        staging.rename(root / rid)
        return m

    return make


@pytest.fixture(scope="session")
def tiny_dataset_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A saved Dataset: 30 users x 20 items, ~300 seeded random interactions (every user >= 4)."""
    rng = np.random.default_rng(7)
    rows = []
    for u in range(30):
        items = rng.choice(20, size=int(rng.integers(4, 15)), replace=False)
        rows += [(u, int(i), float(rng.integers(1, 6)), 1_000 + len(rows)) for i in items]
    df = pl.DataFrame(rows, schema=["user_id", "item_id", "rating", "timestamp"], orient="row")
    ds = Dataset.from_frames("tiny", df)
    return ds.save(tmp_path_factory.mktemp("data") / "tiny")
