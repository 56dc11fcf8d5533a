"""The `VectorIndex` contract shared by every nearest-neighbour backend.

Conventions (every backend):

- ids are int64 and >= 0, unique within an index; ``-1`` is reserved for padding.
- vectors and queries are float32 ``[n, dim]`` (other float dtypes are converted).
- ``search`` returns ``(scores[n, k] float32, ids[n, k] int64)``, best first. When fewer than ``k``
  vectors exist the tail is padded with id ``-1`` and the worst possible score.
- metric ``"ip"``: score = inner product, higher is better, padding ``-inf``.
- metric ``"cosine"``: score = cosine similarity in [-1, 1], higher is better, padding ``-inf``
  (vectors are L2-normalised on ``add`` and queries on ``search``; a zero vector stays zero).
- metric ``"l2"``: score = **squared** Euclidean distance, **lower is better**, padding ``+inf``.
- ``save(path)`` writes a directory with ``index.json`` (backend + config) and backend files
  (``.npy`` arrays or a faiss index file; never pickle). `load_index` dispatches on ``index.json``.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar, Literal, Self

import numpy as np
import numpy.typing as npt
from pydantic import Field

from recstack.config import ComponentConfig
from recstack.errors import ArtifactError, InvalidArgumentError

__all__ = [
    "INDEX_FORMAT",
    "IndexConfig",
    "Metric",
    "VectorIndex",
    "pad_score",
    "read_index_meta",
]

Metric = Literal["ip", "cosine", "l2"]
INDEX_FORMAT = 1
_META_FILE = "index.json"


class IndexConfig(ComponentConfig):
    """Configuration common to every backend: dimension and metric."""

    dim: int = Field(gt=0, description="vector dimension")
    metric: Metric = "ip"


def pad_score(metric: Metric) -> float:
    """The score used for padded (id -1) slots: the worst possible score for ``metric``."""
    return float("inf") if metric == "l2" else float("-inf")


def read_index_meta(path: str | Path) -> dict[str, Any]:
    """Read ``index.json`` of a saved index directory."""
    meta_path = Path(path) / _META_FILE
    if not meta_path.is_file():
        raise ArtifactError(f"{meta_path}: not a saved recstack index (index.json missing)")
    try:
        meta = json.loads(meta_path.read_text())
    except json.JSONDecodeError as exc:
        raise ArtifactError(f"{meta_path}: malformed JSON: {exc}") from exc
    if not isinstance(meta, dict) or "backend" not in meta or "config" not in meta:
        raise ArtifactError(f"{meta_path}: expected keys 'backend' and 'config'")
    if meta.get("format") != INDEX_FORMAT:
        raise ArtifactError(f"{meta_path}: unsupported index format {meta.get('format')!r}")
    return meta


class VectorIndex(ABC):
    """Nearest-neighbour index over int64 ids and float32 vectors (see the module docstring)."""

    backend: ClassVar[str]
    config_class: ClassVar[type[IndexConfig]]

    def __init__(self, config: IndexConfig) -> None:
        self.config = config

    # ------------------------------------------------------------------ properties
    @property
    def dim(self) -> int:
        return self.config.dim

    @property
    def metric(self) -> Metric:
        return self.config.metric

    def dump_config(self) -> dict[str, Any]:
        """The configuration as JSON-able dict (round-trips through ``config_class``)."""
        return self.config.dump_config()

    # ------------------------------------------------------------------ contract
    @abstractmethod
    def __len__(self) -> int:
        """Number of vectors in the index."""

    @abstractmethod
    def _add(self, ids: npt.NDArray[np.int64], vectors: npt.NDArray[np.float32]) -> None:
        """Add validated ids[n] and (already normalised for cosine) vectors[n, dim]."""

    @abstractmethod
    def _search(
        self, queries: npt.NDArray[np.float32], k: int
    ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
        """Search validated (normalised for cosine) queries; may return fewer than k columns."""

    @abstractmethod
    def _save(self, directory: Path) -> dict[str, Any]:
        """Write backend files into ``directory``; return extra keys for index.json."""

    @classmethod
    @abstractmethod
    def _load(cls, directory: Path, config: IndexConfig, meta: dict[str, Any]) -> Self:
        """Rebuild from a directory written by `_save`."""

    @abstractmethod
    def _contains_any(self, ids: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
        """The subset of ``ids`` already present in the index."""

    # ------------------------------------------------------------------ public API
    def add(self, ids: npt.ArrayLike, vectors: npt.ArrayLike) -> None:
        """Add ``vectors[n, dim]`` (float32) under ``ids[n]`` (int64 >= 0, not yet in the index)."""
        ids_a = self._check_ids(ids)
        vecs = self._check_vectors(vectors, "vectors")
        if len(ids_a) != vecs.shape[0]:
            raise InvalidArgumentError(
                f"add: got {len(ids_a)} ids but {vecs.shape[0]} vectors; pass one id per vector row"
            )
        if len(ids_a) == 0:
            return
        present = self._contains_any(ids_a)
        if len(present):
            raise InvalidArgumentError(
                f"add: ids already in the index: {present[:5].tolist()}"
                f"{' ...' if len(present) > 5 else ''}; ids must be unique (build a new index to replace)"
            )
        if self.metric == "cosine":
            vecs = _normalise(vecs)
        self._add(ids_a, vecs)

    def set_query_timeout(self, seconds: float) -> None:  # noqa: B027 - optional hook
        """Bound each `search` call of an index that queries a server (Milvus) at ``seconds``: past
        it the call raises `UnavailableError`. In-process indexes have nothing to wait for."""

    def search(self, queries: npt.ArrayLike, k: int) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
        """Top-``k`` neighbours of ``queries[n, dim]``.

        Returns ``scores[n, k]`` float32 (see module docstring for the metric's direction) and
        ``ids[n, k]`` int64, best first, padded with id -1 and the worst score.
        """
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise InvalidArgumentError(f"search: k must be a positive integer, got {k!r}")
        k = int(k)
        q = self._check_vectors(queries, "queries")
        n = q.shape[0]
        pad = pad_score(self.metric)
        out_s = np.full((n, k), pad, dtype=np.float32)
        out_i = np.full((n, k), -1, dtype=np.int64)
        if n == 0 or len(self) == 0:
            return out_s, out_i
        if self.metric == "cosine":
            q = _normalise(q)
        s, i = self._search(q, k)
        kk = min(k, s.shape[1])
        out_s[:, :kk] = s[:, :kk]
        out_i[:, :kk] = i[:, :kk]
        missing = out_i < 0
        out_s[missing] = pad
        out_i[missing] = -1
        return out_s, out_i

    def save(self, path: str | Path) -> Path:
        """Write the index into directory ``path`` (created); returns it."""
        d = Path(path)
        d.mkdir(parents=True, exist_ok=True)
        extra = self._save(d)
        meta = {
            "format": INDEX_FORMAT,
            "backend": self.backend,
            "config": self.dump_config(),
            "size": len(self),
            **extra,
        }
        tmp = d / (_META_FILE + ".tmp")
        tmp.write_text(json.dumps(meta, indent=2))
        tmp.replace(d / _META_FILE)
        return d

    @classmethod
    def load(cls, path: str | Path, **overrides: Any) -> Self:
        """Load an index written by `save`; ``overrides`` replace config fields (e.g. ``ef_search``)."""
        d = Path(path)
        meta = read_index_meta(d)
        if meta["backend"] != cls.backend:
            raise ArtifactError(
                f"{d}: index was saved by backend {meta['backend']!r}, not {cls.backend!r};"
                " use recstack.index.load_index to dispatch"
            )
        config = cls.config_class.from_config({**meta["config"], **overrides})
        return cls._load(d, config, meta)

    # ------------------------------------------------------------------ validation helpers
    def _check_ids(self, ids: npt.ArrayLike) -> npt.NDArray[np.int64]:
        arr = np.asarray(ids)
        if arr.ndim != 1:
            raise InvalidArgumentError(f"ids must be a 1-d array, got shape {arr.shape}")
        if arr.size and not np.issubdtype(arr.dtype, np.integer):
            raise InvalidArgumentError(f"ids must be integers (int64), got dtype {arr.dtype}")
        out = arr.astype(np.int64, copy=False)
        if out.size and out.min() < 0:
            raise InvalidArgumentError("ids must be >= 0 (-1 is reserved for padding)")
        if out.size and len(np.unique(out)) != out.size:
            raise InvalidArgumentError("ids contain duplicates; each id may appear once")
        return out

    def _check_vectors(self, x: npt.ArrayLike, what: str) -> npt.NDArray[np.float32]:
        arr = np.asarray(x)
        if arr.ndim == 1 and arr.size == self.dim:
            arr = arr[None, :]
        if arr.ndim != 2 or arr.shape[1] != self.dim:
            raise InvalidArgumentError(
                f"{what} must have shape [n, {self.dim}] (the index dimension), got {arr.shape}"
            )
        if arr.size and not np.issubdtype(arr.dtype, np.number):
            raise InvalidArgumentError(f"{what} must be numeric (float32), got dtype {arr.dtype}")
        out = np.ascontiguousarray(arr, dtype=np.float32)
        if out.size and not np.isfinite(out).all():
            raise InvalidArgumentError(f"{what} contain NaN or infinite values")
        return out

    def __repr__(self) -> str:
        return f"{type(self).__name__}(dim={self.dim}, metric={self.metric!r}, size={len(self)})"


def _normalise(x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """Row-wise L2 normalisation (zero rows stay zero); returns a new array."""
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    np.maximum(norms, np.float32(1e-12), out=norms)
    return np.asarray(x / norms, dtype=np.float32)
