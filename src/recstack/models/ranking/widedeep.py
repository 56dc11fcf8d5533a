"""Wide & Deep ranker (Cheng et al. 2016): a linear model over one-hot categorical fields and the dense
features (wide) plus an MLP over field embeddings and dense features (deep)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from recstack.models.ranking._base import NeuralRanker, RankerNet, mlp

__all__ = ["WideDeep", "WideDeepNet"]


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

    def logits(self, cat: torch.Tensor, dense: torch.Tensor, h1: torch.Tensor | None = None) -> torch.Tensor:
        wide: torch.Tensor = self.wide_dense(dense).squeeze(1)
        for j, w in enumerate(self.wide_cat):
            if j < 2 and self.id_mask == 0.0:
                continue
            wide = wide + w(cat[:, j]).squeeze(1)
        res: torch.Tensor = wide + self.deep_logits(cat, dense, h1=h1).squeeze(1)
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

    def logits(self, cat: torch.Tensor, dense: torch.Tensor, h1: torch.Tensor | None = None) -> torch.Tensor:
        out: torch.Tensor = self.wide_dense(dense).squeeze(1)
        for j, w in enumerate(self.wide_cat):
            if j < 2 and self.id_mask == 0.0:
                continue
            out = out + w(cat[:, j]).squeeze(1)
        return out


class LogisticRegression(NeuralRanker):
    """Logistic-regression baseline (the ``ctr`` protocol's reference)."""

    name = "lr"
    Net = LogisticNet
