"""Text features of the two-stage ranker (issue 21): what a candidate is about against what the user
liked, from the item text embeddings of `recstack.text` (`embed_items`).

- ``text_cos`` (a pair column): the cosine between the candidate's embedding and the user's text
  profile, the mean of the embeddings of the user's history items (embeddings mean-centred over the
  catalogue and of unit length, as the ``content`` retriever scores: `Content`);
- ``text_pc_0 .. text_pc_{k-1}`` (item columns): the candidate's first ``k`` principal components of
  the centred embeddings (signs fixed: each component's largest loading is positive), scaled by the
  first component's standard deviation.

Both are computed at serving by the same code (the ranker's `CandidateFeaturizer`), and the item
columns are constants of the factorised ONNX graph (`recstack.models.ranking.factorised`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp

from recstack.errors import ArtifactError

__all__ = ["ItemText"]

FloatArray = npt.NDArray[np.float32]

EMB_FILE, COMP_FILE = "text_embeddings.npy", "text_components.npy"


def _unit(x: npt.NDArray[np.floating]) -> FloatArray:
    n = np.linalg.norm(x, axis=1, keepdims=True)
    n[n == 0] = 1.0
    out: FloatArray = (x / n).astype(np.float32)
    return out


@dataclass
class ItemText:
    """``emb`` [n_items, d] float32: centred, unit-length item embeddings; ``comps`` [n_items, k]
    float32: their first k principal components (scaled)."""

    emb: FloatArray
    comps: FloatArray

    @classmethod
    def from_embeddings(cls, embeddings: npt.ArrayLike, components: int) -> ItemText:
        """From raw item embeddings [n_items, d] (any scale): centred, unit length, k components."""
        raw = np.asarray(embeddings, dtype=np.float64)
        if raw.ndim != 2 or raw.shape[0] == 0:
            raise ValueError(f"item embeddings must be [n_items, dim] with n_items > 0, got {raw.shape}")
        emb = _unit(raw - raw.mean(axis=0, keepdims=True))
        x = emb.astype(np.float64) - emb.mean(axis=0, keepdims=True)
        k = min(components, *x.shape)
        if k > 0:
            _, s, vt = np.linalg.svd(x, full_matrices=False)
            vt = vt[:k]
            signs = np.sign(vt[np.arange(k), np.argmax(np.abs(vt), axis=1)])
            vt = vt * np.where(signs == 0, 1.0, signs)[:, None]
            scale = s[0] / np.sqrt(max(x.shape[0] - 1, 1)) if s[0] > 0 else 1.0
            comps = (x @ vt.T / scale).astype(np.float32)
        else:
            comps = np.zeros((x.shape[0], 0), dtype=np.float32)
        return cls(np.ascontiguousarray(emb), np.ascontiguousarray(comps))

    @property
    def n_components(self) -> int:
        return int(self.comps.shape[1])

    def names(self) -> list[str]:
        """The dense feature names, in column order."""
        return ["text_cos", *(f"text_pc_{j}" for j in range(self.n_components))]

    def scopes(self) -> list[str]:
        return ["pair", *(["item"] * self.n_components)]

    def profiles(self, history: sp.csr_matrix) -> FloatArray:
        """Unit-length text profiles [n, d] of the users of the binary ``history`` [n, n_items] (the
        mean of their items' embeddings; zero rows for empty histories)."""
        h = sp.csr_matrix(history, dtype=np.float32)
        h.data[:] = 1.0
        return _unit(np.asarray(h @ self.emb, dtype=np.float32))

    def columns(self, profile: FloatArray, items: npt.NDArray[np.int64]) -> FloatArray:
        """The text columns [n, L, 1 + k] of ``items`` [n, L] (valid indices) for the users of
        ``profile`` [n, d]."""
        n, L = items.shape
        out = np.empty((n, L, 1 + self.n_components), dtype=np.float32)
        cos = profile @ self.emb.T  # [n, n_items]: cheaper than gathering [n, L, d] rows
        out[:, :, 0] = np.take_along_axis(cos, items, axis=1)
        out[:, :, 1:] = self.comps[items]
        return out

    def save(self, directory: str | Path) -> None:
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        np.save(d / EMB_FILE, self.emb, allow_pickle=False)
        np.save(d / COMP_FILE, self.comps, allow_pickle=False)

    @classmethod
    def load(cls, directory: str | Path, n_items: int) -> ItemText:
        d = Path(directory)
        try:
            emb = np.load(d / EMB_FILE, allow_pickle=False)
            comps = np.load(d / COMP_FILE, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise ArtifactError(f"{d}: cannot load the ranker's text features: {exc}") from exc
        if emb.ndim != 2 or emb.shape[0] != n_items or comps.ndim != 2 or comps.shape[0] != n_items:
            raise ArtifactError(
                f"{d}: text features of {emb.shape[0]} items, the model has {n_items}: rebuild the release"
            )
        return cls(np.ascontiguousarray(emb, np.float32), np.ascontiguousarray(comps, np.float32))
