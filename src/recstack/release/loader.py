"""`load(id_or_channel)`: the typed, verified view of a release that serving and batch jobs use.

Loading verifies every file of the manifest (size + sha256) before anything is read, reads only
files the manifest lists, and never executes code from a release: arrays come from
``np.load(allow_pickle=False)``, tables from Parquet, models from their ``Retriever.load``.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import numpy.typing as npt
import polars as pl

from recstack.data.dataset import Dataset
from recstack.errors import ArtifactError, NotFoundError
from recstack.models.base import Retriever
from recstack.release.manifest import Manifest
from recstack.release.registry import Registry

if TYPE_CHECKING:
    from recstack.features.tables import FeatureTables

__all__ = ["Release", "load"]


@dataclass(eq=False)
class Release:
    """A verified release. Heavy parts (dataset, models, embeddings) are read lazily and cached."""

    id: str
    path: Path
    manifest: Manifest
    _retrievers: dict[str, Retriever] = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def verify(self) -> None:
        """Re-check every file's size and sha256 against the manifest (ArtifactError naming the file)."""
        self.manifest.verify(self.path)

    # ------------------------------------------------------------------ paths
    def _file(self, rel: str) -> Path:
        """Absolute path of a listed file (ArtifactError when the manifest does not list it)."""
        self.manifest.file(rel)
        return self.path / rel

    def _dir(self, rel: str) -> Path:
        prefix = rel.rstrip("/") + "/"
        if not any(f.path.startswith(prefix) for f in self.manifest.files):
            raise ArtifactError(f"{self.path / rel}: directory not listed in the manifest of {self.id}")
        return self.path / rel

    # ------------------------------------------------------------ components
    @cached_property
    def dataset(self) -> Dataset:
        """The full Dataset the release was built from (histories, item metadata, vocabularies)."""
        return Dataset.load(self._dir(self.manifest.artifacts.dataset))

    def read_interactions(self) -> pl.DataFrame:
        """The dataset's interactions frame read from the release's files (not cached): for a serving
        worker that dropped it (`forget_dataset`) and needs it once more."""
        cached = self.__dict__.get("dataset")
        if cached is not None:
            return cast(Dataset, cached).interactions
        return pl.read_parquet(self._dir(self.manifest.artifacts.dataset) / "interactions.parquet")

    def forget_dataset(self) -> None:
        """Drop the cached `dataset` (a serving worker whose histories are in its store holds no copy
        of the interactions); the next access reads it from the release's files again."""
        self.__dict__.pop("dataset", None)

    @property
    def user_vocab(self) -> Any:
        return self.dataset.user_vocab

    @property
    def item_vocab(self) -> Any:
        return self.dataset.item_vocab

    @cached_property
    def features(self) -> FeatureTables | None:
        """The user / item feature tables (shared by training and serving), or None when not built."""
        rel = self.manifest.artifacts.features
        if rel is None:
            return None
        from recstack.features.tables import FeatureTables

        return FeatureTables.load(self._dir(rel))

    @property
    def retriever_names(self) -> list[str]:
        """Aliases of the retrievers in the release, in build order."""
        return list(self.manifest.artifacts.retrievers)

    def retriever(self, name: str) -> Retriever:
        """The retriever ``name`` (loaded on first use, then cached; thread-safe)."""
        arts = self.manifest.artifacts
        if name not in arts.retrievers:
            raise NotFoundError(
                f"release {self.id} has no retriever {name!r}; it has {', '.join(self.retriever_names)}"
            )
        with self._lock:
            if name not in self._retrievers:
                from recstack.models.registry import get_class

                d = self._dir(arts.retrievers[name])
                model = arts.retriever_models.get(name)
                if model is None:
                    try:
                        model = str(json.loads((d / "config.json").read_text())["model"])
                    except (OSError, KeyError, json.JSONDecodeError) as exc:
                        raise ArtifactError(f"{d / 'config.json'}: cannot read model name: {exc}") from exc
                self._retrievers[name] = get_class(model).load(d)
            return self._retrievers[name]

    @property
    def ranker_paths(self) -> dict[str, Path]:
        """Ranker name -> ONNX file (scored with ONNX Runtime by serving)."""
        return {name: self._file(rel) for name, rel in self.manifest.artifacts.rankers.items()}

    @property
    def user_tower_path(self) -> Path | None:
        """The ONNX user tower matching `item_embeddings` (two-tower), or None."""
        towers = self.manifest.artifacts.user_towers
        key = self.manifest.artifacts.primary_embeddings
        rel = towers.get(key) if key is not None else None
        if rel is None and towers:
            rel = next(iter(towers.values()))
        return None if rel is None else self._file(rel)

    @cached_property
    def item_embeddings(self) -> npt.NDArray[np.float32] | None:
        """The embeddings the ANN index holds: [n_items, dim] float32 (row = item index), or None."""
        key = self.manifest.artifacts.primary_embeddings
        return None if key is None else self.embeddings(key)

    def embeddings(self, name: str) -> npt.NDArray[np.float32]:
        """Item embeddings [n_items, dim] float32 exported by model ``name``."""
        rel = self.manifest.artifacts.embeddings.get(name)
        if rel is None:
            raise NotFoundError(f"release {self.id} has no item embeddings of {name!r}")
        p = self._file(rel)
        try:
            arr = np.load(p, allow_pickle=False)
        except ValueError as exc:
            raise ArtifactError(f"{p}: not a plain numpy array ({exc})") from exc
        return np.asarray(arr, dtype=np.float32)

    @property
    def index_path(self) -> Path | None:
        """The ANN index file (``manifest.artifacts.index`` says backend, dim and metric), or None."""
        info = self.manifest.artifacts.index
        return None if info is None else self.path / info.path

    def load_index(self) -> Any:
        """The ANN index loaded with its backend (``recstack.index``), or None when the release has none."""
        info = self.manifest.artifacts.index
        if info is None:
            return None
        from recstack import index as index_mod

        loader = getattr(index_mod, "load_index", None)
        if loader is not None:
            return loader(self.path / info.path)
        idx = index_mod.create_index(info.backend, dim=info.dim, metric=info.metric)
        return idx.load(self.path / info.path) or idx

    @property
    def metrics(self) -> dict[str, dict[str, float]]:
        """Holdout metrics: model alias -> metric (``ndcg@10``) -> value."""
        return self.manifest.metrics

    @property
    def report_path(self) -> Path | None:
        rel = self.manifest.artifacts.report
        return None if rel is None else self._file(rel)


def load(
    id_or_channel: str = "production", root: str | Path | None = None, *, verify: bool = True
) -> Release:
    """Open a release by id, unique id prefix, channel (``production``/``staging``) or ``latest``.

    ``root`` defaults to the releases dir of the Settings (``RECSTACK_RELEASES_DIR``). Every file is
    checked against the manifest's size and sha256 first (``verify=False`` skips the hashes — only for
    trusted, already verified copies); a missing or tampered file raises ArtifactError naming it.
    """
    if root is None:
        from recstack.config import get_settings

        root = get_settings().releases_path()
    reg = Registry(root)
    rid = reg.resolve(id_or_channel)
    path = reg.path(rid)
    manifest = Manifest.read(path)
    if verify:
        manifest.verify(path)
    return Release(id=rid, path=path, manifest=manifest)
