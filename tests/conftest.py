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
