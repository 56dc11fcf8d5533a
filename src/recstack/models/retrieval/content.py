"""Content models over item text embeddings (`recstack.text`): cold start by what items are about.

- `Content` (``content``): a user's profile is the weighted mean of the embeddings of the items in
  their history (weights = the history's values: 1 for a binary history); an item's score is its
  cosine with the profile. Profiles and scores use mean-centred embeddings (``centre``). Items
  without any interaction score like any other, so new items are recommendable the moment they have
  a text. ``item_embeddings()`` puts the text embeddings in the release's ANN index
  (`recstack.index`), where serving's nearest-item search runs.
- `ContentUserKNN` (``content_userknn``, seed 003): a user's vector is the mean of the text
  embeddings of their items; the nearest training users come from a `VectorIndex` over those vectors;
  an item's score is the similarity-weighted count of those neighbours who liked it. The
  neighbourhood widens (doubling) until it proposes ``min_candidates`` items the user has not seen
  (or reaches ``max_neighbours``); the profile's cosine with each item (x 1e-3) breaks ties, so every
  item has a finite score.

Both compute the item embeddings at fit with `embed_items` (cached on disk by a hash of model and
texts: evaluating and refitting encode once) and save them as ``item_embeddings.npy``; with
``export_onnx`` the model directory also holds the ONNX query encoder (``encoder/``) that serving's
semantic search runs.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import scipy.sparse as sp
from pydantic import Field

from recstack.config import ComponentConfig
from recstack.data.dataset import Dataset
from recstack.errors import ArtifactError, NotFittedError
from recstack.models.base import FloatArray, Retriever
from recstack.text.encoder import TextEncoderConfig

__all__ = ["Content", "ContentConfig", "ContentUserKNN", "ContentUserKNNConfig"]

EMB_FILE = "item_embeddings.npy"
ENCODER_DIR = "encoder"


class ContentConfig(ComponentConfig):
    """``encoder``: the text encoder (`TextEncoderConfig`). ``cache`` / ``cache_dir``: the on-disk
    embedding cache (None: ``RECSTACK_TEXT_CACHE`` or ``<home>/cache/text``). ``export_onnx``: save
    the ONNX query encoder with the model (serving's semantic search needs it)."""

    encoder: TextEncoderConfig = Field(default_factory=TextEncoderConfig)
    #: score with mean-centred embeddings (the catalogue's mean subtracted, then unit length): the
    #: common direction of all sentence embeddings otherwise dominates every profile (benchmarks/
    #: bench_cold.py: recall@20 of cold items 0.10 -> 0.23 on ml-latest-small)
    centre: bool = True
    cache: bool = True
    cache_dir: str | None = None
    export_onnx: bool = True


class ContentUserKNNConfig(ContentConfig):
    """``neighbours``: the first neighbourhood size; it doubles until the neighbours' items the user
    has not seen number ``min_candidates`` or it reaches ``max_neighbours``. ``index``: the
    `VectorIndex` backend over the user vectors (``exact`` or ``faiss``)."""

    #: the release's query encoder comes with its ``content`` model (one copy of the ONNX file)
    export_onnx: bool = False
    neighbours: int = Field(default=30, ge=1)
    min_candidates: int = Field(default=100, ge=1)
    max_neighbours: int = Field(default=400, ge=1)
    index: str = "exact"


def _normalise(x: FloatArray) -> FloatArray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    out: FloatArray = (x / norms).astype(np.float32)
    return out


class _TextItems(Retriever):
    """Item text embeddings [n_items, dim] computed at fit, saved / loaded with the model."""

    config: ContentConfig
    _emb: FloatArray | None = None
    _scoring: FloatArray | None = None
    encoder_dir: Path | None = None

    def _fit(self, dataset: Dataset) -> None:
        from recstack.text.encoder import embed_items, export_onnx

        cfg = self.config
        self._emb = embed_items(dataset, cfg.encoder, cache_dir=cfg.cache_dir, cache=cfg.cache)
        self.encoder_dir = export_onnx(cfg.encoder, cache_dir=cfg.cache_dir) if cfg.export_onnx else None
        self._after_fit()

    def _after_fit(self) -> None:
        """Derived arrays (the scoring embeddings; user vectors, an index) once ``_emb`` and
        ``_train`` are set."""
        emb = self.item_embeddings()
        self._scoring = _normalise(emb - emb.mean(axis=0, keepdims=True)) if self.config.centre else emb

    def item_embeddings(self) -> FloatArray:
        """[n_items, dim] float32, unit length, as the encoder gives them (search and the ANN index
        compare them with encoded queries)."""
        if self._emb is None:
            raise NotFittedError(f"{self.name}: call fit() or load() first")
        return self._emb

    def scoring_embeddings(self) -> FloatArray:
        """[n_items, dim] the embeddings profiles and scores use (mean-centred with ``centre``)."""
        if self._scoring is None:
            raise NotFittedError(f"{self.name}: call fit() or load() first")
        return self._scoring

    def profiles(self, history: sp.csr_matrix) -> FloatArray:
        """Unit-length profiles [n, dim]: the history-weighted mean of the scoring embeddings (zero
        rows for empty histories)."""
        emb = self.scoring_embeddings()
        h = sp.csr_matrix(history, dtype=np.float32)
        return _normalise(np.asarray(h @ emb, dtype=np.float32))

    def _save(self, directory: Path) -> None:
        np.save(directory / EMB_FILE, self.item_embeddings(), allow_pickle=False)
        if self.encoder_dir is not None:
            shutil.copytree(self.encoder_dir, directory / ENCODER_DIR, dirs_exist_ok=True)

    def _load(self, directory: Path) -> None:
        emb = np.load(directory / EMB_FILE, allow_pickle=False)
        if emb.ndim != 2 or emb.shape[0] != self.n_items:
            raise ArtifactError(f"{directory / EMB_FILE}: expected [{self.n_items}, dim], got {emb.shape}")
        self._emb = np.ascontiguousarray(emb, dtype=np.float32)
        enc = directory / ENCODER_DIR
        self.encoder_dir = enc if (enc / "encoder.json").is_file() else None
        self._after_fit()


class Content(_TextItems):
    """Profile = weighted mean of the history's item embeddings; score = cosine (higher is better)."""

    name: ClassVar[str] = "content"
    Config: ClassVar[type[ComponentConfig]] = ContentConfig
    tuning_grid: ClassVar[tuple[dict[str, Any], ...]] = ({},)

    def score_history(self, history: sp.csr_matrix) -> FloatArray:
        self._check_fitted()
        return np.ascontiguousarray(self.profiles(history) @ self.scoring_embeddings().T, dtype=np.float32)

    def item_contributions(self, history: Any, candidates: Any) -> FloatArray:
        """[m, c]: what each history item (indices [m]) adds to each candidate's score (indices [c]):
        the cosine of their scoring embeddings (a binary history's score is their sum over the
        profile's norm). Serving's explanation names the history item with the largest one."""
        emb = self.scoring_embeddings()
        h = emb[np.asarray(history, dtype=np.int64)]
        c = emb[np.asarray(candidates, dtype=np.int64)]
        return np.ascontiguousarray(h @ c.T, dtype=np.float32)


class ContentUserKNN(_TextItems):
    """Neighbours by text profile (through a `VectorIndex`), scored by what they liked."""

    name: ClassVar[str] = "content_userknn"
    Config: ClassVar[type[ComponentConfig]] = ContentUserKNNConfig
    tuning_grid: ClassVar[tuple[dict[str, Any], ...]] = (
        {"neighbours": 30, "min_candidates": 100},
        {"neighbours": 100, "min_candidates": 200},
    )
    config: ContentUserKNNConfig
    _index: Any = None

    def _after_fit(self) -> None:
        from recstack.index import create_index

        super()._after_fit()
        train = self._require_fitted()
        users = self.profiles(train)
        self._index = create_index(self.config.index, dim=users.shape[1], metric="ip")
        self._index.add(np.arange(users.shape[0], dtype=np.int64), users)

    def score_users(self, user_idx: Any) -> FloatArray:
        train = self._require_fitted()
        idx = np.asarray(user_idx, dtype=np.int64)
        return self._score(train[idx], idx)

    def score_history(self, history: sp.csr_matrix) -> FloatArray:
        self._check_fitted()
        return self._score(sp.csr_matrix(history), None)

    def _score(self, history: sp.csr_matrix, self_idx: Any) -> FloatArray:
        """Scores [n, n_items]; ``self_idx`` [n] (training users): each user is left out of their own
        neighbourhood."""
        train = self._require_fitted()
        cfg = self.config
        prof = self.profiles(history)
        out = np.ascontiguousarray(prof @ self.scoring_embeddings().T, dtype=np.float32) * np.float32(1e-3)
        n_users = train.shape[0]
        cap = min(cfg.max_neighbours, n_users)
        for r in range(history.shape[0]):
            if not np.any(prof[r]):
                continue  # an empty history: no neighbours
            seen = history[r].indices
            k = min(cfg.neighbours, cap)
            while True:
                sims, ids = self._index.search(prof[r : r + 1], k + 1)
                ok = ids[0] >= 0
                if self_idx is not None:
                    ok &= ids[0] != self_idx[r]
                nb, w = ids[0][ok][:k], np.maximum(sims[0][ok][:k], 0.0).astype(np.float32)
                votes = np.asarray(
                    (sp.csr_matrix(w[None, :]) @ train[nb]).toarray(), dtype=np.float32
                ).ravel()
                votes[seen] = 0.0
                if np.count_nonzero(votes) >= cfg.min_candidates or k >= cap:
                    break
                k = min(2 * k, cap)
            out[r] += votes
        return out
