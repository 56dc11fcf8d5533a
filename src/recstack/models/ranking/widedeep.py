"""Wide & Deep ranker (Cheng et al. 2016): a linear model over one-hot categorical fields and the dense
features (wide) plus an MLP over field embeddings and dense features (deep)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from recstack.models.ranking._base import (
    FieldSum,
    NeuralRanker,
    RankerNet,
    embedding_sum,
    linear_over_fields,
    mlp,
)

__all__ = ["WideDeep", "WideDeepNet"]


def _wide(net: WideDeepNet | LogisticNet, cat: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
    """The wide part: a linear model over the one-hot categorical fields and the dense features."""
    return linear_over_fields(net.wide_cat, net.wide_dense, cat, dense, net.id_fields_off())


class WideDeepNet(RankerNet):
    """logit = sum_j w_j[cat_j] + w . dense + b + MLP([emb, dense]) -> [n]."""

    def __init__(self, spec: dict[str, Any]) -> None:
        super().__init__(spec)
        ws = [nn.Embedding(c, 1) for c in spec["cat_cards"]]
        for w in ws:
            nn.init.zeros_(w.weight)
        self.wide_cat = nn.ModuleList(ws)
        self.wide_dense = nn.Linear(self.n_dense, 1)
        self.deep = mlp(self.n_fields * spec["emb_dim"] + self.n_dense, spec["hidden"], spec["dropout"])

    def logits(self, cat: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
        res: torch.Tensor = _wide(self, cat, dense) + self.deep_logits(cat, dense).squeeze(1)
        return res

    def field_sums(self) -> dict[str, FieldSum] | None:
        sums = super().field_sums()
        return (
            None
            if sums is None
            else sums | {"wide": embedding_sum(self.wide_cat, self.wide_dense, self.id_fields_off())}
        )

    def logits_from_sums(self, sums: dict[str, torch.Tensor], cat: torch.Tensor) -> torch.Tensor:
        res: torch.Tensor = sums["wide"][:, 0] + self.deep[1:](sums["h1"])[:, 0]
        return res


class WideDeep(NeuralRanker):
    """Wide & Deep ranker."""

    name = "widedeep"
    Net = WideDeepNet


class LogisticNet(RankerNet):
    """The wide part alone: logistic regression over one-hot categorical fields and dense features."""

    def __init__(self, spec: dict[str, Any]) -> None:
        super().__init__(spec)
        ws = [nn.Embedding(c, 1) for c in spec["cat_cards"]]
        for w in ws:
            nn.init.zeros_(w.weight)
        self.wide_cat = nn.ModuleList(ws)
        self.wide_dense = nn.Linear(self.n_dense, 1)

    def logits(self, cat: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
        return _wide(self, cat, dense)

    def field_sums(self) -> dict[str, FieldSum] | None:
        return {"wide": embedding_sum(self.wide_cat, self.wide_dense, self.id_fields_off())}

    def logits_from_sums(self, sums: dict[str, torch.Tensor], cat: torch.Tensor) -> torch.Tensor:
        return sums["wide"][:, 0]


class LogisticRegression(NeuralRanker):
    """Logistic-regression baseline (the ``ctr`` protocol's reference)."""

    name = "lr"
    Net = LogisticNet
