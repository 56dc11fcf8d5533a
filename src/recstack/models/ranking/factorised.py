"""The serving form of a ranker whose rows split by what each column depends on (a two-stage model's
rows, `CandidateFeaturizer.column_scopes`): ``pair`` columns (the user and the item), ``item`` columns
(the item only) and ``user`` columns (the user only).

`FactorisedNet` takes the parts instead of whole rows -- ``pair`` [n, Dp] float32, ``item`` [n] int64
(item index), ``ucat`` [U, Cu] int64 and ``udense`` [U, Du] float32 (one row per user of the call),
``urow`` [n] int64 (the user row of each candidate) -> ``score`` [n] float32 -- and holds every item's
item columns as constants. The MLP's first layer, the bulk of a ranker's work, is then a sum of three
terms: the item term (every item's, precomputed: a gather), the user term (computed once per user of
the call, from gathers and element-wise products only, so that a user's term does not depend on the
other users of the call) and one GEMM over the pair columns (the dense standardisation folded into its
weights). Parts of a ranker outside its MLP (Wide & Deep's wide part, DeepFM's FM, NCF's GMF term)
read the whole rows, rebuilt inside the graph from the parts. The score is the ranker's own (within
float rounding: 1e-5 in the tests).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from recstack.errors import InvalidArgumentError
from recstack.models.ranking._base import RankerNet

__all__ = ["INPUTS", "FactorisedNet", "export_factorised", "onnx_bytes"]

#: the ONNX inputs of a factorised ranker (serving builds them: ``recstack.serving._ranker``)
INPUTS = ("pair", "item", "ucat", "udense", "urow")


def _long(a: Any) -> torch.Tensor:
    return torch.as_tensor(np.asarray(a, dtype=np.int64))


def _cols(scopes: list[str], scope: str) -> list[int]:
    return [j for j, s in enumerate(scopes) if s == scope]


class FactorisedNet(nn.Module):
    """``net`` over rows split by ``scopes`` (dense scopes, categorical scopes: ``pair`` / ``item`` /
    ``user`` per column; categorical columns are never ``pair``) with ``item_dense`` [n_items, item
    dense columns] and ``item_cat`` [n_items, item categorical columns], the item columns of every
    item's row in column order."""

    def __init__(
        self,
        net: RankerNet,
        scopes: tuple[list[str], list[str]],
        item_dense: npt.NDArray[np.float32],
        item_cat: npt.NDArray[np.int64],
    ) -> None:
        super().__init__()
        dense_scope, cat_scope = scopes
        if len(dense_scope) != net.n_dense or len(cat_scope) != net.n_fields or "pair" in cat_scope:
            raise InvalidArgumentError("FactorisedNet: the scopes do not match the ranker's inputs")
        self.net = net.eval()
        pc, ic, uc = (_cols(dense_scope, s) for s in ("pair", "item", "user"))
        cic, cuc = _cols(cat_scope, "item"), _cols(cat_scope, "user")
        if item_dense.shape[1] != len(ic) or item_cat.shape[1] != len(cic):
            raise InvalidArgumentError("FactorisedNet: the item tables do not match the item columns")
        # whole rows from the parts: [pair, item, user] columns back in row order
        self.register_buffer("perm_dense", _long(np.argsort(np.array(pc + ic + uc, dtype=np.int64))))
        self.register_buffer("perm_cat", _long(np.argsort(np.array(cic + cuc, dtype=np.int64))))
        self.register_buffer("item_dense", torch.as_tensor(np.array(item_dense, dtype=np.float32)))
        self.register_buffer("item_cat", _long(item_cat))
        deep = getattr(net, "deep", None)
        first = deep[0] if isinstance(deep, nn.Sequential) and len(deep) else None
        self.factorised = isinstance(first, nn.Linear)
        if not isinstance(first, nn.Linear):
            return
        with torch.no_grad():
            e = int(net.spec["emb_dim"])
            w = first.weight.detach()
            mean, std = net.mean, net.std
            assert isinstance(mean, torch.Tensor) and isinstance(std, torch.Tensor)
            wd = w[:, net.n_fields * e :] / std  # the dense block on raw (unstandardised) values
            bias = first.bias.detach() - (w[:, net.n_fields * e :] * (mean / std)).sum(dim=1)

            def table(f: int) -> torch.Tensor:  # field f's embeddings through its block of the weight
                emb = net.emb[f]
                assert isinstance(emb, nn.Embedding)
                if f < 2 and net.id_mask == 0.0:
                    return torch.zeros(emb.num_embeddings, w.shape[0])
                return emb.weight.detach() @ w[:, f * e : (f + 1) * e].T

            item_term = self.item_dense @ wd[:, ic].T  # type: ignore[operator]
            for j, f in enumerate(cic):
                item_term = item_term + table(f)[_long(item_cat[:, j])]
            self.register_buffer("item_term", item_term.contiguous())
            self.register_buffer("w_pair", wd[:, pc].T.contiguous())
            self.register_buffer("w_user", wd[:, uc].T.contiguous())
            self.register_buffer("bias", bias.contiguous())
            self.user_tables = nn.ParameterList(
                [nn.Parameter(table(f).contiguous(), requires_grad=False) for f in cuc]
            )

    def forward(
        self,
        pair: torch.Tensor,
        item: torch.Tensor,
        ucat: torch.Tensor,
        udense: torch.Tensor,
        urow: torch.Tensor,
    ) -> torch.Tensor:
        net = self.net
        h1 = None
        if self.factorised:
            buf = dict(self.named_buffers())
            user = buf["bias"] + (udense.unsqueeze(2) * buf["w_user"].unsqueeze(0)).sum(dim=1)  # [U, H]
            for j, tab in enumerate(self.user_tables):
                user = user + tab[ucat[:, j]]
            h1 = buf["item_term"][item] + user[urow] + pair @ buf["w_pair"]
        dense = torch.cat([pair, self.item_dense[item], udense[urow]], dim=1)[:, self.perm_dense]  # type: ignore[index]
        cat = torch.cat([self.item_cat[item], ucat[urow]], dim=1)[:, self.perm_cat]  # type: ignore[index]
        out: torch.Tensor = net.logits(cat, net.norm_dense(dense), h1=h1)
        return out


