"""Two-tower retrieval (PyTorch): in-batch sampled softmax with log-Q correction.

User tower: user id embedding + demographics (age bucket, gender, occupation, zip prefix) + the mean of
embeddings of the user's most recent items. Item tower: item id embedding + genres (multi-hot, linear)
+ release-year bucket + title tokens (mean of token embeddings). Both end in an MLP and are L2
normalised; score = cosine / temperature.

Training: every training interaction is a positive; the other items of the batch are negatives, their
logits corrected by ``-log q(item)`` (q = the item's share of training interactions, the probability it
appears in a batch), accidental hits (the same item elsewhere in the batch) are removed. The positive
item is removed from the user's history so that the model does not learn to retrieve the history.
Index 0 of every id / feature embedding is a shared OOV row; ids are dropped to 0 with probability
``id_dropout`` during training so that users and items unseen at fit time get an embedding from their
features alone.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import polars as pl
import scipy.sparse as sp
import torch
import torch.nn.functional as F  # noqa: N812
from pydantic import Field
from torch import nn

from recstack.config import ComponentConfig
from recstack.data.dataset import Dataset
from recstack.errors import ArtifactError, InvalidArgumentError, NotFittedError
from recstack.features.tables import USER_CATEGORICAL, FeatureTables, build_features
from recstack.models.base import Retriever
from recstack.models.ranking.trainer import load_module, save_module, train_model
from recstack.text.encoder import TextEncoderConfig

__all__ = ["TwoTower", "TwoTowerConfig", "TwoTowerNet"]

FloatArray = npt.NDArray[np.float32]
IntArray = npt.NDArray[np.int64]


#: entries of one validation score block (users x items): 64 MB of float32 scores
_VALIDATE_BLOCK_ENTRIES = 16 * 1024 * 1024


class TwoTowerConfig(ComponentConfig):
    """Hyperparameters. ``max_history``: recent items pooled in the user tower; ``temperature``
    divides cosine scores; ``val_fraction`` of training interactions is held out for early stopping on
    accuracy@100."""

    dim: int = 64
    hidden: int = 256
    id_dim: int = 64
    feat_dim: int = 16
    max_history: int = 64
    temperature: float = 0.05
    logq: bool = True
    id_dropout: float = 0.05
    history_dropout: float = 0.2
    epochs: int = 12
    batch_size: int = 1024
    lr: float = 2e-3
    weight_decay: float = 1e-5
    patience: int = 2
    val_fraction: float = 0.05
    seed: int = 42
    num_threads: int = 1
    #: issue 21: the item's text embedding (`recstack.text.embed_items`: title, year, genres, tags),
    #: projected to ``feat_dim`` by a linear layer, as an input of the item tower beside the id
    #: embedding; ``text_encoder`` / ``text_cache_dir`` as the ``content`` retriever's
    text: bool = False
    text_encoder: TextEncoderConfig = Field(default_factory=TextEncoderConfig)
    text_cache_dir: str | None = None


class TwoTowerNet(nn.Module):
    """Both towers. Inputs use +1-shifted ids with 0 = OOV / padding.

    user(uid[B], ucat[B, 4], hist[B, L]) -> [B, dim]; item(iid[N], genres[N, G], year[N], title[N, T],
    text[N, spec["text_dim"]]) -> [N, dim]; both L2-normalised. ``spec["text_dim"]`` 0 (the default):
    no text input.
    """

    def __init__(self, spec: dict[str, Any]) -> None:
        super().__init__()
        self.spec = spec
        d, h, idd, fd = spec["dim"], spec["hidden"], spec["id_dim"], spec["feat_dim"]
        self.user_id = nn.Embedding(spec["n_users"] + 1, idd)
        self.user_cat = nn.ModuleList(nn.Embedding(c, fd) for c in spec["user_cards"])
        self.hist = nn.Embedding(spec["n_items"] + 1, idd, padding_idx=0)
        self.item_id = nn.Embedding(spec["n_items"] + 1, idd)
        self.genre = nn.Linear(spec["n_genres"], fd, bias=False)
        self.year = nn.Embedding(spec["n_years"], fd)
        self.title = nn.Embedding(spec["n_tokens"], fd, padding_idx=0)
        text_dim = int(spec.get("text_dim", 0))
        # issue 21: the item text embedding, projected (None: no text input)
        self.text = nn.Linear(text_dim, fd, bias=False) if text_dim > 0 else None
        u_in = idd + fd * len(spec["user_cards"]) + idd
        i_in = idd + 3 * fd + (fd if text_dim > 0 else 0)
        self.user_mlp = nn.Sequential(nn.Linear(u_in, h), nn.ReLU(), nn.Linear(h, d))
        self.item_mlp = nn.Sequential(nn.Linear(i_in, h), nn.ReLU(), nn.Linear(h, d))
        for emb in (self.user_id, self.hist, self.item_id):
            nn.init.normal_(emb.weight, std=0.05)

    def user(self, uid: torch.Tensor, ucat: torch.Tensor, hist: torch.Tensor) -> torch.Tensor:
        mask = (hist > 0).to(torch.float32).unsqueeze(-1)
        pooled = (self.hist(hist) * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)
        parts = [self.user_id(uid), *(e(ucat[:, j]) for j, e in enumerate(self.user_cat)), pooled]
        return F.normalize(self.user_mlp(torch.cat(parts, dim=1)), dim=1)

    def item(
        self,
        iid: torch.Tensor,
        genres: torch.Tensor,
        year: torch.Tensor,
        title: torch.Tensor,
        text: torch.Tensor | None = None,
    ) -> torch.Tensor:
        tmask = (title > 0).to(torch.float32).unsqueeze(-1)
        tpooled = (self.title(title) * tmask).sum(dim=1) / tmask.sum(dim=1).clamp(min=1.0)
        parts = [self.item_id(iid), self.genre(genres), self.year(year), tpooled]
        if self.text is not None:
            if text is None:
                raise InvalidArgumentError("two_tower: this item tower takes the items' text embeddings")
            parts.append(self.text(text))
        return F.normalize(self.item_mlp(torch.cat(parts, dim=1)), dim=1)

    def forward(self, uid: torch.Tensor, ucat: torch.Tensor, hist: torch.Tensor) -> torch.Tensor:
        """The user tower (what ONNX export serves)."""
        return self.user(uid, ucat, hist)


class _UserTower(nn.Module):
    def __init__(self, net: TwoTowerNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, uid: torch.Tensor, ucat: torch.Tensor, hist: torch.Tensor) -> torch.Tensor:
        return self.net.user(uid, ucat, hist)


def _histories(interactions: pl.DataFrame, n_users: int, max_len: int) -> IntArray:
    """[n_users, max_len] +1-shifted item ids, most recent first, 0-padded."""
    out = np.zeros((n_users, max_len), dtype=np.int64)
    if interactions.height == 0:
        return out
    ordered = (
        interactions.select("user", "item", "timestamp")
        .sort(["user", "timestamp", "item"], descending=[False, True, False])
        .with_columns(pl.int_range(pl.len()).over("user").alias("pos"))
        .filter(pl.col("pos") < max_len)
    )
    out[ordered["user"].to_numpy(), ordered["pos"].to_numpy()] = (
        ordered["item"].to_numpy().astype(np.int64) + 1
    )
    return out


def _history_rows(history: sp.csr_matrix, max_len: int) -> IntArray:
    """Padded +1-shifted ids [n, max_len] of the nonzero columns of each history row."""
    h = history.tocsr()
    out = np.zeros((h.shape[0], max_len), dtype=np.int64)
    for r in range(h.shape[0]):
        cols = h.indices[h.indptr[r] : h.indptr[r + 1]][-max_len:]
        out[r, : len(cols)] = cols.astype(np.int64) + 1
    return out


class TwoTower(Retriever):
    """Two-tower retriever. ``score_users`` uses the stored id, demographics and recent history of
    known users; ``score_history`` serves anyone from a history row (pooled items) and an optional
    encoded profile (`score_history_profile`)."""

    name = "two_tower"
    Config = TwoTowerConfig
    tuning_grid = ({"temperature": 0.05}, {"temperature": 0.1})

    def __init__(self, config: ComponentConfig | None = None, **overrides: Any) -> None:
        super().__init__(config, **overrides)
        self.net: TwoTowerNet | None = None
        self.features: FeatureTables | None = None
        self.histories: IntArray | None = None
        self._item_emb: FloatArray | None = None
        self.fit_result: dict[str, Any] = {}
        #: [n_items, d] the items' text embeddings (``text``), else None
        self.text_emb: FloatArray | None = None

    @property
    def cfg(self) -> TwoTowerConfig:
        assert isinstance(self.config, TwoTowerConfig)
        return self.config

    # ----------------------------------------------------------------- fit
    def _fit(self, dataset: Dataset) -> None:
        c = self.cfg
        feats = build_features(dataset)
        self.features = feats
        if c.text:
            from recstack.text.encoder import embed_items

            self.text_emb = embed_items(dataset, c.text_encoder, cache_dir=c.text_cache_dir)
        else:
            self.text_emb = None
        spec = {
            "n_users": dataset.n_users,
            "n_items": dataset.n_items,
            "n_genres": feats.n_genres,
            "n_years": feats.cardinality("year_bucket"),
            "n_tokens": feats.cardinality("title_token"),
            "user_cards": feats.user_cardinalities(),
            "dim": c.dim,
            "hidden": c.hidden,
            "id_dim": c.id_dim,
            "feat_dim": c.feat_dim,
            "text_dim": 0 if self.text_emb is None else int(self.text_emb.shape[1]),
        }
        torch.manual_seed(c.seed)
        net = TwoTowerNet(spec)
        self.net = net
        inter = dataset.interactions
        rng = np.random.default_rng(c.seed)
        n = inter.height
        is_val = np.zeros(n, dtype=bool)
        if c.val_fraction > 0 and n >= 20:
            is_val[rng.choice(n, size=max(1, int(n * c.val_fraction)), replace=False)] = True
        fit_inter = inter.filter(pl.Series(~is_val))
        val_inter = inter.filter(pl.Series(is_val))
        hist = torch.from_numpy(_histories(fit_inter, dataset.n_users, c.max_history))
        u_all = torch.from_numpy(fit_inter["user"].to_numpy().astype(np.int64))
        i_all = torch.from_numpy(fit_inter["item"].to_numpy().astype(np.int64))
        counts = np.bincount(i_all.numpy(), minlength=dataset.n_items).astype(np.float64) + 1.0
        logq = torch.from_numpy(np.log(counts / counts.sum()).astype(np.float32))
        ucat = torch.from_numpy(feats.users_cat)
        ifeat = self._item_inputs(feats, self.text_emb)

        def batches(epoch: int, r: np.random.Generator) -> Any:
            perm = torch.from_numpy(r.permutation(len(u_all)))
            for s in range(0, len(perm), c.batch_size):
                idx = perm[s : s + c.batch_size]
                yield u_all[idx], i_all[idx]

        def loss_fn(batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
            u, i = batch
            b = len(u)
            h = hist[u]
            h = torch.where(h == (i + 1).unsqueeze(1), torch.zeros_like(h), h)
            if c.history_dropout > 0:
                keep = torch.rand(h.shape) >= c.history_dropout
                h = h * keep
            uid = (u + 1) * (torch.rand(b) >= c.id_dropout)
            iid = (i + 1) * (torch.rand(b) >= c.id_dropout)
            ue = net.user(uid, ucat[u], h)
            ie = net.item(iid, ifeat[1][i], ifeat[2][i], ifeat[3][i], ifeat[4][i])
            logits = ue @ ie.T / c.temperature
            if c.logq:
                logits = logits - logq[i].unsqueeze(0)
            same = i.unsqueeze(0) == i.unsqueeze(1)
            same.fill_diagonal_(False)
            logits = logits.masked_fill(same, -1e9)
            return F.cross_entropy(logits, torch.arange(b))

        val_u = val_inter["user"].to_numpy().astype(np.int64)
        val_i = val_inter["item"].to_numpy().astype(np.int64)

        def validate() -> float:
            """Accuracy@100 of the held-out pairs, in blocks of users: memory ``block x n_items``
            (the whole [users, items] score and argpartition matrices were 7.8 GB at 32,500 x 20,000)."""
            if len(val_u) == 0:
                return 0.0
            users = np.unique(val_u)
            ie = self._compute_item_emb()
            kk = min(100, ie.shape[0])
            pos = np.searchsorted(users, val_u)
            order = np.argsort(pos, kind="stable")
            sorted_pos = pos[order]
            hits = 0
            block = max(1, _VALIDATE_BLOCK_ENTRIES // max(ie.shape[0], 1))
            for start in range(0, len(users), block):
                stop = min(start + block, len(users))
                ue = self._user_emb(users[start:stop], hist_arr=hist.numpy())
                top = np.argpartition(-(ue @ ie.T), kk - 1, axis=1)[:, :kk]
                lo, hi = np.searchsorted(sorted_pos, [start, stop])
                sel = order[lo:hi]
                hits += int((top[pos[sel] - start] == val_i[sel, None]).any(axis=1).sum())
            return hits / len(val_u)

        res = train_model(
            net,
            batches,
            loss_fn,
            c,
            n_rows=len(u_all),
            validate=validate if len(val_u) else None,
            description="two_tower",
        )
        self.fit_result = {"best_epoch": res.best_epoch, "val_accuracy@100": res.best_metric}
        # serving history: every training interaction (validation part included)
        self.histories = _histories(inter, dataset.n_users, c.max_history)
        self._item_emb = self._compute_item_emb()

    @staticmethod
    def _item_inputs(feats: FeatureTables, text: FloatArray | None = None) -> tuple[torch.Tensor, ...]:
        """The item tower's inputs of every item: ids, genres, year bucket, title tokens and the text
        embeddings ([n, 0] without text)."""
        n = feats.n_items
        return (
            torch.arange(1, n + 1, dtype=torch.int64),
            torch.from_numpy(np.array(feats.genres, dtype=np.float32)),
            torch.from_numpy(np.array(feats.year_bucket, dtype=np.int64)),
            torch.from_numpy(np.array(feats.title_tokens, dtype=np.int64)),
            torch.from_numpy(np.zeros((n, 0), np.float32) if text is None else np.array(text, np.float32)),
        )

    # ------------------------------------------------------------ embeddings
    def _require_net(self) -> tuple[TwoTowerNet, FeatureTables]:
        if self.net is None or self.features is None:
            raise NotFittedError("two_tower: call fit() or load() first")
        return self.net, self.features

    def _compute_item_emb(self) -> FloatArray:
        net, feats = self._require_net()
        x = self._item_inputs(feats, self.text_emb)
        with torch.no_grad():
            return net.item(*x).numpy().astype(np.float32)

    def item_embeddings(self) -> FloatArray:
        """Item embeddings [n_items, dim] (float32, L2-normalised) for an ANN index (inner product)."""
        if self._item_emb is None:
            self._item_emb = self._compute_item_emb()
        return self._item_emb / np.float32(self.cfg.temperature)

    def _user_emb(
        self,
        users: IntArray | None,
        *,
        hist_arr: IntArray | None = None,
        hist_rows: IntArray | None = None,
        ucat: IntArray | None = None,
    ) -> FloatArray:
        net, feats = self._require_net()
        if users is not None:
            h = (hist_arr if hist_arr is not None else self.histories)[users]  # type: ignore[index]
            uid = users + 1
            cat = feats.users_cat[users]
        else:
            assert hist_rows is not None
            h = hist_rows
            uid = np.zeros(len(h), dtype=np.int64)
            cat = ucat if ucat is not None else np.zeros((len(h), len(USER_CATEGORICAL)), dtype=np.int64)
        with torch.no_grad():
            out = net.user(torch.from_numpy(uid), torch.from_numpy(cat), torch.from_numpy(h))
        return out.numpy().astype(np.float32)

    def user_embeddings(self, user_idx: npt.ArrayLike) -> FloatArray:
        """User embeddings [n, dim] (float32, L2-normalised) of known users."""
        return self._user_emb(np.asarray(user_idx, dtype=np.int64).ravel())

    # ---------------------------------------------------------------- scoring
    def score_users(self, user_idx: npt.ArrayLike) -> FloatArray:
        ue = self.user_embeddings(user_idx)
        return (ue @ self.item_embeddings().T).astype(np.float32)

    def score_history(self, history: sp.csr_matrix) -> FloatArray:
        return self.score_history_profile(history, None)

    def score_history_profile(self, history: sp.csr_matrix, ucat: IntArray | None) -> FloatArray:
        """Scores [n, n_items] for anonymous users: pooled history items + optional encoded profiles
        ``ucat`` [n, 4] (see `FeatureTables.encode_profile`); the user id is the OOV row."""
        self._require_net()
        rows = _history_rows(history, self.cfg.max_history)
        ue = self._user_emb(None, hist_rows=rows, ucat=ucat)
        return (ue @ self.item_embeddings().T).astype(np.float32)

    # ----------------------------------------------------------------- export
    def export_onnx(self, path: str | Path) -> Path:
        """The user tower as ONNX: inputs ``uid`` [B] int64 (dense index + 1, 0 = unknown), ``ucat``
        [B, 4] int64, ``hist`` [B, max_history] int64 (item index + 1, 0 = padding) -> ``user_emb``
        [B, dim] float32 (L2-normalised; score = user_emb @ item_embeddings().T)."""
        net, _ = self._require_net()
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        b, L = 2, self.cfg.max_history
        args = (
            torch.ones(b, dtype=torch.int64),
            torch.zeros(b, len(USER_CATEGORICAL), dtype=torch.int64),
            torch.ones(b, L, dtype=torch.int64),
        )
        torch.onnx.export(
            _UserTower(net).eval(),
            args,
            str(p),
            input_names=["uid", "ucat", "hist"],
            output_names=["user_emb"],
            dynamic_axes={
                "uid": {0: "batch"},
                "ucat": {0: "batch"},
                "hist": {0: "batch"},
                "user_emb": {0: "batch"},
            },
            opset_version=17,
            dynamo=False,
        )
        return p

    def export_item_embeddings(self, path: str | Path) -> Path:
        """``np.save`` of `item_embeddings` [n_items, dim] float32."""
        p = Path(path)
        np.save(p, self.item_embeddings(), allow_pickle=False)
        return p

    # ---------------------------------------------------------------- storage
    def _save(self, directory: Path) -> None:
        net, feats = self._require_net()
        save_module(net, directory / "two_tower", net.spec)
        feats.save(directory / "features")
        assert self.histories is not None
        np.save(directory / "histories.npy", self.histories, allow_pickle=False)
        if self.text_emb is not None:
            np.save(directory / "text_embeddings.npy", self.text_emb, allow_pickle=False)
        (directory / "fit_result.json").write_text(json.dumps(self.fit_result))

    def _load(self, directory: Path) -> None:
        module, _ = load_module(directory / "two_tower", TwoTowerNet)
        if not isinstance(module, TwoTowerNet):  # pragma: no cover - factory guarantees it
            raise ArtifactError(f"{directory}: not a two-tower model")
        self.net = module
        self.features = FeatureTables.load(directory / "features")
        self.histories = np.load(directory / "histories.npy", allow_pickle=False)
        text_dim = int(module.spec.get("text_dim", 0))
        self.text_emb = None
        if text_dim > 0:
            try:
                self.text_emb = np.load(directory / "text_embeddings.npy", allow_pickle=False)
            except OSError as exc:
                raise ArtifactError(f"{directory}: the item tower takes text embeddings: {exc}") from exc
            if self.text_emb.shape != (self.features.n_items, text_dim):
                raise ArtifactError(
                    f"{directory / 'text_embeddings.npy'}: expected [{self.features.n_items}, {text_dim}], "
                    f"got {self.text_emb.shape}"
                )
        self._item_emb = self._compute_item_emb()
        if self.histories.shape[1] != self.cfg.max_history:
            raise InvalidArgumentError(f"{directory}: history width does not match max_history")
