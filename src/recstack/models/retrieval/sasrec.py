"""SASRec (Kang & McAuley, 2018): causal self-attention over each user's most recent items.

A user is the sequence of their last ``max_len`` items in time order (oldest first), left-padded
with 0 (ids are shifted by one: item index ``i`` is token ``i + 1``). Token embeddings (scaled by
``sqrt(dim)``) plus a learned position embedding (position ``max_len - 1`` is always the most recent
item, so positions mean "how far back") go through ``blocks`` pre-norm transformer blocks whose
attention is `torch.nn.functional.scaled_dot_product_attention` with a causal mask that also hides
padding. The hidden state at position t scores the next item by an inner product with the (tied)
item embeddings: ``scores = h_t @ E.T``.

Training: every position of every user's training sequence predicts the item that follows it;
histories longer than ``max_len`` are cut into consecutive windows so that every interaction is a
target once. Loss ``full``: softmax cross-entropy over the whole catalogue (cheap up to a few 10k
items); ``sampled``: softmax over the positive and ``negatives`` uniformly drawn items shared by the
batch (accidental hits removed), for large catalogues. Early stopping: the last training item of
``val_fraction`` of the users is held out and NDCG@10 over the full catalogue (their other items
excluded) picks the epoch; the held-out items are not trained on.

Scoring: `score_users` runs the stored sequence of known users (all their training items, in
time order); `score_history` takes a history row's columns in stored order as the time order (a CSR
row holds no time: give `score_sequences` the items in order when it is known, as serving does).
PyTorch scores offline; serving runs `export_onnx`'s graph with ONNX Runtime (a parity test holds
the two equal) through `recstack.serving._kernels.history_scorer`, fed with the user's recent history
from the feature store, most recent first. Weights are saved as safetensors, the graph as ONNX.
"""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp
import torch
import torch.nn.functional as F  # noqa: N812
from pydantic import Field
from torch import nn

from recstack.config import ComponentConfig
from recstack.data.dataset import Dataset
from recstack.errors import ArtifactError, NotFittedError
from recstack.models.base import Retriever
from recstack.models.ranking.trainer import load_module, save_module, train_model
from recstack.models.retrieval._arrays import load_array

__all__ = ["SASRec", "SASRecConfig", "SASRecNet", "pad_sequences", "user_sequences"]

FloatArray = npt.NDArray[np.float32]
IntArray = npt.NDArray[np.int64]

#: users scored per forward pass offline
_SCORE_BATCH = 512


class SASRecConfig(ComponentConfig):
    """Hyperparameters. ``max_len``: items of a user's sequence the model attends to; ``dim``: the
    embedding width (divisible by ``heads``); ``blocks``: transformer blocks; ``loss``: ``full``
    (softmax over the catalogue) or ``sampled`` (``negatives`` uniform negatives per batch);
    ``val_fraction``: users whose last training item is held out for early stopping (0 = train a fixed
    ``epochs``); ``num_threads``: torch threads for training and offline scoring.

    Defaults chosen on validation carved from the training period (ML-100K ``leave-last-out`` train
    part; the model's own held-out last training items of 10% of the users, NDCG@10, 1 thread):
    dim 64 / dropout 0.2 / lr 2e-3 0.0841 (best epoch 5); dim 64 / dropout 0.5 / patience 5 0.1036
    (epoch 12, 85 CPU s); dim 32 / dropout 0.5 / lr 3e-3 / patience 5 0.1081 (epoch 9, 43 CPU s, this
    point). ``num_threads`` is 1: on a shared 2-core machine two torch threads spin and the same fit
    took 140 CPU s instead of 38 (the results are identical). benchmarks/bench_sequential.py has the
    test figures."""

    max_len: int = Field(default=50, ge=2)
    dim: int = Field(default=32, ge=4)
    heads: int = Field(default=2, ge=1)
    blocks: int = Field(default=2, ge=1)
    dropout: float = Field(default=0.5, ge=0.0, lt=1.0)
    loss: Literal["full", "sampled"] = "full"
    negatives: int = Field(default=256, ge=1)
    epochs: int = Field(default=30, ge=1)
    batch_size: int = Field(default=128, ge=1)
    lr: float = Field(default=3e-3, gt=0.0)
    weight_decay: float = Field(default=0.0, ge=0.0)
    patience: int = Field(default=5, ge=1)
    val_fraction: float = Field(default=0.1, ge=0.0, lt=1.0)
    seed: int = 42
    num_threads: int = Field(default=1, ge=1)


