"""Fits shared inside a build (issue 23): `fit` a registry model, and inside `shared_fits()` get back
the model already fitted with the same class and the same full config on the same `Dataset` object.

A release build fits its table models on each fold's train part, and the two-stage model fits its
recall sources on the same Dataset object again (`TwoStageConfig.refit_sources`): when a table model
and a source have the same config (the default pipeline's ``[large]`` table sees to it for time_ease
and ALS), one fit serves both.

The key is (model class, canonical JSON of the full config, ``id(dataset)``); an entry holds weak
references to the dataset (checked against the given one: an id is reused once its object is gone)
and to the model. So the cache never keeps a model or a dataset alive: a fit is shared while the
build still holds the fitted model (a model the build dropped is fitted again). A model is shared as
it is: callers must not mutate a fitted model (the build and the two-stage model only score and save
them). The cache is a context variable: it exists only inside the ``with`` block, in the thread (or
task) that entered it; fits elsewhere (Ray workers, other threads) are plain fits. Outside
`shared_fits()` `fit` is ``create(name, **params).fit(dataset)``.
"""

from __future__ import annotations

import json
import logging
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from recstack.data.dataset import Dataset
from recstack.models.base import Retriever

__all__ = ["SharedFits", "fit", "shared_fits"]

log = logging.getLogger(__name__)

_Key = tuple[str, str, int]


def _key(model: Retriever, dataset: Dataset) -> _Key:
    cls = type(model)
    config = json.dumps(model.config.dump_config(), sort_keys=True, separators=(",", ":"))
    return f"{cls.__module__}.{cls.__qualname__}", config, id(dataset)


@dataclass
class SharedFits:
    """The fits of one `shared_fits()` block. ``reused``: the registry names of the fits served from
    it, in order (one entry per reuse)."""

    _entries: dict[_Key, tuple[weakref.ref[Dataset], weakref.ref[Retriever]]] = field(default_factory=dict)
    reused: list[str] = field(default_factory=list)

    def get(self, model: Retriever, dataset: Dataset) -> Retriever | None:
        """The fitted model of ``model``'s class and config on ``dataset`` (this very object), else None."""
        key = _key(model, dataset)
        entry = self._entries.get(key)
        if entry is None:
            return None
        ds, fitted = entry[0](), entry[1]()
        if ds is not dataset or fitted is None:
            del self._entries[key]
            return None
        return fitted

    def put(self, model: Retriever, dataset: Dataset) -> None:
        """Record ``model``, fitted on ``dataset``."""
        # drop the entries whose dataset or model is gone (ids of dead objects may come back)
        dead = [k for k, (d, m) in self._entries.items() if d() is None or m() is None]
        for k in dead:
            del self._entries[k]
        self._entries[_key(model, dataset)] = (weakref.ref(dataset), weakref.ref(model))

    def __len__(self) -> int:
        return sum(d() is not None and m() is not None for d, m in self._entries.values())


_ACTIVE: ContextVar[SharedFits | None] = ContextVar("recstack_shared_fits", default=None)


@contextmanager
def shared_fits() -> Iterator[SharedFits]:
    """Share fits while the block runs (`fit`); nested blocks use the outermost one's fits."""
    active = _ACTIVE.get()
    if active is not None:
        yield active
        return
    cache = SharedFits()
    token = _ACTIVE.set(cache)
    try:
        yield cache
    finally:
        _ACTIVE.reset(token)


def fit(name: str, dataset: Dataset, **params: Any) -> tuple[Retriever, bool]:
    """``create(name, **params)`` fitted on ``dataset`` -> (model, reused). Inside `shared_fits()`,
    the model already fitted there with the same class and full config on this ``dataset`` object
    when there is one (``reused`` True: the very same object, not a copy)."""
    from recstack.models.registry import create

    model = create(name, **params)
    cache = _ACTIVE.get()
    if cache is None:
        return model.fit(dataset), False
    done = cache.get(model, dataset)
    if done is not None:
        cache.reused.append(name)
        log.info("shared fit: %s %s reused (same config, same dataset)", name, model.params())
        return done, True
    model.fit(dataset)
    cache.put(model, dataset)
    return model, False
