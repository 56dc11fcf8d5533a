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
import warnings
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
    "FieldSum",
    "NeuralRanker",
    "RankerConfig",
    "RankerNet",
    "RankingData",
    "constant",
    "embedding_sum",
    "export_rows_onnx",
    "linear_over_fields",
    "ndcg_at_k",
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


@dataclass
class RankingData:
    """Training rows. Grouped (listwise) data has 3-d arrays: ``cat`` [U, L, C], ``dense`` [U, L, D],
    ``label`` [U, L] (1 positive, 0 negative), ``mask`` [U, L] (False = padding); flat data has ``cat``
    [n, C], ``dense`` [n, D], ``label`` [n] and ``mask`` None."""

    cat: IntArray
    dense: FloatArray
    label: FloatArray
    mask: npt.NDArray[np.bool_] | None
    cat_cards: list[int]

    @property
    def grouped(self) -> bool:
        return self.cat.ndim == 3

    def flat(self) -> tuple[IntArray, FloatArray, FloatArray]:
        if not self.grouped:
            return self.cat, self.dense, self.label
        m = self.mask if self.mask is not None else np.ones(self.label.shape, dtype=bool)
        return self.cat[m], self.dense[m], self.label[m]


def ndcg_at_k(scores: FloatArray, label: FloatArray, mask: npt.NDArray[np.bool_], k: int = 10) -> float:
    """Mean NDCG@k over groups [U, L] ranking by ``scores`` (padding excluded); groups without a
    positive count 0, as in the evaluation where their positives were not recalled."""
    s = np.where(mask, scores, -np.inf)
    order = np.argsort(-s, axis=1, kind="stable")[:, :k]
    gains = np.take_along_axis(label * mask, order, axis=1)
    disc = 1.0 / np.log2(np.arange(2, gains.shape[1] + 2))
    dcg = (gains * disc).sum(axis=1)
    npos = (label * mask).sum(axis=1)
    ideal = np.array([disc[: int(min(p, k))].sum() for p in npos])
    return float(np.divide(dcg, ideal, out=np.zeros_like(dcg), where=ideal > 0).mean())


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
        _, dense_f, _ = data.flat()
        spec = {
            "cat_cards": list(data.cat_cards),
            "n_dense": int(dense_f.shape[1]),
            "emb_dim": c.emb_dim,
            "hidden": list(c.hidden),
            "dropout": c.dropout,
            "id_features": c.id_features,
        }
        torch.manual_seed(c.seed)
        net = self.Net(spec)
        mean = dense_f.mean(axis=0)
        std = dense_f.std(axis=0)
        net.mean.copy_(torch.from_numpy(mean.astype(np.float32)))  # type: ignore[operator]
        net.std.copy_(torch.from_numpy(np.where(std > 1e-6, std, 1.0).astype(np.float32)))  # type: ignore[operator]
        self.net = net
        grouped = data.grouped and c.loss != "bce"
        if grouped:
            cat_t = torch.from_numpy(data.cat)
            dense_t = torch.from_numpy(data.dense)
            lab_t = torch.from_numpy(data.label.astype(np.float32))
            mask_t = torch.from_numpy(data.mask if data.mask is not None else np.ones(data.label.shape, bool))
            n_rows = cat_t.shape[0]
        else:
            cat_t, dense_t, lab_np = (torch.from_numpy(a) for a in data.flat())
            lab_t = lab_np.to(torch.float32)
            mask_t = torch.ones(0, dtype=torch.bool)
            n_rows = cat_t.shape[0]

        def batches(epoch: int, rng: np.random.Generator) -> Any:
            perm = torch.from_numpy(rng.permutation(n_rows))
            for s in range(0, n_rows, c.batch_size):
                yield perm[s : s + c.batch_size]

        def loss_fn(idx: torch.Tensor) -> torch.Tensor:
            if not grouped:
                logit = net(cat_t[idx], dense_t[idx])
                bce: torch.Tensor = F.binary_cross_entropy_with_logits(logit, lab_t[idx])
                return bce
            cat_b, dense_b, lab, m = cat_t[idx], dense_t[idx], lab_t[idx], mask_t[idx]
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
                if val.grouped:
                    s = self._predict(
                        val.cat.reshape(-1, val.cat.shape[2]), val.dense.reshape(-1, val.dense.shape[2])
                    )
                    m = val.mask if val.mask is not None else np.ones(val.label.shape, bool)
                    return ndcg_at_k(s.reshape(val.label.shape), val.label, m, 10)
                return auc(val.label, self._predict(val.cat, val.dense))

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