class _Block(nn.Module):
    """Pre-norm transformer block: x + attn(ln(x)), then x + ffn(ln(x))."""

    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.p = dropout
        self.ln1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)
        self.ln2 = nn.LayerNorm(dim)
        self.ff = nn.Sequential(nn.Linear(dim, dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(dim, dim))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        _, length, dim = x.shape
        hd = dim // self.heads
        qkv = self.qkv(self.ln1(x)).reshape(-1, length, 3, self.heads, hd).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(
            qkv[0], qkv[1], qkv[2], attn_mask=mask, dropout_p=self.p if self.training else 0.0
        )
        x = x + self.drop(self.out(a.transpose(1, 2).reshape(-1, length, dim)))
        out: torch.Tensor = x + self.drop(self.ff(self.ln2(x)))
        return out


class SASRecNet(nn.Module):
    """The network. ``seq`` [B, max_len] int64 (item index + 1, oldest first, left-padded with 0).

    ``encode(seq)`` -> hidden states [B, max_len, dim]; ``forward(seq)`` -> scores [B, n_items]
    (float32, higher is better) of the item that follows the last position."""

    causal: torch.Tensor
    diag: torch.Tensor
    positions: torch.Tensor

    def __init__(self, spec: dict[str, Any]) -> None:
        super().__init__()
        self.spec = spec
        n, d, length = spec["n_items"], spec["dim"], spec["max_len"]
        self.length = length
        self.scale = math.sqrt(d)
        self.item = nn.Embedding(n + 1, d, padding_idx=0)
        self.pos = nn.Embedding(length, d)
        self.blocks = nn.ModuleList(_Block(d, spec["heads"], spec["dropout"]) for _ in range(spec["blocks"]))
        self.norm = nn.LayerNorm(d)
        self.drop = nn.Dropout(spec["dropout"])
        nn.init.normal_(self.item.weight, std=0.05)
        nn.init.normal_(self.pos.weight, std=0.05)
        causal = torch.ones(length, length, dtype=torch.bool).tril()
        self.register_buffer("causal", causal, persistent=False)
        self.register_buffer("diag", torch.eye(length, dtype=torch.bool), persistent=False)
        self.register_buffer("positions", torch.arange(length), persistent=False)

    def encode(self, seq: torch.Tensor) -> torch.Tensor:
        valid = seq > 0
        keep = valid.unsqueeze(-1).to(torch.float32)
        x = self.drop(self.item(seq) * self.scale + self.pos(self.positions).unsqueeze(0)) * keep
        # causal, and padding hidden from every query; each position sees itself (no empty rows)
        mask = (self.causal.unsqueeze(0) & (valid.unsqueeze(1) | self.diag.unsqueeze(0))).unsqueeze(1)
        for blk in self.blocks:
            x = blk(x, mask) * keep
        out: torch.Tensor = self.norm(x)
        return out

    def item_weights(self) -> torch.Tensor:
        """Item embeddings [n_items, dim] (the padding row dropped)."""
        return self.item.weight[1:]

    def forward(self, seq: torch.Tensor) -> torch.Tensor:
        return self.encode(seq)[:, -1] @ self.item_weights().T


def user_sequences(dataset: Dataset) -> list[IntArray]:
    """Each user's item indices in time order (ties by item index), one array per user index."""
    inter = dataset.interactions
    users = inter["user"].to_numpy().astype(np.int64)
    items = inter["item"].to_numpy().astype(np.int64)
    ts = inter["timestamp"].to_numpy()
    order = np.lexsort((items, ts, users))
    bounds = np.searchsorted(users[order], np.arange(dataset.n_users + 1))
    sorted_items = items[order]
    return [sorted_items[bounds[u] : bounds[u + 1]] for u in range(dataset.n_users)]


def pad_sequences(seqs: list[IntArray], max_len: int) -> IntArray:
    """[n, max_len] model input: the last ``max_len`` items of each (time-ordered) sequence, + 1,
    left-padded with 0."""
    out = np.zeros((len(seqs), max_len), dtype=np.int64)
    for r, s in enumerate(seqs):
        tail = np.asarray(s, dtype=np.int64)[-max_len:]
        if len(tail):
            out[r, max_len - len(tail) :] = tail + 1
    return out


def _windows(seqs: list[IntArray], max_len: int) -> tuple[IntArray, IntArray]:
    """Training windows (inputs, targets) [w, max_len], left-padded: the targets of a window are the
    items at positions [a, e) of a sequence and its inputs the items at [a - 1, e - 1); windows tile
    each sequence from its end, so every item but the first is a target exactly once."""
    inp: list[IntArray] = []
    tgt: list[IntArray] = []
    for s in seqs:
        e = len(s)
        while e > 1:
            a = max(1, e - max_len)
            inp.append(s[a - 1 : e - 1])
            tgt.append(s[a:e])
            e = a
    return pad_sequences(inp, max_len), pad_sequences(tgt, max_len)


class SASRec(Retriever):
    """Self-attentive sequential retriever (see the module docstring)."""

    name: ClassVar[str] = "sasrec"
    Config: ClassVar[type[ComponentConfig]] = SASRecConfig
    tuning_grid: ClassVar[tuple[dict[str, Any], ...]] = tuple(
        {"dim": d, "dropout": p} for d in (32, 64) for p in (0.2, 0.5)
    )

    config: SASRecConfig

    def __init__(self, config: ComponentConfig | None = None, **overrides: Any) -> None:
        super().__init__(config, **overrides)
        self.net: SASRecNet | None = None
        #: [n_users, max_len] model inputs of the known users (every training item, in time order)
        self.sequences: IntArray | None = None
        self.fit_result: dict[str, Any] = {}
        self._onnx: bytes | None = None

    # ----------------------------------------------------------------- fit
    def _fit(self, dataset: Dataset) -> None:
        c = self.config
        if c.dim % c.heads:
            raise ValueError(f"sasrec: dim ({c.dim}) must be divisible by heads ({c.heads})")
        n_items = dataset.n_items
        spec = {
            "n_items": n_items,
            "dim": c.dim,
            "heads": c.heads,
            "blocks": c.blocks,
            "dropout": c.dropout,
            "max_len": c.max_len,
        }
        torch.manual_seed(c.seed)
        net = SASRecNet(spec)
        self.net = net
        self._onnx = None
        seqs = user_sequences(dataset)
        rng = np.random.default_rng(c.seed)
        # validation: the last training item of a sample of users with at least 3 items
        eligible = np.flatnonzero(np.array([len(s) >= 3 for s in seqs], dtype=bool))
        n_val = int(len(eligible) * c.val_fraction)
        val_users = np.sort(rng.choice(eligible, size=n_val, replace=False)) if n_val else eligible[:0]
        fit_seqs = list(seqs)
        for u in val_users:
            fit_seqs[u] = seqs[u][:-1]
        inp_np, tgt_np = _windows(fit_seqs, c.max_len)
        inp, tgt = torch.from_numpy(inp_np), torch.from_numpy(tgt_np)

        def batches(epoch: int, r: np.random.Generator) -> Any:
            perm = torch.from_numpy(r.permutation(len(inp)))
            for s in range(0, len(perm), c.batch_size):
                idx = perm[s : s + c.batch_size]
                yield inp[idx], tgt[idx]

        def loss_fn(batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
            x, y = batch
            h = net.encode(x)
            on = y > 0
            hs, ys = h[on], y[on] - 1  # [M, d], [M] item indices
            E = net.item_weights()
            if c.loss == "full":
                return F.cross_entropy(hs @ E.T, ys)
            neg = torch.randint(0, n_items, (c.negatives,))
            pos_logit = (hs * E[ys]).sum(dim=1, keepdim=True)
            neg_logit = (hs @ E[neg].T).masked_fill(neg.unsqueeze(0) == ys.unsqueeze(1), -1e9)
            logits = torch.cat([pos_logit, neg_logit], dim=1)
            return F.cross_entropy(logits, torch.zeros(len(ys), dtype=torch.int64))

        val_in = pad_sequences([fit_seqs[u] for u in val_users], c.max_len)
        val_item = np.array([seqs[u][-1] for u in val_users], dtype=np.int64)
        val_seen = [fit_seqs[u] for u in val_users]

        def validate() -> float:
            scores = self._forward(net, val_in)
            for r, seen in enumerate(val_seen):
                scores[r, seen] = -np.inf
            target = scores[np.arange(len(val_item)), val_item]
            rank = (scores > target[:, None]).sum(axis=1)  # 0-based rank of the held-out item
            return float(np.where(rank < 10, 1.0 / np.log2(rank + 2.0), 0.0).mean())

        res = train_model(
            net,
            batches,
            loss_fn,
            c,
            n_rows=len(inp),
            validate=validate if len(val_users) else None,
            description="sasrec",
        )
        self.fit_result = {
            "best_epoch": res.best_epoch,
            "val_ndcg@10": res.best_metric if len(val_users) else None,
            "epochs_run": len(res.history),
            "seconds": res.seconds,
            "history": res.history,
        }
        self.sequences = pad_sequences(seqs, c.max_len)

    # ---------------------------------------------------------------- scoring
    def _require_net(self) -> SASRecNet:
        self._check_fitted()
        if self.net is None or self.sequences is None:
            raise NotFittedError("sasrec: call fit() or load() first")
        return self.net

    def _forward(self, net: SASRecNet, seqs: IntArray) -> FloatArray:
        """PyTorch scores [n, n_items] float32 of padded inputs ``seqs`` [n, max_len]."""
        torch.set_num_threads(self.config.num_threads)
        net.eval()
        out = np.empty((len(seqs), net.spec["n_items"]), dtype=np.float32)
        with torch.no_grad():
            for s in range(0, len(seqs), _SCORE_BATCH):
                out[s : s + _SCORE_BATCH] = net(torch.from_numpy(seqs[s : s + _SCORE_BATCH])).numpy()
        return out

    def score_inputs(self, seqs: npt.ArrayLike) -> FloatArray:
        """Scores [n, n_items] float32 of model inputs [n, max_len] (`pad_sequences`) with PyTorch."""
        return self._forward(self._require_net(), np.asarray(seqs, dtype=np.int64))

    def score_sequences(self, seqs: list[IntArray]) -> FloatArray:
        """Scores [n, n_items] float32 of users given by their items in time order (oldest first)."""
        return self.score_inputs(pad_sequences(seqs, self.config.max_len))

    def score_users(self, user_idx: npt.ArrayLike) -> FloatArray:
        net = self._require_net()
        assert self.sequences is not None
        return self._forward(net, self.sequences[np.asarray(user_idx, dtype=np.int64).ravel()])

    def score_history(self, history: sp.csr_matrix) -> FloatArray:
        """Scores [n, n_items]: each row's nonzero columns, in stored order, taken as the time order."""
        self._require_net()
        h = sp.csr_matrix(history)
        rows = [h.indices[h.indptr[r] : h.indptr[r + 1]].astype(np.int64) for r in range(h.shape[0])]
        return self.score_sequences(rows)

    # ----------------------------------------------------------------- export
    def export_onnx(self, path: str | Path) -> Path:
        """The network as ONNX: input ``seq`` [B, max_len] int64 (item index + 1, oldest first,
        left-padded with 0) -> ``scores`` [B, n_items] float32 (higher is better)."""
        net = self._require_net()
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        example = torch.ones(2, self.config.max_len, dtype=torch.int64)
        torch.onnx.export(
            net.eval(),
            (example,),
            str(p),
            input_names=["seq"],
            output_names=["scores"],
            dynamic_axes={"seq": {0: "batch"}, "scores": {0: "batch"}},
            opset_version=17,
            dynamo=False,
        )
        return p

    def onnx_model(self) -> bytes:
        """The serialised ONNX graph of `export_onnx` (cached; what serving runs)."""
        if self._onnx is None:
            with tempfile.TemporaryDirectory() as tmp:
                self._onnx = self.export_onnx(Path(tmp) / "sasrec.onnx").read_bytes()
        return self._onnx

    def sequence_model(self) -> tuple[bytes, int]:
        """What serving runs (`recstack.serving._kernels.history_scorer`): the ONNX graph and the
        length of its input sequence."""
        return self.onnx_model(), self.config.max_len

    # ---------------------------------------------------------------- storage
    def _save(self, directory: Path) -> None:
        net = self._require_net()
        save_module(net, directory / "sasrec", net.spec)
        (directory / "sasrec.onnx").write_bytes(self.onnx_model())
        assert self.sequences is not None
        np.save(directory / "sequences.npy", self.sequences, allow_pickle=False)
        (directory / "fit_result.json").write_text(json.dumps(self.fit_result))

    def _load(self, directory: Path) -> None:
        module, _ = load_module(directory / "sasrec", SASRecNet)
        if not isinstance(module, SASRecNet):  # pragma: no cover - the factory guarantees it
            raise ArtifactError(f"{directory}: not a SASRec model")
        self.net = module
        self.sequences = load_array(directory / "sequences.npy", (None, self.config.max_len))
        try:
            self._onnx = (directory / "sasrec.onnx").read_bytes()
        except OSError as exc:
            raise ArtifactError(f"{directory}: cannot read sasrec.onnx: {exc}") from exc
        fit = directory / "fit_result.json"
        self.fit_result = json.loads(fit.read_text()) if fit.is_file() else {}
