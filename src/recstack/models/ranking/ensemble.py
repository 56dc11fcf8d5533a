"""An ensemble of neural rankers that scores, exports and serves as ONE ranker.

Members (`NeuralRanker`s: several seeds and / or architectures) are trained on the same rows; the
ensemble's score of a row is the mean of the members' logits, each standardised by the mean / std of its
logits over the training rows (so that no member dominates by the scale of its logits; the listwise loss
leaves that scale free). The ONNX export is one graph with the members' inputs ``cat`` [n, C] int64,
``dense`` [n, D] float32 and one output ``score`` [n] float32, so serving does not know it is an ensemble
(its cost is the members' summed).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from recstack.data.dataset import Dataset
from recstack.errors import ArtifactError, InvalidArgumentError, NotFittedError
from recstack.models.base import Ranker
from recstack.models.ranking._base import (
    NeuralRanker,
    RankerNet,
    RankingData,
    auc,
    export_rows_onnx,
    ndcg_at_k,
)

__all__ = ["EnsembleNet", "RankerEnsemble"]

FloatArray = npt.NDArray[np.float32]

#: training rows the members' logit mean / std are computed on (a seeded sample when there are more)
_STATS_ROWS = 200_000


class EnsembleNet(nn.Module):
    """score = mean_k (member_k(cat, dense) - shift_k) / scale_k -> [n] float32."""

    def __init__(self, members: Sequence[RankerNet], shift: Sequence[float], scale: Sequence[float]) -> None:
        super().__init__()
        if not members or len(shift) != len(members) or len(scale) != len(members):
            raise InvalidArgumentError("EnsembleNet needs one shift and one scale per member, and a member")
        self.members = nn.ModuleList(members)
        self.n_fields = members[0].n_fields
        self.n_dense = members[0].n_dense
        k = len(members)
        self.register_buffer("shift", torch.tensor(list(shift), dtype=torch.float32))
        # 1 / (k * scale): the mean of the standardised logits is one multiply-add per member
        self.register_buffer("weight", torch.tensor([1.0 / (k * s) for s in scale], dtype=torch.float32))

    def forward(self, cat: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
        shift, weight = self.shift, self.weight
        assert isinstance(shift, torch.Tensor) and isinstance(weight, torch.Tensor)
        logits = torch.stack([m(cat, dense) for m in self.members], dim=1)  # [n, k]
        out: torch.Tensor = ((logits - shift) * weight).sum(dim=1)
        return out


class RankerEnsemble(Ranker):
    """``members``: unfitted (for `fit`) or fitted (with ``shift`` / ``scale``, as `load` gives)
    `NeuralRanker`s of the same input layout."""

    name: ClassVar[str] = "ensemble"

    def __init__(
        self,
        members: Sequence[NeuralRanker],
        shift: Sequence[float] | None = None,
        scale: Sequence[float] | None = None,
    ) -> None:
        if not members:
            raise InvalidArgumentError("RankerEnsemble needs at least one member ranker")
        self.members = list(members)
        self.shift = list(shift) if shift is not None else None
        self.scale = list(scale) if scale is not None else None
        self.fit_result: dict[str, Any] = {}

    # ------------------------------------------------------------------- fit
    def fit(
        self,
        dataset: Dataset | None,
        candidates: Any,
        validation: RankingData | None = None,
        *,
        member_data: Callable[[int], tuple[RankingData, RankingData]] | None = None,
    ) -> Self:
        """Fit every member on ``candidates`` (a `RankingData`; early stopping on ``validation`` each),
        then the members' logit mean / std on the ``candidates`` rows. ``fit_result["best_val"]``: the
        ensemble's NDCG@10 (grouped) or AUC (flat) on ``validation``.

        ``member_data(i)``: (training, validation) rows of member i instead (bagging: e.g. each member
        early-stopped on its own held-out users and trained on the others); ``candidates`` then holds
        all the rows (for the mean / std) and ``best_val`` is the mean of the members' own figures."""
        if not isinstance(candidates, RankingData):
            raise InvalidArgumentError("RankerEnsemble.fit expects a RankingData of candidate rows")
        for i, m in enumerate(self.members):
            if member_data is not None:
                tr, va = member_data(i)
                m.fit(dataset, tr, validation=va)
            else:
                m.fit(dataset, candidates, validation=validation)
        n = candidates.n_valid
        keep = None
        if n > _STATS_ROWS:
            keep = np.sort(np.random.default_rng(0).choice(n, _STATS_ROWS, replace=False))
        cat, dense = candidates.valid_rows(keep)
        shift, scale = [], []
        for m in self.members:
            s = m.score({"cat": cat, "dense": dense}).astype(np.float64)
            shift.append(float(s.mean()))
            sd = float(s.std())
            scale.append(sd if sd > 1e-6 else 1.0)
        self.shift, self.scale = shift, scale
        self.fit_result = {
            "members": [{"model": m.name, "seed": m.config.seed, **m.fit_result} for m in self.members],
            "seconds": float(sum(m.fit_result.get("seconds", 0.0) for m in self.members)),
        }
        if member_data is not None:
            self.fit_result["best_val"] = float(np.mean([m.fit_result["best_val"] for m in self.members]))
            self.fit_result["bagged"] = True
        elif validation is not None:
            self.fit_result["best_val"] = _validation_metric(self, validation)
        return self

    # ---------------------------------------------------------------- scoring
    def net(self) -> EnsembleNet:
        """The ensemble as one torch module (eval mode)."""
        if self.shift is None or self.scale is None:
            raise NotFittedError("ensemble: call fit() or load() first")
        nets = []
        for m in self.members:
            if m.net is None:
                raise NotFittedError(f"ensemble member {m.name}: call fit() or load() first")
            nets.append(m.net)
        return EnsembleNet(nets, self.shift, self.scale).eval()

    def score(self, features: dict[str, npt.NDArray[Any]]) -> FloatArray:
        """Scores [n] float32 (higher is better) of rows ``features["cat"]`` [n, C] int64 and
        ``features["dense"]`` [n, D] float32: the mean of the members' standardised logits."""
        if self.shift is None or self.scale is None:
            raise NotFittedError("ensemble: call fit() or load() first")
        out = np.zeros(len(features["cat"]), dtype=np.float64)
        k = len(self.members)
        for m, sh, sc in zip(self.members, self.shift, self.scale, strict=True):
            out += (m.score(features).astype(np.float64) - sh) / (k * sc)
        return out.astype(np.float32)

    def export_onnx(self, path: str | Path) -> Path:
        """One ONNX graph: inputs ``cat`` [batch, C] int64, ``dense`` [batch, D] float32 -> ``score``
        [batch] float32 (the same scores as `score`)."""
        net = self.net()
        return export_rows_onnx(net, net.n_fields, net.n_dense, path)

    # ---------------------------------------------------------------- storage
    def save(self, directory: str | Path) -> Path:
        """``ensemble.json`` (member models, shift, scale, fit result) + one sub-directory per member."""
        self.net()
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        for i, m in enumerate(self.members):
            m.save(d / f"member_{i}")
        (d / "ensemble.json").write_text(
            json.dumps(
                {
                    "members": [m.name for m in self.members],
                    "shift": self.shift,
                    "scale": self.scale,
                    "fit": self.fit_result,
                }
            )
        )
        return d

    @staticmethod
    def is_saved(directory: str | Path) -> bool:
        return (Path(directory) / "ensemble.json").is_file()

    @classmethod
    def load(cls, directory: str | Path, resolve: Callable[[str], type[NeuralRanker]]) -> Self:
        """Read what `save` wrote; ``resolve(model name)`` gives a member's class."""
        d = Path(directory)
        try:
            info = json.loads((d / "ensemble.json").read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ArtifactError(f"{d}: cannot read ensemble.json: {exc}") from exc
        members = [resolve(name).load(d / f"member_{i}") for i, name in enumerate(info["members"])]
        obj = cls(members, info["shift"], info["scale"])
        obj.fit_result = dict(info.get("fit") or {})
        return obj


def _validation_metric(ranker: Ranker, val: RankingData) -> float:
    s = val.predict(lambda cat, dense: ranker.score({"cat": cat, "dense": dense}))
    if val.grouped:
        m = val.mask if val.mask is not None else np.ones(val.label.shape, bool)
        return ndcg_at_k(s, val.label, m, 10)
    return auc(val.label, s)
