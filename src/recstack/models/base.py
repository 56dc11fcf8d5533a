"""The `Retriever` and `Ranker` contracts.

A Retriever scores every item for a user and returns the top k. The base class implements
`recommend` once (masking, batched top-k); models implement `fit`, `score_history` and, if they
have user factors, `score_users`. Artifacts are saved with numpy (``allow_pickle=False``),
safetensors, ONNX or Parquet plus a JSON config; never pickle.

A loaded Retriever reads its training user x item matrix (``train.npz``) on first use only
(`_require_fitted`): most models serve from a history (`score_history`), and a serving worker of a
25M-interaction release held one ~200 MB copy per retriever it never read (issue 23).
"""

from __future__ import annotations

import json
import os
import threading
import weakref
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar, Self, cast

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp

from recstack.config import ComponentConfig
from recstack.data.dataset import Dataset
from recstack.errors import ArtifactError, InvalidArgumentError, NotFittedError

__all__ = ["Ranker", "Retriever", "order_selected", "top_k"]

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float32]


def top_k(scores: npt.NDArray[np.floating[Any]], k: int) -> tuple[IntArray, FloatArray]:
    """Row-wise top k of a dense score matrix [n, m] -> (ids[n, k], scores[n, k] float32), best first.

    Ties are broken by the lower item index, also at the cut: whichever k is asked, the same items
    come first (``np.argpartition`` alone keeps an arbitrary subset of the values tied at the k-th
    place, so a list of tied scores such as recent popularity's depended on k). Entries equal to
    -inf are returned as id -1; rows with fewer than k columns are padded with (-1, -inf). NaN is
    allowed. `recstack.batch._pipeline._top_rows` is a faster form of this for float32 blocks.
    """
    n, m = scores.shape
    kk = min(k, m)
    if kk <= 0:
        return np.full((n, k), -1, dtype=np.int64), np.full((n, k), -np.inf, dtype=np.float32)
    if kk < m:
        part = np.argpartition(-scores, kk - 1, axis=1)[:, :kk]
        ps = np.take_along_axis(scores, part, axis=1)
        # ties at the cut: argpartition picks any of them; keep the lowest indices instead
        cut = ps.min(axis=1, keepdims=True)
        tied = (scores == cut).sum(axis=1) > (ps == cut).sum(axis=1)
        if tied.any():
            rows = np.flatnonzero(tied)
            sub = scores[rows]
            part[rows] = np.lexsort((np.broadcast_to(np.arange(m), sub.shape), -sub), axis=1)[:, :kk]
        part.sort(axis=1)
    else:
        part = np.broadcast_to(np.arange(m, dtype=np.int64), (n, m)).copy()
    return order_selected(scores, part, k)


def order_selected(
    scores: npt.NDArray[np.floating[Any]], part: IntArray, k: int
) -> tuple[IntArray, FloatArray]:
    """The selected columns ``part`` [n, kk] (ascending per row) of ``scores`` [n, m] best first
    (stable: ties keep the lower index), -inf as id -1, padded to k columns with (-1, -inf)."""
    kk = part.shape[1]
    ps = np.take_along_axis(scores, part, axis=1)
    o = np.argsort(-ps, axis=1, kind="stable")
    ids = np.take_along_axis(part, o, axis=1).astype(np.int64, copy=False)
    sc = np.take_along_axis(ps, o, axis=1).astype(np.float32)
    ids[np.isneginf(sc)] = -1
    if kk < k:
        ids = np.pad(ids, ((0, 0), (0, k - kk)), constant_values=-1)
        sc = np.pad(sc, ((0, 0), (0, k - kk)), constant_values=-np.inf)
    return ids, sc


#: serialises the first read of a loaded retriever's training matrix (`Retriever._require_fitted`)
_TRAIN_LOCK = threading.Lock()


#: where each fitted object was first saved in this process (`Retriever.save` links a second save)
_SAVED: weakref.WeakKeyDictionary[Any, Path] = weakref.WeakKeyDictionary()
#: loaded objects whose config.json is a hard link: (class, device, inode, mtime) -> object (`load`)
_LOADED: weakref.WeakValueDictionary[tuple[Any, int, int, int], Any] = weakref.WeakValueDictionary()
_LOADED_LOCK = threading.Lock()


