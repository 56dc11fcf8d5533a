"""The serving form of a ranker whose rows split by what each column depends on (a two-stage model's
rows, `CandidateFeaturizer.column_scopes`): ``pair`` columns (the user and the item), ``item`` columns
(the item only) and ``user`` columns (the user only).

`FactorisedNet` takes the parts instead of whole rows -- ``pair`` [n, Dp] float32, ``item`` [n] int64
(item index), ``ucat`` [U, Cu] int64 and ``udense`` [U, Du] float32 (one row per user of the call),
``urow`` [n] int64 (the user row of each candidate) -> ``score`` [n] float32 -- and holds every item's
item columns as constants. Every part of a ranker's logit that is a sum over the row's fields
(`RankerNet.field_sums`: the MLP's first layer, the bulk of a ranker's work; Wide & Deep's wide part;
DeepFM's first-order part and its FM's two sums) is then a sum of three terms: the item term (every
item's, precomputed: a gather), the user term (computed once per user of the call, from gathers and
element-wise products only, so that a user's term does not depend on the other users of the call) and
a GEMM over the pair columns. The ranker combines the sums into its logit (`RankerNet.logits_from_sums`);
a term that is not a sum (NCF's GMF product of the id embeddings) reads the categorical codes of the
whole rows, gathered in the graph from the parts. The score is the ranker's own (within float
rounding: 1e-5 in the tests).
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
from recstack.models.ranking._base import FieldSum, RankerNet

__all__ = ["INPUTS", "FactorisedNet", "export_factorised", "onnx_bytes"]

#: the ONNX inputs of a factorised ranker (serving builds them: ``recstack.serving._ranker``)
INPUTS = ("pair", "item", "ucat", "udense", "urow")


def _long(a: Any) -> torch.Tensor:
    return torch.as_tensor(np.asarray(a, dtype=np.int64))


def _cols(scopes: list[str], scope: str) -> list[int]:
    return [j for j, s in enumerate(scopes) if s == scope]


def _weights(w: torch.Tensor | None, cols: list[int], k: int) -> torch.Tensor:
    """Rows ``cols`` of a [D, k] weight (zeros for None)."""
    return torch.zeros(len(cols), k) if w is None else w[cols].contiguous()


class _SplitSum(nn.Module):
    """One `FieldSum` as item term (gathered) + user term (once per user) + pair GEMM. The linear
    part reads the raw pair / user columns: their standardisation is folded into its weights and
    its constant into the item term (two fewer element-wise passes over the candidates); a square
    part (DeepFM's FM) reads the standardised columns."""

    def __init__(
        self,
        fs: FieldSum,
        cols: dict[str, list[int]],
        item_dense: torch.Tensor,
        item_cat: npt.NDArray[np.int64],
        stats: dict[str, tuple[torch.Tensor, torch.Tensor]],
    ) -> None:
        super().__init__()
        k = int(fs.bias.shape[0])
        with torch.no_grad():
            item_term = fs.bias + item_dense @ _weights(fs.linear, cols["item"], k)
            raw: dict[str, torch.Tensor] = {}
            for scope in ("pair", "user"):
                # (x - mean) / std @ w = x @ (w / std) - (mean / std) @ w
                mean, std = stats[scope]
                w = _weights(fs.linear, cols[scope], k)
                raw[scope] = (w / std.unsqueeze(1)).contiguous()
                item_term = item_term - (mean / std) @ w
            if fs.square is not None:
                item_term = item_term + item_dense.pow(2) @ _weights(fs.square, cols["item"], k)
            for j, f in enumerate(cols["cat_item"]):
                if (table := fs.tables[f]) is not None:
                    item_term = item_term + table[_long(item_cat[:, j])]
        self.register_buffer("item_term", item_term.contiguous())
        self.register_buffer("pair_linear", raw["pair"])
        self.register_buffer("user_linear", raw["user"])
        self.square = fs.square is not None
        if fs.square is not None:
            self.register_buffer("pair_square", _weights(fs.square, cols["pair"], k))
            self.register_buffer("user_square", _weights(fs.square, cols["user"], k))
        # the user fields the sum reads and their columns among the user's categorical columns
        used = [(j, t) for j, f in enumerate(cols["cat_user"]) if (t := fs.tables[f]) is not None]
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
        standardised: tuple[torch.Tensor, torch.Tensor],
    ) -> torch.Tensor:
        """``pair`` / ``udense`` raw; ``standardised`` (pair, udense) for the square part -> [n, k]."""
        buf = dict(self.named_buffers())
        user = (udense.unsqueeze(2) * buf["user_linear"].unsqueeze(0)).sum(dim=1)  # [U, k]
        for j, tab in zip(self.user_fields, self.user_tables, strict=True):
            user = user + tab[ucat[:, j]]
        out = buf["item_term"][item] + user[urow] + pair @ buf["pair_linear"]
        if self.square:
            pair_n, user_n = standardised
            user_sq = (user_n.pow(2).unsqueeze(2) * buf["user_square"].unsqueeze(0)).sum(dim=1)
            out = out + user_sq[urow] + pair_n.pow(2) @ buf["pair_square"]
        res: torch.Tensor = out
        return res


