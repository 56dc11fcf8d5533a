"""Shared machinery of the neural rankers: the input layout, training (listwise / pairwise / pointwise)
and ONNX export.

Every ranker scores flat rows of two inputs: ``cat`` [n, C] int64 categorical codes (field 0 = user
index + 1, field 1 = item index + 1, 0 = unknown; then the other categorical features) and ``dense``
[n, D] float32 numeric features. Dense features are standardised inside the network with the mean / std
of the training rows (buffers, so the ONNX graph includes them). Output: ``score`` [n] float32 logits,
higher is better.
"""

from __future__ import annotations

import json
import mmap
import shutil
import tempfile
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal, Self

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F  # noqa: N812
from pydantic import Field
from torch import nn

from recstack.config import ComponentConfig
from recstack.data.dataset import Dataset
from recstack.errors import ArtifactError, InvalidArgumentError, NotFittedError
from recstack.models.base import Ranker
from recstack.models.ranking.trainer import load_module, save_module, train_model

__all__ = [
    "BLOCK_ROWS",
    "FieldSum",
    "ListFiles",
    "NeuralRanker",
    "RankerConfig",
    "RankerNet",
    "RankingData",
    "RankingStore",
    "constant",
    "embedding_sum",
    "export_rows_onnx",
    "linear_over_fields",
    "ndcg_at_k",
    "ndcg_per_list",
    "release",
]

FloatArray = npt.NDArray[np.float32]
IntArray = npt.NDArray[np.int64]


class RankerConfig(ComponentConfig):
    """Hyperparameters of a neural ranker. ``loss``: ``softmax`` (listwise over each user's candidate
    list), ``bpr`` (pairwise, every positive against every negative of the list) or ``bce``
    (pointwise). ``id_features``: use the user / item id fields (False zeroes them). ``lr_schedule``,
    ``average_top``: see `TrainerConfig`."""

    emb_dim: int = 16
    hidden: tuple[int, ...] = (128, 64)
    dropout: float = 0.1
    loss: Literal["softmax", "bpr", "bce"] = "softmax"
    id_features: bool = True
    epochs: int = 15
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 1e-4
    patience: int = 3
    seed: int = 42
    num_threads: int = 1
    lr_schedule: Literal["constant", "cosine"] = "constant"
    average_top: int = Field(default=1, ge=1)


#: rows (list x candidate pairs) read at a time when the lists are streamed (statistics, validation)
BLOCK_ROWS = 65536


@dataclass(frozen=True)
class ListFiles:
    """Where a `RankingData`'s ``cat`` / ``dense`` live on disk: lists ``start`` .. ``stop`` (the first
    ``width`` candidates of each) of the ``cat.npy`` / ``dense.npy`` files of a `RankingStore`'s
    ``directory``."""

    directory: str
    start: int
    stop: int
    width: int

    def open(self) -> tuple[IntArray, FloatArray]:
        """Read-only memmaps of the lists' ``cat`` [n, width, C] and ``dense`` [n, width, D]."""
        d = Path(self.directory)
        cat = np.load(d / "cat.npy", mmap_mode="r")[self.start : self.stop, : self.width]
        dense = np.load(d / "dense.npy", mmap_mode="r")[self.start : self.stop, : self.width]
        return cat, dense


def release(a: npt.NDArray[Any]) -> None:
    """Drop the pages of memmap ``a`` (and of the whole file mapping it views) from this process's
    resident set after a read: the page cache keeps them (a later read is a minor fault), but the RSS
    stays one block, not the file. No-op for an in-memory array."""
    mm = getattr(a, "_mmap", None)
    if isinstance(mm, mmap.mmap):
        mm.madvise(mmap.MADV_DONTNEED)


