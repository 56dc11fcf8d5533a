"""Neural collaborative filtering ranker (He et al. 2017, NeuMF): GMF over user and item id embeddings
plus an MLP over every field embedding and the dense features, fused by a final linear layer."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

from recstack.models.ranking._base import NeuralRanker, RankerNet, mlp

__all__ = ["NCF", "NCFNet"]


class NCFNet(RankerNet):
    """logit = w . [gmf_u * gmf_i, MLP([emb, dense])] + b -> [n]; GMF uses its own id embeddings
    (fields 0 = user, 1 = item)."""

    def __init__(self, spec: dict[str, Any]) -> None:
        super().__init__(spec)
        e = spec["emb_dim"]
        cards = spec["cat_cards"]
        self.gmf_user = nn.Embedding(cards[0], e)
        self.gmf_item = nn.Embedding(cards[1], e)
        nn.init.normal_(self.gmf_user.weight, std=0.01)
        nn.init.normal_(self.gmf_item.weight, std=0.01)
        hidden = spec["hidden"]
        self.deep = mlp(self.n_fields * e + self.n_dense, hidden, spec["dropout"], out=None)
        self.out = nn.Linear(e + (hidden[-1] if hidden else self.n_fields * e + self.n_dense), 1)

    def logits(self, cat: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
        return self._out(self.deep_logits(cat, dense), cat)

    def logits_from_sums(self, sums: dict[str, torch.Tensor], cat: torch.Tensor) -> torch.Tensor:
        return self._out(self.deep[1:](sums["h1"]), cat)

    def _out(self, deep: torch.Tensor, cat: torch.Tensor) -> torch.Tensor:
        if self.id_mask == 0.0 and torch.onnx.is_in_onnx_export():
            # without id features the GMF term is zero: ONNX exports leave it out
            e = self.gmf_user.embedding_dim
            cut: torch.Tensor = F.linear(deep, self.out.weight[:, e:], self.out.bias).squeeze(1)
            return cut
        gmf = self.gmf_user(cat[:, 0]) * self.gmf_item(cat[:, 1]) * self.id_mask
        res: torch.Tensor = self.out(torch.cat([gmf, deep], dim=1)).squeeze(1)
        return res


class NCF(NeuralRanker):
    """NeuMF ranker."""

    name = "ncf"
    Net = NCFNet