class _Member(nn.Module):
    """One net over the parts: its field sums split (`_SplitSum`), or, for a net that has none
    (`RankerNet.field_sums` None), its logits over the whole rows rebuilt from the parts."""

    def __init__(
        self,
        net: RankerNet,
        cols: dict[str, list[int]],
        item_dense: npt.NDArray[np.float32],
        item_cat: npt.NDArray[np.int64],
    ) -> None:
        super().__init__()
        self.net = net.eval()
        mean, std = net.mean, net.std
        assert isinstance(mean, torch.Tensor) and isinstance(std, torch.Tensor)
        stats = {scope: (mean[cols[scope]].clone(), std[cols[scope]].clone()) for scope in ("pair", "user")}
        for scope, (m, sd) in stats.items():
            self.register_buffer(f"{scope}_mean", m)
            self.register_buffer(f"{scope}_std", sd)
        items = (torch.as_tensor(item_dense) - mean[cols["item"]]) / std[cols["item"]]
        sums = net.field_sums()
        self.names = list(sums) if sums is not None else []
        self.sums = nn.ModuleList([_SplitSum(s, cols, items, item_cat, stats) for s in (sums or {}).values()])

    def forward(
        self,
        pair: torch.Tensor,
        item: torch.Tensor,
        ucat: torch.Tensor,
        udense: torch.Tensor,
        urow: torch.Tensor,
        rows: Any,
    ) -> torch.Tensor:
        """``rows()`` -> the whole rows (cat, dense) when the net needs them."""
        buf = dict(self.named_buffers())
        if not self.names:
            cat, dense = rows()
            whole: torch.Tensor = self.net.logits(cat, self.net.norm_dense(dense))
            return whole
        # (only a square part reads the standardised columns: otherwise these leave the graph)
        standardised = (
            (pair - buf["pair_mean"]) / buf["pair_std"],
            (udense - buf["user_mean"]) / buf["user_std"],
        )
        sums = {
            n: s(pair, item, ucat, udense, urow, standardised)
            for n, s in zip(self.names, self.sums, strict=True)
        }
        out: torch.Tensor = self.net.logits_from_sums(sums, rows()[0])
        return out


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
        self.members = nn.ModuleList(
            [_Member(m, cols, item_dense, item_cat) for m in members]  # type: ignore[arg-type]
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

        def rows() -> tuple[torch.Tensor, torch.Tensor]:
            # the whole rows, for the parts of a ranker that are not field sums (unused ones leave
            # the graph)
            dense = torch.cat([pair, buf["item_dense"][item], udense[urow]], dim=1)[:, buf["perm_dense"]]
            cat = torch.cat([buf["item_cat"][item], ucat[urow]], dim=1)[:, buf["perm_cat"]]
            return cat, dense

        logits = [m(pair, item, ucat, udense, urow, rows) for m in self.members]
        if not self.ensemble:
            single: torch.Tensor = logits[0]
            return single
        out: torch.Tensor = ((torch.stack(logits, dim=1) - buf["shift"]) * buf["weight"]).sum(dim=1)
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
