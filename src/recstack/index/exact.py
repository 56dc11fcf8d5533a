"""Exact (brute-force) search in numpy: blocked matmul + argpartition. The reference for recall."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Literal, Self

import numpy as np
import numpy.typing as npt
from pydantic import Field

from recstack.errors import ArtifactError
from recstack.index.base import IndexConfig, VectorIndex

__all__ = ["ExactIndex", "ExactIndexConfig"]


class ExactIndexConfig(IndexConfig):
    """Exact search; ``block_floats`` bounds the score matrix per block (queries x vectors)."""

    backend: Literal["exact"] = "exact"
    block_floats: int = Field(default=1 << 24, gt=0, description="max floats in one score block (64 MB)")


class ExactIndex(VectorIndex):
    """All vectors in one float32 matrix; every search scores every vector.

    Cost per query: O(size * dim). Used as the default for small catalogues and as ground truth.
    """

    backend: ClassVar[str] = "exact"
    config_class: ClassVar[type[IndexConfig]] = ExactIndexConfig
    config: ExactIndexConfig

    def __init__(self, config: ExactIndexConfig) -> None:
        super().__init__(config)
        self._chunks: list[npt.NDArray[np.float32]] = []
        self._id_chunks: list[npt.NDArray[np.int64]] = []
        self._vectors = np.empty((0, config.dim), dtype=np.float32)
        self._ids = np.empty(0, dtype=np.int64)
        self._sorted_ids = np.empty(0, dtype=np.int64)
        self._sq_norms: npt.NDArray[np.float32] | None = None

    def __len__(self) -> int:
        return len(self._ids) + sum(len(c) for c in self._id_chunks)

    def _consolidate(self) -> None:
        if self._chunks:
            self._vectors = np.concatenate([self._vectors, *self._chunks])
            self._ids = np.concatenate([self._ids, *self._id_chunks])
            self._sorted_ids = np.sort(self._ids)
            self._chunks.clear()
            self._id_chunks.clear()
            self._sq_norms = None

    def _contains_any(self, ids: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
        self._consolidate()
        return ids[np.isin(ids, self._sorted_ids)]

    def _add(self, ids: npt.NDArray[np.int64], vectors: npt.NDArray[np.float32]) -> None:
        self._chunks.append(vectors.copy())
        self._id_chunks.append(ids.copy())

    def _search(
        self, queries: npt.NDArray[np.float32], k: int
    ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
        self._consolidate()
        x = self._vectors
        n_vec = x.shape[0]
        kk = min(k, n_vec)
        l2 = self.metric == "l2"
        if l2 and self._sq_norms is None:
            self._sq_norms = np.einsum("ij,ij->i", x, x).astype(np.float32)
        rows = max(1, self.config.block_floats // max(n_vec, 1))
        out_s = np.empty((queries.shape[0], kk), dtype=np.float32)
        out_i = np.empty((queries.shape[0], kk), dtype=np.int64)
        for start in range(0, queries.shape[0], rows):
            q = queries[start : start + rows]
            scores = q @ x.T  # [b, n_vec]
            if l2:
                assert self._sq_norms is not None
                # |q - x|^2 = |q|^2 - 2 q.x + |x|^2; negate so that "larger is better" below
                scores *= 2.0
                scores -= self._sq_norms[None, :]
                scores -= np.einsum("ij,ij->i", q, q)[:, None]
            if kk < n_vec:
                part = np.argpartition(-scores, kk - 1, axis=1)[:, :kk]
            else:
                part = np.broadcast_to(np.arange(n_vec), (q.shape[0], n_vec))
            top = np.take_along_axis(scores, part, axis=1)
            order = np.argsort(-top, axis=1, kind="stable")
            best = np.take_along_axis(part, order, axis=1)
            s = np.take_along_axis(top, order, axis=1)
            out_s[start : start + len(q)] = np.maximum(-s, 0.0) if l2 else s
            out_i[start : start + len(q)] = self._ids[best]
        return out_s, out_i

    def vectors(self) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
        """All ``(ids[n], vectors[n, dim])`` in insertion order (normalised for cosine); read-only views."""
        self._consolidate()
        ids, vecs = self._ids.view(), self._vectors.view()
        ids.flags.writeable = False
        vecs.flags.writeable = False
        return ids, vecs

    def _save(self, directory: Path) -> dict[str, Any]:
        self._consolidate()
        np.save(directory / "ids.npy", self._ids, allow_pickle=False)
        np.save(directory / "vectors.npy", self._vectors, allow_pickle=False)
        return {}

    @classmethod
    def _load(cls, directory: Path, config: IndexConfig, meta: dict[str, Any]) -> Self:
        assert isinstance(config, ExactIndexConfig)
        try:
            ids = np.load(directory / "ids.npy", allow_pickle=False)
            vecs = np.load(directory / "vectors.npy", allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise ArtifactError(f"{directory}: cannot read exact index arrays: {exc}") from exc
        if ids.ndim != 1 or vecs.shape != (len(ids), config.dim):
            raise ArtifactError(f"{directory}: ids {ids.shape} and vectors {vecs.shape} do not match")
        idx = cls(config)
        idx._ids = ids.astype(np.int64, copy=False)
        idx._vectors = vecs.astype(np.float32, copy=False)
        idx._sorted_ids = np.sort(idx._ids)
        return idx
