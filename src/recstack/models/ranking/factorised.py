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


class _FirstLayer(nn.Module):
    """One net's MLP first layer as item term (gathered) + user term (once per user) + pair GEMM."""

    def __init__(
        self,
        net: RankerNet,
        first: nn.Linear,
        cols: dict[str, list[int]],
        item_dense: torch.Tensor,
        item_cat: npt.NDArray[np.int64],
    ) -> None:
        super().__init__()
        with torch.no_grad():
            e = int(net.spec["emb_dim"])
            w = first.weight.detach()
            mean, std = net.mean, net.std
            assert isinstance(mean, torch.Tensor) and isinstance(std, torch.Tensor)
            wd = w[:, net.n_fields * e :] / std  # the dense block on raw (unstandardised) values
            bias = first.bias.detach() - (w[:, net.n_fields * e :] * (mean / std)).sum(dim=1)

            item_term = item_dense @ wd[:, cols["item"]].T
            for j, f in enumerate(cols["cat_item"]):
                table = net.projected_table(f)
                if table is not None:  # (None: an id field zeroed by id_features False)
                    item_term = item_term + table[_long(item_cat[:, j])]
            self.register_buffer("item_term", item_term.contiguous())
            self.register_buffer("w_pair", wd[:, cols["pair"]].T.contiguous())
            self.register_buffer("w_user", wd[:, cols["user"]].T.contiguous())
            self.register_buffer("bias", bias.contiguous())
            # the user fields the layer reads (not the id field when ids are off) and their columns
            # among the user's categorical columns
            used = [
                (j, t) for j, f in enumerate(cols["cat_user"]) if (t := net.projected_table(f)) is not None
            ]
            self.user_fields = [j for j, _ in used]
            self.user_tables = nn.ParameterList(
                [nn.Parameter(t.contiguous(), requires_grad=False) for _, t in used]
            )

    def forward(
        self,
        pair: torch.Tensor,
        item: torch.Tensor,
        ucat: torch.Tensor,
        udense: torch.Tensor,
        urow: torch.Tensor,
    ) -> torch.Tensor:
        buf = dict(self.named_buffers())
        user = buf["bias"] + (udense.unsqueeze(2) * buf["w_user"].unsqueeze(0)).sum(dim=1)  # [U, H]
        for j, tab in zip(self.user_fields, self.user_tables, strict=True):
            user = user + tab[ucat[:, j]]
        h1: torch.Tensor = buf["item_term"][item] + user[urow] + pair @ buf["w_pair"]
        return h1


class FactorisedNet(nn.Module):
    """``net`` (a `RankerNet`, or an `EnsembleNet` of them: each member factorised, their logits
    combined as the ensemble does) over rows split by ``scopes`` (dense scopes, categorical scopes:
    ``pair`` / ``item`` / ``user`` per column; categorical columns are never ``pair``) with
    ``item_dense`` [n_items, item dense columns] and ``item_cat`` [n_items, item categorical columns],
    the item columns of every item's row in column order."""

    def __init__(
        self,
        net: nn.Module,
        scopes: tuple[list[str], list[str]],
        item_dense: npt.NDArray[np.float32],
        item_cat: npt.NDArray[np.int64],
    ) -> None:
        super().__init__()
        from recstack.models.ranking.ensemble import EnsembleNet

        members = list(net.members) if isinstance(net, EnsembleNet) else [net]
        if not all(isinstance(m, RankerNet) for m in members):
            raise InvalidArgumentError(f"FactorisedNet: cannot factorise a {type(net).__name__}")
        self.nets = nn.ModuleList([m.eval() for m in members])
        self.ensemble = isinstance(net, EnsembleNet)
        if isinstance(net, EnsembleNet):
            self.register_buffer("shift", net.shift.detach().clone())  # type: ignore[operator]
            self.register_buffer("weight", net.weight.detach().clone())  # type: ignore[operator]
        dense_scope, cat_scope = scopes
        first_net = members[0]
        assert isinstance(first_net, RankerNet)
        if (
            len(dense_scope) != first_net.n_dense
            or len(cat_scope) != first_net.n_fields
            or "pair" in cat_scope
        ):
            raise InvalidArgumentError("FactorisedNet: the scopes do not match the ranker's inputs")
        cols = {s: _cols(dense_scope, s) for s in ("pair", "item", "user")}
        cols |= {"cat_item": _cols(cat_scope, "item"), "cat_user": _cols(cat_scope, "user")}
        if item_dense.shape[1] != len(cols["item"]) or item_cat.shape[1] != len(cols["cat_item"]):
            raise InvalidArgumentError("FactorisedNet: the item tables do not match the item columns")
        # whole rows from the parts: [pair, item, user] columns back in row order
        order = np.array(cols["pair"] + cols["item"] + cols["user"], dtype=np.int64)
        self.register_buffer("perm_dense", _long(np.argsort(order)))
        self.register_buffer("perm_cat", _long(np.argsort(np.array(cols["cat_item"] + cols["cat_user"]))))
        self.register_buffer("item_dense", torch.as_tensor(np.array(item_dense, dtype=np.float32)))
        self.register_buffer("item_cat", _long(item_cat))
        firsts: list[nn.Module] = []
        for m in members:
            assert isinstance(m, RankerNet)
            first = m.first_layer()
            firsts.append(
                _FirstLayer(m, first, cols, self.item_dense, item_cat)  # type: ignore[arg-type]
                if first is not None
                else nn.Identity()  # no MLP (logistic regression): whole rows only
            )
        self.firsts = nn.ModuleList(firsts)

    def forward(
        self,
        pair: torch.Tensor,
        item: torch.Tensor,
        ucat: torch.Tensor,
        udense: torch.Tensor,
        urow: torch.Tensor,
    ) -> torch.Tensor:
        # whole rows, for the parts of a ranker outside its MLP (unused ones leave the graph)
        dense = torch.cat([pair, self.item_dense[item], udense[urow]], dim=1)[:, self.perm_dense]  # type: ignore[index]
        cat = torch.cat([self.item_cat[item], ucat[urow]], dim=1)[:, self.perm_cat]  # type: ignore[index]
        logits = []
        for net, first in zip(self.nets, self.firsts, strict=True):
            assert isinstance(net, RankerNet)
            h1 = first(pair, item, ucat, udense, urow) if isinstance(first, _FirstLayer) else None
            logits.append(net.logits(cat, net.norm_dense(dense), h1=h1))
        if not self.ensemble:
            single: torch.Tensor = logits[0]
            return single
        shift, weight = self.shift, self.weight
        assert isinstance(shift, torch.Tensor) and isinstance(weight, torch.Tensor)
        out: torch.Tensor = ((torch.stack(logits, dim=1) - shift) * weight).sum(dim=1)
        return out


def export_factorised(
    net: nn.Module,
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
    net: nn.Module,
    scopes: tuple[list[str], list[str]],
    item_dense: npt.NDArray[np.float32],
    item_cat: npt.NDArray[np.int64],
) -> bytes:
    """`export_factorised` in memory: the serialised ONNX model."""
    with tempfile.TemporaryDirectory() as tmp:
        return export_factorised(net, scopes, item_dense, item_cat, Path(tmp) / "ranker.onnx").read_bytes()
