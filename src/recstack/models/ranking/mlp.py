"""DNN ranker: the concatenated field embeddings and the standardised dense features through an MLP."""

from __future__ import annotations

from typing import Any

import torch

from recstack.models.ranking._base import NeuralRanker, RankerNet, mlp

__all__ = ["DNN", "DNNNet"]


class DNNNet(RankerNet):
    """logit = MLP([emb_1 .. emb_C, dense]) -> [n]."""

    def __init__(self, spec: dict[str, Any]) -> None:
        super().__init__(spec)
        self.deep = mlp(self.n_fields * spec["emb_dim"] + self.n_dense, spec["hidden"], spec["dropout"])

    def logits(self, cat: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
        res: torch.Tensor = self.deep_logits(cat, dense).squeeze(1)
        return res

    def logits_from_sums(self, sums: dict[str, torch.Tensor], cat: torch.Tensor) -> torch.Tensor:
        res: torch.Tensor = self.deep[1:](sums["h1"]).squeeze(1)
        return res


class DNN(NeuralRanker):
    """Embedding MLP ranker."""

    name = "dnn"
    Net = DNNNet
