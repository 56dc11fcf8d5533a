"""recstack.index: nearest-neighbour search behind one `VectorIndex` contract.

Backends: ``exact`` (numpy), ``faiss`` (HNSW default, IVF-Flat option), ``milvus`` (pymilvus; a
``.db`` file path starts embedded milvus-lite, an http(s)/tcp URI connects to a Milvus server).
The faiss and milvus modules are imported on first use.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from recstack.errors import ArtifactError, ConfigError
from recstack.index.base import IndexConfig, Metric, VectorIndex, pad_score, read_index_meta
from recstack.index.exact import ExactIndex, ExactIndexConfig

if TYPE_CHECKING:
    from recstack.index.faiss import FaissIndex, FaissIndexConfig
    from recstack.index.milvus import MilvusIndex, MilvusIndexConfig

__all__ = [
    "BACKENDS",
    "Backend",
    "ExactIndex",
    "ExactIndexConfig",
    "FaissIndex",
    "FaissIndexConfig",
    "IndexConfig",
    "Metric",
    "MilvusIndex",
    "MilvusIndexConfig",
    "VectorIndex",
    "create_index",
    "index_class",
    "load_index",
    "pad_score",
]

Backend = Literal["exact", "faiss", "milvus"]
BACKENDS: tuple[Backend, ...] = ("exact", "faiss", "milvus")


def index_class(backend: str) -> type[VectorIndex]:
    """The `VectorIndex` subclass of a backend name."""
    if backend == "exact":
        return ExactIndex
    if backend == "faiss":
        from recstack.index.faiss import FaissIndex

        return FaissIndex
    if backend == "milvus":
        from recstack.index.milvus import MilvusIndex

        return MilvusIndex
    raise ConfigError(f"unknown index backend {backend!r}; choose one of {', '.join(BACKENDS)}")


def create_index(backend: str, dim: int, metric: str = "ip", **opts: Any) -> VectorIndex:
    """A new empty index, e.g. ``create_index("faiss", 64, "cosine", ef_search=128)``.

    ``opts`` are fields of the backend's config model (`ExactIndexConfig`, `FaissIndexConfig`,
    `MilvusIndexConfig`); unknown keys raise `ConfigError` naming the allowed ones.
    """
    cls = index_class(backend)
    cfg = cls.config_class.from_config({"dim": dim, "metric": metric, **opts})
    return cls(cfg)


def load_index(path: str | Path, **overrides: Any) -> VectorIndex:
    """Load any index saved with ``VectorIndex.save``; ``overrides`` replace config fields."""
    meta = read_index_meta(path)
    backend = str(meta["backend"])
    try:
        cls = index_class(backend)
    except ConfigError as exc:
        raise ArtifactError(f"{path}: {exc}") from exc
    return cls.load(path, **overrides)


def __getattr__(name: str) -> Any:  # lazy re-exports of the optional backends
    if name in {"FaissIndex", "FaissIndexConfig"}:
        from recstack.index import faiss as _faiss

        return getattr(_faiss, name)
    if name in {"MilvusIndex", "MilvusIndexConfig"}:
        from recstack.index import milvus as _milvus

        return getattr(_milvus, name)
    raise AttributeError(f"module 'recstack.index' has no attribute {name!r}")
