"""recstack.store: batched feature reads and user histories behind one `FeatureStore` contract.

Backends: ``embedded`` (numpy arrays in process, the default) and ``redis`` (binary-packed rows,
one round trip per batch, keys namespaced by release id, atomic ``current`` pointer).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from recstack.data.dataset import Dataset
from recstack.errors import ConfigError, InvalidArgumentError
from recstack.store.base import (
    EventKind,
    EventLimits,
    FeatureArrays,
    FeatureStore,
    History,
    HistoryArrays,
    UserKey,
    build_histories,
    encode_table,
)
from recstack.store.embedded import EmbeddedFeatureStore

__all__ = [
    "EmbeddedFeatureStore",
    "EventKind",
    "EventLimits",
    "FeatureArrays",
    "FeatureStore",
    "History",
    "HistoryArrays",
    "UserKey",
    "build_histories",
    "encode_table",
    "from_release",
    "open_store",
]


def from_release(release: Any) -> EmbeddedFeatureStore:
    """An embedded store for a release object (``.id``, ``.dataset``, optional ``.features``).

    With feature tables (`recstack.features.FeatureTables`), their arrays are the features (an array
    whose first dim is ``n_users`` is a user feature, ``n_items`` an item feature; names containing
    ``user`` break a tie); without, the dataset's users / items tables are encoded.
    """
    rid = str(getattr(release, "id", None) or release.manifest.id)
    ds: Dataset = release.dataset
    features = getattr(release, "features", None)
    if features is None or not dataclasses.is_dataclass(features):
        return EmbeddedFeatureStore.from_dataset(rid, ds)
    users: FeatureArrays = {}
    items: FeatureArrays = {}
    for f in dataclasses.fields(features):
        arr = getattr(features, f.name)
        if not isinstance(arr, np.ndarray) or arr.ndim == 0:
            continue
        rows = arr.shape[0]
        is_user = rows == ds.n_users and (rows != ds.n_items or "user" in f.name or f.name == "activity")
        if is_user:
            users[f.name] = arr
        elif rows == ds.n_items:
            items[f.name] = arr
    vocabs = dict(getattr(features, "vocabularies", {}) or {})
    hist = build_histories(ds.interactions, ds.n_users)
    return EmbeddedFeatureStore(rid, users, items, hist, vocabs, n_users=ds.n_users, n_items=ds.n_items)


def open_store(
    backend: str = "embedded",
    *,
    release: Any = None,
    release_id: str | None = None,
    dataset: Dataset | None = None,
    users: pl.DataFrame | None = None,
    items: pl.DataFrame | None = None,
    interactions: pl.DataFrame | None = None,
    path: str | Path | None = None,
    url: str = "redis://127.0.0.1:6379/0",
    prefix: str = "recstack",
    make_current: bool = True,
    limits: EventLimits | None = None,
    timeout: float = 0.5,
    retries: int = 1,
) -> FeatureStore:
    """Open or build a feature store.

    Sources, first match wins: ``path`` (a directory written by `EmbeddedFeatureStore.save`),
    ``users`` + ``items`` + ``interactions`` tables with ``release_id``, ``dataset`` with
    ``release_id``, a ``release`` object (`from_release`). ``backend="redis"`` attaches to the
    release when Redis already holds it, else bulk-loads it (and makes it current when
    ``make_current``); with no source it opens ``release_id`` or the current release. Of several
    processes opening the same release at once, one loads it and the others wait for it
    (`recstack.store.redis.ensure_loaded`); the store keeps the source, to load the release again
    if Redis loses it. ``limits`` bound the online events kept; ``timeout`` (seconds per Redis
    reply) and ``retries`` configure the Redis client (`recstack.store.redis.connect`).
    """
    if backend not in ("embedded", "redis"):
        raise ConfigError(f"unknown store backend {backend!r}; choose embedded or redis")

    def build() -> EmbeddedFeatureStore | None:
        if path is not None:
            return EmbeddedFeatureStore.load(path)
        if users is not None or items is not None or interactions is not None:
            if users is None or items is None or interactions is None or release_id is None:
                raise InvalidArgumentError("pass users, items, interactions and release_id together")
            return EmbeddedFeatureStore.from_tables(release_id, users, items, interactions)
        if dataset is not None:
            if release_id is None:
                raise InvalidArgumentError("building from a dataset needs release_id")
            return EmbeddedFeatureStore.from_dataset(release_id, dataset)
        if release is not None:
            return from_release(release)
        return None

    if backend == "embedded":
        store = build()
        if store is None:
            raise InvalidArgumentError("the embedded store needs path, tables, dataset or release")
        if limits is not None:
            store.limits = limits
        return store

    from recstack.store import redis as redis_store

    client = redis_store.connect(url, timeout=timeout, retries=retries)
    rid = release_id
    if rid is None and release is not None:
        rid = str(getattr(release, "id", None) or release.manifest.id)
    has_source = path is not None or dataset is not None or release is not None or interactions is not None
    if rid is None or not has_source:
        return redis_store.RedisFeatureStore(client, rid, prefix=prefix, limits=limits)

    def source() -> tuple[Any, Any, Any, Any]:
        """The release's arrays, built when a load needs them (not kept in memory between loads)."""
        b = build()
        assert b is not None
        u, i, h = b.arrays()
        return u, i, h, b.vocabularies

    redis_store.ensure_loaded(client, rid, source, prefix=prefix)
    if make_current and redis_store.current_release(client, prefix) != rid:
        redis_store.set_current(client, rid, prefix)
    return redis_store.RedisFeatureStore(client, rid, prefix=prefix, limits=limits, source=source)
