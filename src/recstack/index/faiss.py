"""faiss backend: HNSW (default) or IVF-Flat, wrapped in an ``IndexIDMap`` for external int64 ids.

Cosine is inner product over L2-normalised vectors. Saved with ``faiss.write_index`` (no pickle).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar, Literal, Self

import faiss
import numpy as np
import numpy.typing as npt
from pydantic import Field

from recstack.errors import ArtifactError, InvalidArgumentError
from recstack.index.base import IndexConfig, VectorIndex

__all__ = ["FaissIndex", "FaissIndexConfig"]

_INDEX_FILE = "index.faiss"
_IDS_FILE = "ids.npy"


class FaissIndexConfig(IndexConfig):
    """faiss index parameters.

    ``kind="hnsw"``: graph index; ``m`` links per node, ``ef_construction`` build beam width,
    ``ef_search`` query beam width (recall vs speed; raised to ``k`` automatically).
    ``kind="ivf_flat"``: ``nlist`` k-means cells trained on the first ``add`` (which needs at least
    ``nlist`` vectors), ``nprobe`` cells visited per query.
    """

    backend: Literal["faiss"] = "faiss"
    kind: Literal["hnsw", "ivf_flat"] = "hnsw"
    m: int = Field(default=32, ge=2, le=256)
    ef_construction: int = Field(default=128, ge=1)
    ef_search: int = Field(default=64, ge=1)
    nlist: int = Field(default=1024, ge=1)
    nprobe: int = Field(default=16, ge=1)
    threads: int | None = Field(default=None, ge=1, description="OpenMP threads (None: faiss default)")


class FaissIndex(VectorIndex):
    """faiss HNSW / IVF-Flat index with external ids."""

    backend: ClassVar[str] = "faiss"
    config_class: ClassVar[type[IndexConfig]] = FaissIndexConfig
    config: FaissIndexConfig

    def __init__(self, config: FaissIndexConfig, _index: Any = None) -> None:
        super().__init__(config)
        inner: Any
        faiss_metric = faiss.METRIC_L2 if config.metric == "l2" else faiss.METRIC_INNER_PRODUCT
        if _index is not None:
            self._index = _index
        elif config.kind == "hnsw":
            inner = faiss.IndexHNSWFlat(config.dim, config.m, faiss_metric)
            inner.hnsw.efConstruction = config.ef_construction
            self._index = faiss.IndexIDMap(inner)
        else:
            quantizer = faiss.IndexFlat(config.dim, faiss_metric)
            inner = faiss.IndexIVFFlat(quantizer, config.dim, config.nlist, faiss_metric)
            self._quantizer = quantizer  # keep the python object alive with the index
            self._index = faiss.IndexIDMap(inner)
        self._ids: npt.NDArray[np.int64] = np.empty(0, dtype=np.int64)
        self._id_chunks: list[npt.NDArray[np.int64]] = []
        self._apply_search_params()

    @property
    def faiss_index(self) -> Any:
        """The underlying ``faiss.IndexIDMap`` (for tuning; mutate with care)."""
        return self._index

    def _inner(self) -> Any:
        return faiss.downcast_index(self._index.index)

    def _apply_search_params(self) -> None:
        inner = self._inner()
        if self.config.kind == "hnsw":
            inner.hnsw.efSearch = self.config.ef_search
        else:
            inner.nprobe = self.config.nprobe

    def set_search_params(self, *, ef_search: int | None = None, nprobe: int | None = None) -> None:
        """Change query-time parameters (HNSW ``ef_search`` or IVF ``nprobe``) in place."""
        updates: dict[str, Any] = {}
        if ef_search is not None:
            updates["ef_search"] = ef_search
        if nprobe is not None:
            updates["nprobe"] = nprobe
        self.config = FaissIndexConfig.from_config({**self.config.dump_config(), **updates})
        self._apply_search_params()

    def __len__(self) -> int:
        return int(self._index.ntotal)

    def _all_ids(self) -> npt.NDArray[np.int64]:
        if self._id_chunks:
            self._ids = np.sort(np.concatenate([self._ids, *self._id_chunks]))
            self._id_chunks.clear()
        return self._ids

    def _contains_any(self, ids: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
        return ids[np.isin(ids, self._all_ids())]

    def _add(self, ids: npt.NDArray[np.int64], vectors: npt.NDArray[np.float32]) -> None:
        with _threads(self.config.threads):
            if not self._index.is_trained:
                if vectors.shape[0] < self.config.nlist:
                    raise InvalidArgumentError(
                        f"the first add to an IVF index trains {self.config.nlist} cells and needs at least "
                        f"that many vectors, got {vectors.shape[0]}; add more at once or lower nlist"
                    )
                self._index.train(vectors)
            self._index.add_with_ids(vectors, ids)
        self._id_chunks.append(ids.copy())

    def _search(
        self, queries: npt.NDArray[np.float32], k: int
    ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
        with _threads(self.config.threads):
            if self.config.kind == "hnsw":
                # per-call parameters (thread-safe): the beam must be at least k wide
                params = faiss.SearchParametersHNSW()  # type: ignore[attr-defined]
                params.efSearch = max(self.config.ef_search, k)
                d, i = self._index.search(queries, k, params=params)
            else:
                ivf = faiss.SearchParametersIVF()
                ivf.nprobe = self.config.nprobe
                d, i = self._index.search(queries, k, params=ivf)
        return d.astype(np.float32, copy=False), i.astype(np.int64, copy=False)

    def _save(self, directory: Path) -> dict[str, Any]:
        faiss.write_index(self._index, str(directory / _INDEX_FILE))
        np.save(directory / _IDS_FILE, self._all_ids(), allow_pickle=False)
        return {}

    @classmethod
    def _load(cls, directory: Path, config: IndexConfig, meta: dict[str, Any]) -> Self:
        assert isinstance(config, FaissIndexConfig)
        path = directory / _INDEX_FILE
        if not path.is_file():
            raise ArtifactError(f"{path}: faiss index file missing")
        try:
            raw = faiss.read_index(str(path))
        except RuntimeError as exc:
            raise ArtifactError(f"{path}: cannot read faiss index: {exc}") from exc
        if raw.d != config.dim:
            raise ArtifactError(f"{path}: index dimension {raw.d} != configured {config.dim}")
        idx = cls(config, _index=raw)  # read_index returns the owning, downcast object
        idx._ids = np.load(directory / _IDS_FILE, allow_pickle=False).astype(np.int64, copy=False)
        return idx


@contextmanager
def _threads(n: int | None) -> Iterator[None]:
    """Set faiss' (process-wide) OpenMP thread count for a block; None leaves it unchanged."""
    if n is None:
        yield
        return
    old = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(n)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(old)
