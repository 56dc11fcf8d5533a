"""Shared fixtures: tiny seeded synthetic data for unit tests, the bundled ML-100K for integration."""

from __future__ import annotations

import os

import pytest

pytest_plugins = ["fixtures_services"]  # redis_url, redis_client, redis_prefix, postgres_dsn

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def require_service(name: str, reason: str) -> None:
    """Skip locally when a service is missing; in CI a missing service is a failure."""
    if IN_CI:
        pytest.fail(f"{name} is required in CI: {reason}")
    pytest.skip(f"{name} not available: {reason}")


@pytest.fixture(scope="session")
def text_cache_dir(request: pytest.FixtureRequest) -> str:
    """The text-embedding / ONNX-encoder cache of `recstack.text`, kept in pytest's cache directory
    so that the encoder is exported to ONNX once (about 10 s) and reused by every test and run."""
    return str(request.config.cache.mkdir("recstack-text"))