def _link_tree(src: Path, dest: Path) -> bool:
    """Hard-link every file under ``src`` to the same place under ``dest`` (created); False, with
    ``dest`` left as it was, when ``src`` is gone or a link fails (another file system)."""
    if not (src / "config.json").is_file() or (dest.exists() and any(dest.iterdir())):
        return False
    try:
        for root, _, files in os.walk(src):
            out = dest / Path(root).relative_to(src)
            out.mkdir(parents=True, exist_ok=True)
            for name in files:
                os.link(Path(root) / name, out / name)
    except OSError:
        import shutil

        shutil.rmtree(dest, ignore_errors=True)
        return False
    return True


class Retriever(ABC):
    """Scores all items for users; top-k with exclusions. Batch-first.

    Subclasses set ``name`` and ``Config`` and implement `_fit`, `score_history`, `_save`, `_load`.
    """

    name: ClassVar[str]
    Config: ClassVar[type[ComponentConfig]]
    #: candidate hyperparameters for ``--tune`` (chosen on the validation split only)
    tuning_grid: ClassVar[tuple[dict[str, Any], ...]] = ()

    def __init__(self, config: ComponentConfig | None = None, **overrides: Any) -> None:
        base = config.dump_config() if config is not None else {}
        base.update(overrides)
        self.config = self.Config.from_config(base)
        self._train: sp.csr_matrix | None = None
        #: a loaded retriever's ``train.npz``, read on first use (`_require_fitted`)
        self._train_file: Path | None = None
        self.n_items = 0

    # ----------------------------------------------------------- contract
    def fit(self, dataset: Dataset) -> Self:
        """Fit on a training dataset; keeps its binary user x item matrix for `score_users`."""
        _SAVED.pop(self, None)  # a refit object is not what it saved before
        self._train = dataset.to_csr("binary")
        self.n_items = dataset.n_items
        self._fit(dataset)
        return self

    @abstractmethod
    def _fit(self, dataset: Dataset) -> None: ...

    @abstractmethod
    def score_history(self, history: sp.csr_matrix) -> FloatArray:
        """Scores [n, n_items] (float32, higher is better) for users given by their interaction
        rows ``history`` [n, n_items] (binary). Works for users unseen at fit time."""

    def score_users(self, user_idx: npt.ArrayLike) -> FloatArray:
        """Scores [n, n_items] for known users (dense indices into the training vocabulary)."""
        train = self._require_fitted()
        idx = np.asarray(user_idx, dtype=np.int64)
        return self.score_history(train[idx])

    def recommend(
        self,
        user_idx: npt.ArrayLike,
        k: int,
        exclude: sp.csr_matrix | None = None,
        *,
        batch_size: int = 1024,
    ) -> tuple[IntArray, FloatArray]:
        """Top k items for each user -> (ids[n, k] int64, scores[n, k] float32), best first, padded
        with -1 / -inf. ``exclude`` [n, n_items] marks items that must not be returned (for example
        the training items)."""
        if k <= 0:
            raise InvalidArgumentError(f"k must be a positive integer, got {k}")
        idx = np.asarray(user_idx, dtype=np.int64).ravel()
        out_ids = np.empty((len(idx), k), dtype=np.int64)
        out_sc = np.empty((len(idx), k), dtype=np.float32)
        for start in range(0, len(idx), batch_size):
            sl = slice(start, start + batch_size)
            scores = self.score_users(idx[sl]).astype(np.float32, copy=True)
            if exclude is not None:
                _mask(scores, exclude[sl])
            out_ids[sl], out_sc[sl] = top_k(scores, k)
        return out_ids, out_sc

    def recommend_history(
        self, history: sp.csr_matrix, k: int, *, exclude_history: bool = True
    ) -> tuple[IntArray, FloatArray]:
        """Top k for users given by interaction rows (new users, a few liked items)."""
        if k <= 0:
            raise InvalidArgumentError(f"k must be a positive integer, got {k}")
        scores = self.score_history(history).astype(np.float32, copy=True)
        if exclude_history:
            _mask(scores, history)
        return top_k(scores, k)

    def similar_items(self, item_idx: npt.ArrayLike, k: int) -> tuple[IntArray, FloatArray]:
        """Top k most similar items per item (the item itself excluded): the scores of a one-item
        history by default."""
        idx = np.asarray(item_idx, dtype=np.int64).ravel()
        self._check_fitted()
        hist = sp.csr_matrix(
            (np.ones(len(idx), dtype=np.float32), (np.arange(len(idx)), idx)),
            shape=(len(idx), self.n_items),
        )
        return self.recommend_history(hist, k)

    # ------------------------------------------------------------ storage
    def save(self, directory: str | Path) -> Path:
        """Write ``config.json`` + the model's arrays into ``directory`` (no pickle). The same fitted
        object saved a second time in this process (one fit serving a table model and a two-stage
        recall source, `recstack.models.shared`) hard-links the files of its first save instead of
        writing them again, where the file system allows; `load` then shares one object between the
        two directories."""
        d = Path(directory)
        first = _SAVED.get(self)
        if first is not None and first != d and _link_tree(first, d):
            return d
        d.mkdir(parents=True, exist_ok=True)
        train = self._require_fitted()
        (d / "config.json").write_text(
            json.dumps(
                {"model": self.name, "config": self.config.dump_config(), "n_items": self.n_items}, indent=2
            )
        )
        # uncompressed: zlib over a 25M-interaction matrix takes tens of seconds per model, and a
        # release holds one per model (the two-stage model's sources included)
        sp.save_npz(d / "train.npz", train, compressed=False)
        self._save(d)
        _SAVED[self] = d
        return d

    @classmethod
    def load(cls, directory: str | Path) -> Self:
        """The model saved in ``directory``. Directories whose files are hard links of one save (see
        `save`) give one shared object while it is alive in this process: a release that holds a
        fit twice holds it once in memory."""
        d = Path(directory)
        try:
            st = (d / "config.json").stat()
        except OSError as exc:
            raise ArtifactError(f"{d / 'config.json'}: cannot read model config: {exc}") from exc
        key = (cls, st.st_dev, st.st_ino, st.st_mtime_ns)
        with _LOADED_LOCK:
            shared = _LOADED.get(key)
        if shared is not None:
            return cast(Self, shared)
        obj = cls._load_dir(d)
        if st.st_nlink > 1:
            with _LOADED_LOCK:
                _LOADED[key] = obj
        return obj

    @classmethod
    def _load_dir(cls, d: Path) -> Self:
        try:
            info = json.loads((d / "config.json").read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ArtifactError(f"{d / 'config.json'}: cannot read model config: {exc}") from exc
        if info.get("model") != cls.name:
            raise ArtifactError(f"{d}: holds model {info.get('model')!r}, not {cls.name!r}")
        obj = cls(cls.Config.from_config(info["config"]))
        obj.n_items = int(info["n_items"])
        if not (d / "train.npz").is_file():
            raise ArtifactError(f"{d / 'train.npz'}: missing")
        obj._train_file = d / "train.npz"
        obj._load(d)
        return obj

    def _save(self, directory: Path) -> None:  # noqa: B027 - optional hook
        """Write model-specific arrays (numpy .npy / .npz without objects, safetensors...)."""

    def _load(self, directory: Path) -> None:  # noqa: B027 - optional hook
        """Read what `_save` wrote."""

    def _require_fitted(self) -> sp.csr_matrix:
        """The training user x item matrix (a loaded retriever reads it now if it has not yet)."""
        if self._train is None:
            if self._train_file is None:
                raise NotFittedError(f"{self.name}: call fit() or load() first")
            with _TRAIN_LOCK:
                if self._train is None:
                    self._train = sp.load_npz(self._train_file).tocsr()
        return self._train

    def _check_fitted(self) -> None:
        """`NotFittedError` unless fitted or loaded (without reading the training matrix)."""
        if self._train is None and self._train_file is None:
            raise NotFittedError(f"{self.name}: call fit() or load() first")

    def _train_shape(self) -> tuple[int, int]:
        """(n_users, n_items) of the training matrix (a loaded one's without reading its data)."""
        if self._train is None and self._train_file is not None:
            with np.load(self._train_file, allow_pickle=False) as z:
                n_users, n_items = (int(x) for x in z["shape"])
            return n_users, n_items
        train = self._require_fitted()
        return int(train.shape[0]), int(train.shape[1])

    def params(self) -> dict[str, Any]:
        return self.config.dump_config()


def _mask(scores: FloatArray, exclude: sp.csr_matrix) -> None:
    """Set scores of the nonzero entries of ``exclude`` to -inf, in place."""
    ex = exclude.tocoo()
    scores[ex.row, ex.col] = -np.inf


class Ranker(ABC):
    """Scores (user, candidate item) pairs from feature rows. Serving scores with ONNX Runtime."""

    name: ClassVar[str]

    @abstractmethod
    def fit(self, dataset: Dataset, candidates: Any) -> Self: ...

    @abstractmethod
    def score(self, features: dict[str, npt.NDArray[Any]]) -> FloatArray:
        """Scores [n] (float32, higher is better) for n feature rows."""

    @abstractmethod
    def export_onnx(self, path: str | Path) -> Path: ...
