"""Fixtures of the event tests: a tiny saved dataset (integer ids 0..29 x 0..19) to build on."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest

from recstack.data.dataset import Dataset


@pytest.fixture(scope="session")
def tiny_dataset_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """30 users x 20 items, ~300 seeded random interactions (every user >= 4), timestamps 1000+."""
    rng = np.random.default_rng(7)
    rows = []
    for u in range(30):
        items = rng.choice(20, size=int(rng.integers(4, 15)), replace=False)
        rows += [(u, int(i), float(rng.integers(1, 6)), 1_000 + len(rows)) for i in items]
    df = pl.DataFrame(rows, schema=["user_id", "item_id", "rating", "timestamp"], orient="row")
    return Dataset.from_frames("tiny", df).save(tmp_path_factory.mktemp("data") / "tiny")
