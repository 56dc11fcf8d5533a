"""What serving needs from a release (`ServingRelease`), and an in-memory release for tests.

`recstack.release.load` returns the real `Release`; serving only relies on the attributes of the
`ServingRelease` protocol, so tests (and benchmarks) can serve retrievers fitted on the fly.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from recstack.data.dataset import Dataset
from recstack.errors import NotFoundError
from recstack.features.tables import FeatureTables, build_features
from recstack.models.base import Retriever

__all__ = ["MemoryRelease", "ServingRelease", "fit_memory_release"]


@runtime_checkable
class ServingRelease(Protocol):
    """The read-only surface of a release that serving uses."""

    @property
    def id(self) -> str: ...

    @property
    def dataset(self) -> Dataset: ...

    @property
    def retriever_names(self) -> list[str]: ...

    def retriever(self, name: str) -> Retriever: ...

    @property
    def ranker_paths(self) -> Mapping[str, Path]: ...


@dataclass
class MemoryRelease:
    """A release held in memory: a dataset, fitted retrievers, optional feature tables, rankers
    (ONNX files), item embeddings [n_items, dim] float32 and a user-tower ONNX file."""

    id: str
    dataset: Dataset
    retrievers: dict[str, Retriever] = field(default_factory=dict)
    features: FeatureTables | None = None
    ranker_paths: dict[str, Path] = field(default_factory=dict)
    item_embeddings: npt.NDArray[np.float32] | None = None
    user_tower_path: Path | None = None
    #: the retriever whose item vectors ``item_embeddings`` are (a factor model without a user tower:
    #: serving queries the index with its user factors)
    embeddings_model: str | None = None
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    created_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    path: Path | None = None
    index_path: Path | None = None
    #: the cold-start verdict (`recstack.serving.pipeline.cold_start_policy`; None: not personal)
    cold_start: dict[str, Any] | None = None

    @property
    def retriever_names(self) -> list[str]:
        return list(self.retrievers)

    def retriever(self, name: str) -> Retriever:
        try:
            return self.retrievers[name]
        except KeyError:
            raise NotFoundError(
                f"release {self.id} has no retriever {name!r}; it has {', '.join(self.retrievers) or 'none'}"
            ) from None

    @property
    def manifest(self) -> dict[str, Any]:
        return {"id": self.id, "created_at": self.created_at, "metrics": self.metrics}


def fit_memory_release(
    dataset: Dataset,
    release_id: str = "mem-0001",
    models: tuple[str, ...] = ("pop", "itemknn"),
    **params: dict[str, Any],
) -> MemoryRelease:
    """Fit cheap retrievers (``pop``, ``itemknn``, ``ease``...) on ``dataset`` into a `MemoryRelease`.
    ``params[name]`` overrides a model's hyperparameters."""
    from recstack.models.registry import create

    fitted = {name: create(name, **params.get(name, {})).fit(dataset) for name in models}
    return MemoryRelease(id=release_id, dataset=dataset, retrievers=fitted, features=build_features(dataset))