def export_factorised(
    net: RankerNet,
    scopes: tuple[list[str], list[str]],
    item_dense: npt.NDArray[np.float32],
    item_cat: npt.NDArray[np.int64],
    path: str | Path,
) -> Path:
    """Write `FactorisedNet` as ONNX: inputs `INPUTS`, output ``score`` [n] float32."""
    module = FactorisedNet(net, scopes, item_dense, item_cat).eval()
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    n_pair = sum(s == "pair" for s in scopes[0])
    n_ucat = sum(s == "user" for s in scopes[1])
    n_udense = sum(s == "user" for s in scopes[0])
    args: Any = (
        torch.zeros(4, n_pair),
        torch.zeros(4, dtype=torch.int64),
        torch.zeros(2, n_ucat, dtype=torch.int64),
        torch.zeros(2, n_udense),
        torch.zeros(4, dtype=torch.int64),
    )
    with torch.no_grad():
        torch.onnx.export(
            module,
            args,
            str(p),
            input_names=list(INPUTS),
            output_names=["score"],
            dynamic_axes={
                "pair": {0: "n"},
                "item": {0: "n"},
                "urow": {0: "n"},
                "ucat": {0: "users"},
                "udense": {0: "users"},
                "score": {0: "n"},
            },
            opset_version=17,
            dynamo=False,
        )
    return p


def onnx_bytes(
    net: RankerNet,
    scopes: tuple[list[str], list[str]],
    item_dense: npt.NDArray[np.float32],
    item_cat: npt.NDArray[np.int64],
) -> bytes:
    """`export_factorised` in memory: the serialised ONNX model."""
    with tempfile.TemporaryDirectory() as tmp:
        return export_factorised(net, scopes, item_dense, item_cat, Path(tmp) / "ranker.onnx").read_bytes()
