"""Shared fixtures and markers. ``pytest.mark.ml100k``: the test reads MovieLens 100K from the data
directories (`recstack.data.paths`: $RECSTACK_DATA_DIR, ./data, ../shared/data, /work/shared/data);
missing, it is skipped locally and fails in CI (CI=true)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

pytest_plugins = ["fixtures_services"]  # redis_url, redis_client, redis_prefix, postgres_dsn

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def require_service(name: str, reason: str) -> None:
    """Skip locally when a service is missing; in CI a missing service is a failure."""
    if IN_CI:
        pytest.fail(f"{name} is required in CI: {reason}")
    pytest.skip(f"{name} not available: {reason}")


def ml100k_path() -> Path:
    """ML-100K from the data directories; skipped when missing locally, a failure in CI."""
    from recstack.data.paths import find_dataset
    from recstack.errors import NotFoundError

    try:
        return find_dataset("ml-100k")
    except NotFoundError as exc:
        require_service("ml-100k", str(exc))
        raise


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("ml100k") is not None:
        ml100k_path()


@pytest.fixture(scope="session")
def text_cache_dir(request: pytest.FixtureRequest) -> str:
    """The text-embedding / ONNX-encoder cache of `recstack.text`, kept in pytest's cache directory
    so that the encoder is exported to ONNX once (about 10 s) and reused by every test and run."""
    return str(request.config.cache.mkdir("recstack-text"))