@dataclass
class RankingData:
    """Training rows. Grouped (listwise) data has 3-d arrays: ``cat`` [U, L, C], ``dense`` [U, L, D],
    ``label`` [U, L] (1 positive, 0 negative), ``mask`` [U, L] (False = padding); flat data has ``cat``
    [n, C], ``dense`` [n, D], ``label`` [n] and ``mask`` None.

    ``cat`` / ``dense`` may be read-only memmaps of the ``.npy`` files of a `RankingStore` (``files``
    says which; ``label`` / ``mask`` are in memory, 1 / 8 of a row's bytes): training (`lists`), the
    dense statistics (`dense_stats`) and scoring (`predict`) read them a mini-batch or `BLOCK_ROWS`
    rows at a time and `release` the pages, so the process holds one block, not the arrays. Such data
    pickles as the file reference (Ray Train workers reopen the files). `flat` and `take` copy into
    memory."""

    cat: IntArray
    dense: FloatArray
    label: FloatArray
    mask: npt.NDArray[np.bool_] | None
    cat_cards: list[int]
    files: ListFiles | None = None

    @property
    def grouped(self) -> bool:
        return self.cat.ndim == 3

    @property
    def n_lists(self) -> int:
        """Lists (grouped) or rows (flat): what training batches draw from."""
        return int(self.label.shape[0])

    @property
    def n_rows(self) -> int:
        """Rows of the flattened arrays (padding included for grouped data)."""
        return int(np.prod(self.label.shape))

    def flat(self) -> tuple[IntArray, FloatArray, FloatArray]:
        """The rows that are not padding, in memory (a copy for grouped data)."""
        if not self.grouped:
            return self.cat, self.dense, self.label
        m = self.mask if self.mask is not None else np.ones(self.label.shape, dtype=bool)
        cat, dense = self.cat[m], self.dense[m]
        release(self.cat)
        release(self.dense)
        return np.asarray(cat), np.asarray(dense), self.label[m]

    def take(self, ix: IntArray) -> RankingData:
        """Lists (rows) ``ix`` as in-memory data (a copy)."""
        cat, dense, label, mask = self.lists(ix)
        return RankingData(cat, dense, label, mask, self.cat_cards)

    def lists(self, ix: IntArray) -> tuple[IntArray, FloatArray, FloatArray, npt.NDArray[np.bool_] | None]:
        """Copies of lists (grouped; rows when flat) ``ix`` in that order: cat, dense, label (float32),
        mask (None for flat data)."""
        cat, dense = np.asarray(self.cat[ix]), np.asarray(self.dense[ix])
        release(self.cat)
        release(self.dense)
        mask = None
        if self.grouped:
            mask = self.mask[ix] if self.mask is not None else np.ones((len(ix), self.label.shape[1]), bool)
        return cat, dense, self.label[ix].astype(np.float32), mask

    def rows(self, start: int, stop: int) -> tuple[IntArray, FloatArray]:
        """Rows ``start`` .. ``stop`` of the flattened ``cat`` [n_rows, C] / ``dense`` [n_rows, D]
        (padding included), copies read list by list."""
        if not self.grouped:
            cat, dense = np.array(self.cat[start:stop]), np.array(self.dense[start:stop])
        else:
            L = self.label.shape[1]
            l0, l1 = start // L, -(-stop // L)
            a, b = start - l0 * L, stop - l0 * L
            cat = np.array(self.cat[l0:l1]).reshape(-1, self.cat.shape[2])[a:b]
            dense = np.array(self.dense[l0:l1]).reshape(-1, self.dense.shape[2])[a:b]
        release(self.cat)
        release(self.dense)
        return cat, dense

    def predict(self, score: Callable[[IntArray, FloatArray], FloatArray]) -> FloatArray:
        """``score(cat [n, C], dense [n, D]) -> [n]`` over every row, `BLOCK_ROWS` at a time ->
        [U, L] (grouped; padding scored too) or [n]."""
        out = np.empty(self.n_rows, dtype=np.float32)
        for s in range(0, self.n_rows, BLOCK_ROWS):
            e = min(s + BLOCK_ROWS, self.n_rows)
            out[s:e] = score(*self.rows(s, e))
        return out.reshape(self.label.shape)

    def valid_rows(self, pick: IntArray | None = None) -> tuple[IntArray, FloatArray]:
        """The rows that are not padding (the rows of `flat`), or the ``pick``-th of them (ascending
        positions), read row by row."""
        if not self.grouped:
            return self.flat()[:2] if pick is None else self.lists(pick)[:2]
        m = self.mask if self.mask is not None else np.ones(self.label.shape, dtype=bool)
        lin = np.flatnonzero(m.ravel())
        if pick is not None:
            lin = lin[pick]
        L = self.label.shape[1]
        cat, dense = np.asarray(self.cat[lin // L, lin % L]), np.asarray(self.dense[lin // L, lin % L])
        release(self.cat)
        release(self.dense)
        return cat, dense

    @property
    def n_valid(self) -> int:
        """Rows that are not padding."""
        return self.n_rows if self.mask is None else int(self.mask.sum())

    def _valid_blocks(self) -> Iterator[FloatArray]:
        """The dense rows of `flat`, `BLOCK_ROWS` rows' worth of lists at a time (in order)."""
        if not self.grouped:
            for s in range(0, self.n_rows, BLOCK_ROWS):
                block = np.array(self.dense[s : s + BLOCK_ROWS])
                release(self.dense)
                yield block
            return
        per = max(1, BLOCK_ROWS // max(self.label.shape[1], 1))
        for s in range(0, self.n_lists, per):
            d = np.array(self.dense[s : s + per])
            release(self.dense)
            yield d if self.mask is None else d[self.mask[s : s + per]]

    def dense_stats(self) -> tuple[FloatArray, FloatArray]:
        """Mean and standard deviation [D] of the dense features over the rows that are not padding,
        streamed in blocks: the same float32 values as ``flat()[1].mean(axis=0)`` / ``.std(axis=0)``
        (numpy reduces the rows of a C-ordered array sequentially; the blocks continue that sum)."""
        D = self.dense.shape[-1]
        n = np.float32(self.n_valid)
        total = np.zeros(D, np.float32)
        for block in self._valid_blocks():
            total = np.add.reduce(np.concatenate([total[None], block]), axis=0)
        mean = total / n
        sq = np.zeros(D, np.float32)
        for block in self._valid_blocks():
            dev = block - mean
            sq = np.add.reduce(np.concatenate([sq[None], np.multiply(dev, dev, out=dev)]), axis=0)
        return mean, np.sqrt(sq / n)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        if self.files is not None:  # the memmaps travel as the file reference
            del state["cat"], state["dense"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        files = state.get("files")
        if files is not None:
            state["cat"], state["dense"] = files.open()
        self.__dict__.update(state)


class RankingStore:
    """Labelled candidate lists written block by block into ``cat`` [n_lists, width, C] int64,
    ``dense`` [n_lists, width, D] float32, ``label`` [n_lists, width] float32, ``mask`` [n_lists,
    width] bool: ``.npy`` files opened with ``np.lib.format.open_memmap`` in a scratch directory
    (``on_disk``; a fresh ``tempfile`` directory under ``parent``, None: the system's temporary
    directory), else arrays in memory. The arrays are allocated at the first `write` (which gives C
    and D) and zero (padding) where nothing is written; `data` gives the lists of a range as a
    `RankingData`. `close` (or leaving the ``with`` block, also on an exception) removes the
    directory; the store's `RankingData` must not be read after that."""

    _NAMES = ("cat", "dense", "label", "mask")

    def __init__(
        self, n_lists: int, width: int, *, on_disk: bool = True, parent: str | Path | None = None
    ) -> None:
        self.n_lists = n_lists
        self.width = width
        self.directory: Path | None = None
        if on_disk:
            self.directory = Path(tempfile.mkdtemp(prefix="recstack-ranking-", dir=parent))
        self._arrays: dict[str, npt.NDArray[Any]] = {}

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _allocate(self, n_cat: int, n_dense: int) -> None:
        shapes: dict[str, tuple[tuple[int, ...], type[np.generic]]] = {
            "cat": ((self.n_lists, self.width, n_cat), np.int64),
            "dense": ((self.n_lists, self.width, n_dense), np.float32),
            "label": ((self.n_lists, self.width), np.float32),
            "mask": ((self.n_lists, self.width), np.bool_),
        }
        for name, (shape, dtype) in shapes.items():
            if self.directory is None:
                self._arrays[name] = np.zeros(shape, dtype=dtype)
            else:  # a sparse file: what is never written costs no disk and reads as zeros
                path = str(self.directory / f"{name}.npy")
                self._arrays[name] = np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=shape)

    def write(
        self,
        rows: IntArray,
        cat: IntArray,
        dense: FloatArray,
        label: FloatArray,
        mask: npt.NDArray[np.bool_],
    ) -> None:
        """Lists ``rows`` (indices into the store) of ``L`` <= ``width`` candidates: ``cat`` [n, L, C],
        ``dense`` [n, L, D], ``label`` / ``mask`` [n, L]."""
        if self.directory is not None and not self.directory.is_dir():
            raise InvalidArgumentError("RankingStore: written after close()")
        if not self._arrays:
            self._allocate(cat.shape[2], dense.shape[2])
        n_cand = cat.shape[1]
        if n_cand > self.width:
            raise InvalidArgumentError(
                f"RankingStore: lists of {n_cand} candidates, the store holds {self.width}"
            )
        for name, block in zip(self._NAMES, (cat, dense, label, mask), strict=True):
            self._arrays[name][rows, :n_cand] = block
            release(self._arrays[name])

    def data(self, start: int, stop: int, width: int, cat_cards: list[int]) -> RankingData:
        """Lists ``start`` .. ``stop`` (their first ``width`` candidates) as `RankingData`: ``cat`` /
        ``dense`` read-only memmaps (on disk) or views, ``label`` / ``mask`` in memory."""
        if not self._arrays:
            raise InvalidArgumentError("RankingStore: nothing written")
        a = self._arrays
        label = np.array(a["label"][start:stop, :width])
        mask = np.array(a["mask"][start:stop, :width])
        if self.directory is None:
            cat, dense = a["cat"][start:stop, :width], a["dense"][start:stop, :width]
            return RankingData(cat, dense, label, mask, cat_cards)
        for name in self._NAMES:
            arr = a[name]
            assert isinstance(arr, np.memmap)
            arr.flush()
            release(arr)
        files = ListFiles(str(self.directory), start, stop, width)
        cat, dense = files.open()
        return RankingData(cat, dense, label, mask, cat_cards, files)

    def close(self) -> None:
        """Drop the arrays and remove the scratch directory."""
        self._arrays.clear()
        if self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)


def ndcg_per_list(
    scores: FloatArray, label: FloatArray, mask: npt.NDArray[np.bool_], k: int = 10
) -> npt.NDArray[np.float64]:
    """NDCG@k [U] of each group of [U, L] ranking by ``scores`` (padding excluded); a group without a
    positive gets 0."""
    s = np.where(mask, scores, -np.inf)
    order = np.argsort(-s, axis=1, kind="stable")[:, :k]
    gains = np.take_along_axis(label * mask, order, axis=1)
    disc = 1.0 / np.log2(np.arange(2, gains.shape[1] + 2))
    dcg = (gains * disc).sum(axis=1)
    npos = (label * mask).sum(axis=1)
    ideal = np.array([disc[: int(min(p, k))].sum() for p in npos])
    out: npt.NDArray[np.float64] = np.divide(dcg, ideal, out=np.zeros_like(dcg), where=ideal > 0)
    return out


def ndcg_at_k(scores: FloatArray, label: FloatArray, mask: npt.NDArray[np.bool_], k: int = 10) -> float:
    """Mean NDCG@k over groups [U, L] ranking by ``scores`` (padding excluded); groups without a
    positive count 0, as in the evaluation where their positives were not recalled."""
    return float(ndcg_per_list(scores, label, mask, k).mean())


@dataclass
class FieldSum:
    """A part of a ranker's logit that is a sum over the row's fields -- the MLP's first layer, a wide
    or first-order part, a factorisation machine's sums: ``bias + sum_f tables[f][cat_f] + dense @
    linear (+ dense^2 @ square)`` -> [n, k], ``dense`` standardised. Constants (no autograd history).
    A sum over fields splits by what each field depends on (`FactorisedNet`), and its categorical
    terms are gathers rather than a GEMM over the concatenated embeddings."""

    bias: torch.Tensor  # [k]
    tables: list[torch.Tensor | None]  # per categorical field: [cardinality, k]; None: not read
    linear: torch.Tensor | None  # [D, k]
    square: torch.Tensor | None = None  # [D, k], on the squared standardised dense features

    def rows(self, cat: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
        """The sum for whole rows ``cat`` [n, C], standardised ``dense`` [n, D] -> [n, k]."""
        out = self.bias  # broadcast over the rows by the terms added to it
        if self.linear is not None:
            out = dense @ self.linear + out
        if self.square is not None:
            out = out + dense.pow(2) @ self.square
        for f, table in enumerate(self.tables):
            if table is not None:
                out = out + table[cat[:, f]]
        return out


def constant(t: torch.Tensor) -> torch.Tensor:
    """A copy of ``t`` without autograd history (traced into an ONNX graph as a constant)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tracer warns about .numpy()
        return torch.from_numpy(t.detach().numpy().copy())


def linear_over_fields(
    tables: nn.ModuleList, linear: nn.Linear, cat: torch.Tensor, dense: torch.Tensor, skip: set[int]
) -> torch.Tensor:
    """A wide or first-order part of rows ``cat`` / ``dense`` -> [n]: ``linear`` over the dense
    features plus one 1-d ``nn.Embedding`` per categorical field (the fields in ``skip`` not read);
    `embedding_sum` is the same part as a `FieldSum`."""
    out: torch.Tensor = linear(dense).squeeze(1)
    for f, table in enumerate(tables):
        if f not in skip:
            out = out + table(cat[:, f]).squeeze(1)
    return out


def embedding_sum(tables: nn.ModuleList, linear: nn.Linear, skip: set[int]) -> FieldSum:
    """A wide or first-order part as a `FieldSum`: ``linear`` over the dense features plus one
    ``nn.Embedding`` per categorical field (the fields in ``skip`` not read)."""
    weights: list[torch.Tensor | None] = []
    for f, table in enumerate(tables):
        assert isinstance(table, nn.Embedding)
        weights.append(None if f in skip else constant(table.weight))
    return FieldSum(constant(linear.bias), weights, constant(linear.weight.T))


class RankerNet(nn.Module):
    """Base network: field embeddings + dense standardisation; subclasses implement `logits`."""

    #: the MLP over [flatten(field embeddings), dense] of the subclasses that have one (`deep_logits`)
    deep: nn.Sequential

    def __init__(self, spec: dict[str, Any]) -> None:
        super().__init__()
        self.spec = spec
        e = spec["emb_dim"]
        self.n_fields = len(spec["cat_cards"])
        self.n_dense = spec["n_dense"]
        embs = [nn.Embedding(c, e) for c in spec["cat_cards"]]
        for emb in embs:
            nn.init.normal_(emb.weight, std=0.01)
        self.emb = nn.ModuleList(embs)
        self.register_buffer("mean", torch.zeros(self.n_dense))
        self.register_buffer("std", torch.ones(self.n_dense))
        self.id_mask = 1.0 if spec.get("id_features", True) else 0.0

    def field_embeddings(self, cat: torch.Tensor) -> torch.Tensor:
        """[n, C, e]; the id fields (0, 1) are zeroed when ``id_features`` is False."""
        embs = [emb(cat[:, j]) for j, emb in enumerate(self.emb)]
        if self.id_mask == 0.0:
            embs[0] = embs[0] * 0.0
            embs[1] = embs[1] * 0.0
        return torch.stack(embs, dim=1)

    def norm_dense(self, dense: torch.Tensor) -> torch.Tensor:
        mean, std = self.mean, self.std
        assert isinstance(mean, torch.Tensor) and isinstance(std, torch.Tensor)
        return (dense - mean) / std

    def logits(self, cat: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
        """Logits [n] of rows ``cat`` / standardised ``dense`` (training and PyTorch inference)."""
        raise NotImplementedError

    def id_fields_off(self) -> set[int]:
        """The categorical fields a ranker does not read: the id fields (0, 1) when ``id_features``
        is False."""
        return {0, 1} if self.id_mask == 0.0 else set()

    def field_sums(self) -> dict[str, FieldSum] | None:
        """The parts of the logit that are sums over the fields, which `logits_from_sums` combines into
        the logit (None: the ranker cannot be written that way). This base gives the MLP's first
        layer, ``h1``, when there is one; subclasses add their wide / first-order / FM parts."""
        first = self.first_layer()
        if first is None:
            return None
        e = int(self.spec["emb_dim"])
        skip = self.id_fields_off()
        with torch.no_grad():
            w = first.weight
            tables: list[torch.Tensor | None] = []
            for f, emb in enumerate(self.emb):
                assert isinstance(emb, nn.Embedding)
                # field f's embeddings through its block of the weight: [cardinality, hidden]
                tables.append(None if f in skip else constant(emb.weight @ w[:, f * e : (f + 1) * e].T))
            return {"h1": FieldSum(constant(first.bias), tables, constant(w[:, self.n_fields * e :].T))}

    def logits_from_sums(self, sums: dict[str, torch.Tensor], cat: torch.Tensor) -> torch.Tensor:
        """The logits [n] from the `field_sums` evaluated on the rows (``sums[name]`` [n, k]) and the
        rows' categorical codes ``cat`` (for a term that is not a sum, e.g. NCF's GMF product)."""
        raise NotImplementedError

    def first_layer(self) -> nn.Linear | None:
        """The first layer of ``self.deep`` (None: no MLP, e.g. logistic regression)."""
        deep = getattr(self, "deep", None)
        first = deep[0] if isinstance(deep, nn.Sequential) and len(deep) else None
        return first if isinstance(first, nn.Linear) else None

    def deep_logits(
        self, cat: torch.Tensor, dense: torch.Tensor, v_cat: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``self.deep`` (an `mlp` whose first layer is a Linear) over [flatten(field embeddings),
        dense] -> [n, out]; ``v_cat``: `field_embeddings` of ``cat`` when the caller has them."""
        if v_cat is None:
            v_cat = self.field_embeddings(cat)
        res: torch.Tensor = self.deep(torch.cat([v_cat.flatten(1), dense], dim=1))
        return res

    def forward(self, cat: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
        """Logits of raw rows. In an ONNX export the logit is computed from the `field_sums`: per
        categorical field a gather from a constant table (for the first layer, the field's
        embeddings projected by its block of the weight), and the dense features the only GEMM --
        about a third of the first layer's multiply-adds at emb_dim 16, without the unread fields."""
        d = self.norm_dense(dense)
        sums = self.field_sums() if torch.onnx.is_in_onnx_export() else None
        if sums is not None:
            return self.logits_from_sums({k: s.rows(cat, d) for k, s in sums.items()}, cat)
        out: torch.Tensor = self.logits(cat, d)
        return out


def mlp(n_in: int, hidden: list[int] | tuple[int, ...], dropout: float, out: int | None = 1) -> nn.Sequential:
    layers: list[nn.Module] = []
    d = n_in
    for h in hidden:
        layers += [nn.Linear(d, h), nn.ReLU(), nn.Dropout(dropout)]
        d = h
    if out is not None:
        layers.append(nn.Linear(d, out))
    return nn.Sequential(*layers)


class NeuralRanker(Ranker):
    """A `Ranker` around one `RankerNet` subclass (``Net``)."""

    name: ClassVar[str]
    Net: ClassVar[type[RankerNet]]
    Config: ClassVar[type[RankerConfig]] = RankerConfig

    def __init__(self, config: RankerConfig | None = None, **overrides: Any) -> None:
        base = config.dump_config() if config is not None else {}
        base.update(overrides)
        self.config = self.Config.from_config(base)
        self.net: RankerNet | None = None
        self.fit_result: dict[str, Any] = {}

    # ------------------------------------------------------------------- fit
    def fit(self, dataset: Dataset | None, candidates: Any, validation: RankingData | None = None) -> Self:
        """Train on ``candidates`` (a `RankingData`); early stopping on ``validation``: NDCG@10 for
        grouped data, AUC for flat data. ``dataset`` is unused (the rows carry every feature)."""
        if not isinstance(candidates, RankingData):
            raise InvalidArgumentError("NeuralRanker.fit expects a RankingData of candidate rows")
        c = self.config
        data = candidates
        spec = {
            "cat_cards": list(data.cat_cards),
            "n_dense": int(data.dense.shape[-1]),
            "emb_dim": c.emb_dim,
            "hidden": list(c.hidden),
            "dropout": c.dropout,
            "id_features": c.id_features,
        }
        torch.manual_seed(c.seed)
        net = self.Net(spec)
        mean, std = data.dense_stats()
        net.mean.copy_(torch.from_numpy(mean.astype(np.float32)))  # type: ignore[operator]
        net.std.copy_(torch.from_numpy(np.where(std > 1e-6, std, 1.0).astype(np.float32)))  # type: ignore[operator]
        self.net = net
        grouped = data.grouped and c.loss != "bce"
        # the rows batches are read from: lists (grouped; memmaps stay on disk, a batch is read at a
        # time), or the flat rows (pointwise loss: a copy in memory)
        src = data if grouped or not data.grouped else RankingData(*data.flat(), None, data.cat_cards)
        n_rows = src.n_lists

        def batches(epoch: int, rng: np.random.Generator) -> Any:
            perm = torch.from_numpy(rng.permutation(n_rows))
            for s in range(0, n_rows, c.batch_size):
                yield perm[s : s + c.batch_size]

        def loss_fn(idx: torch.Tensor) -> torch.Tensor:
            cat_n, dense_n, lab_n, mask_n = src.lists(idx.numpy())
            cat_b, dense_b, lab = torch.from_numpy(cat_n), torch.from_numpy(dense_n), torch.from_numpy(lab_n)
            if not grouped:
                bce: torch.Tensor = F.binary_cross_entropy_with_logits(net(cat_b, dense_b), lab)
                return bce
            assert mask_n is not None
            m = torch.from_numpy(mask_n)
            u, L = lab.shape
            logit = net(cat_b.reshape(u * L, -1), dense_b.reshape(u * L, -1)).reshape(u, L)
            logit = logit.masked_fill(~m, -1e9)
            lab = lab * m
            npos = lab.sum(dim=1)
            keep = npos > 0
            if not bool(keep.any()):
                zero: torch.Tensor = logit.sum() * 0.0
                return zero
            logit, lab, m, npos = logit[keep], lab[keep], m[keep], npos[keep]
            if c.loss == "softmax":
                logp = F.log_softmax(logit, dim=1)
                return -((logp * lab).sum(dim=1) / npos).mean()
            # bpr: each positive vs every valid negative
            neg = m & (lab == 0)
            diff = logit.unsqueeze(2) - logit.unsqueeze(1)  # [u, L(pos), L(neg)]
            pair = lab.unsqueeze(2) * neg.unsqueeze(1).to(lab.dtype)
            return -(F.logsigmoid(diff) * pair).sum() / pair.sum().clamp(min=1.0)

        validate = None
        if validation is not None:
            val = validation

            def validate() -> float:
                s = val.predict(self._predict)
                if val.grouped:
                    m = val.mask if val.mask is not None else np.ones(val.label.shape, bool)
                    return ndcg_at_k(s, val.label, m, 10)
                return auc(val.label, s)

        res = train_model(net, batches, loss_fn, c, n_rows=n_rows, validate=validate, description=self.name)
        self.fit_result = {"best_epoch": res.best_epoch, "best_val": res.best_metric, "seconds": res.seconds}
        return self

    # ---------------------------------------------------------------- scoring
    def _require(self) -> RankerNet:
        if self.net is None:
            raise NotFittedError(f"{self.name}: call fit() or load() first")
        return self.net

    def _predict(self, cat: IntArray, dense: FloatArray, batch: int = 65536) -> FloatArray:
        net = self._require()
        net.eval()
        out = np.empty(len(cat), dtype=np.float32)
        with torch.no_grad():
            for s in range(0, len(cat), batch):
                out[s : s + batch] = net(
                    torch.from_numpy(np.ascontiguousarray(cat[s : s + batch], dtype=np.int64)),
                    torch.from_numpy(np.ascontiguousarray(dense[s : s + batch], dtype=np.float32)),
                ).numpy()
        return out

    def score(self, features: dict[str, npt.NDArray[Any]]) -> FloatArray:
        """Logits [n] (float32, higher is better) of rows ``features["cat"]`` [n, C] int64 and
        ``features["dense"]`` [n, D] float32."""
        try:
            return self._predict(features["cat"], features["dense"])
        except KeyError as exc:
            raise InvalidArgumentError(
                f"{self.name}.score needs 'cat' and 'dense' arrays, missing {exc}"
            ) from None

    def export_onnx(self, path: str | Path) -> Path:
        """ONNX graph with inputs ``cat`` [batch, C] int64, ``dense`` [batch, D] float32 -> ``score``
        [batch] float32 (the same logits as `score`)."""
        net = self._require()
        return export_rows_onnx(net.eval(), net.n_fields, net.n_dense, path)

    # ---------------------------------------------------------------- storage
    def save(self, directory: str | Path) -> Path:
        net = self._require()
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        save_module(net, d / "ranker", net.spec)
        (d / "ranker_config.json").write_text(
            json.dumps({"model": self.name, "config": self.config.dump_config(), "fit": self.fit_result})
        )
        return d

    @classmethod
    def load(cls, directory: str | Path) -> Self:
        d = Path(directory)
        try:
            info = json.loads((d / "ranker_config.json").read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ArtifactError(f"{d}: cannot read ranker_config.json: {exc}") from exc
        if info.get("model") != cls.name:
            raise ArtifactError(f"{d}: holds ranker {info.get('model')!r}, not {cls.name!r}")
        obj = cls(cls.Config.from_config(info["config"]))
        module, _ = load_module(d / "ranker", cls.Net)
        assert isinstance(module, RankerNet)
        obj.net = module
        obj.fit_result = dict(info.get("fit") or {})
        return obj


def export_rows_onnx(module: nn.Module, n_fields: int, n_dense: int, path: str | Path) -> Path:
    """Write ``module`` (eval mode; ``module(cat, dense) -> score``) as ONNX: inputs ``cat`` [batch,
    ``n_fields``] int64, ``dense`` [batch, ``n_dense``] float32 -> ``score`` [batch] float32."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    args = (torch.zeros(4, n_fields, dtype=torch.int64), torch.zeros(4, n_dense, dtype=torch.float32))
    torch.onnx.export(
        module,
        args,
        str(p),
        input_names=["cat", "dense"],
        output_names=["score"],
        dynamic_axes={"cat": {0: "batch"}, "dense": {0: "batch"}, "score": {0: "batch"}},
        opset_version=17,
        dynamo=False,
    )
    return p


def auc(label: npt.ArrayLike, score: npt.ArrayLike) -> float:
    """ROC AUC with ties counted half (Mann-Whitney U)."""
    y = np.asarray(label, dtype=np.float64).ravel()
    s = np.asarray(score, dtype=np.float64).ravel()
    npos = y.sum()
    nneg = len(y) - npos
    if npos == 0 or nneg == 0:
        return float("nan")
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(len(s), dtype=np.float64)
    sorted_s = s[order]
    # average ranks of ties
    _, start, counts = np.unique(sorted_s, return_index=True, return_counts=True)
    avg = start + (counts + 1) / 2.0
    ranks[order] = np.repeat(avg, counts)
    return float((ranks[y == 1].sum() - npos * (npos + 1) / 2) / (npos * nneg))
