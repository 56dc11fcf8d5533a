"""Shared fixtures of the batch tests: a tiny synthetic dataset, an in-memory release of it, and the
same data built into a real release directory (pop, itemknn, ease; no evaluation) once per session."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from recstack.data.dataset import Dataset
from recstack.data.synthetic import synthesize
from recstack.serving._release import MemoryRelease, fit_memory_release

N_USERS, N_ITEMS, N_INTER = 200, 60, 3000


@pytest.fixture(scope="session")
def batch_dataset() -> Dataset:
    return synthesize(N_USERS, N_ITEMS, N_INTER, seed=11)


@pytest.fixture(scope="session")
def mem_release(batch_dataset: Dataset) -> MemoryRelease:
    return fit_memory_release(batch_dataset, "mem-batch", models=("pop", "itemknn", "ease"))


@pytest.fixture(scope="session")
def built_release(tmp_path_factory: pytest.TempPathFactory, batch_dataset: Dataset) -> tuple[Path, str]:
    """(releases dir, release id) of a release built by `recstack.release.build` from the data."""
    from recstack.release.build import BuildConfig, build

    base = tmp_path_factory.mktemp("batch-release")
    data = batch_dataset.save(base / "data")
    cfg = BuildConfig.from_config(
        {
            "dataset": {"source": str(data)},
            "evaluation": {"enabled": False},
            "models": [{"name": "pop"}, {"name": "itemknn"}, {"name": "ease"}],
            "index": {"backend": "none"},
        }
    )
    root = base / "releases"
    manifest = build(cfg, root)
    return root, manifest.id


def pg_clean(dsn: str) -> None:
    """Drop every batch table and the pointer table of the test database."""
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = current_schema() AND (tablename LIKE "
            "'%user_recs_%' OR tablename LIKE '%pair_recs_%' OR tablename = 'recstack_releases')"
        ).fetchall()
        for (t,) in rows:
            conn.execute(f"DROP TABLE IF EXISTS {t}")


@pytest.fixture
def clean_postgres(postgres_dsn: str) -> Iterator[str]:
    """The test database's DSN, without batch tables before and after the test."""
    pg_clean(postgres_dsn)
    yield postgres_dsn
    pg_clean(postgres_dsn)
