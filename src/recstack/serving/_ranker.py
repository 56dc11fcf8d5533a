"""ONNX Runtime scoring of (user, candidate item) pairs and the two-tower user tower.

Sessions run with ``intra_op_num_threads=1`` (the server runs one worker per core). Ranker inputs are
built from the release's `FeatureTables` by input name, vectorised over the candidates:

``uid`` [n] (user index + 1, 0 = unknown), ``iid`` [n] (item index + 1), ``ucat`` [n, 4] user codes,
``genres`` [n, G] float32, ``year`` / ``year_bucket`` [n], ``title`` / ``title_tokens`` [n, L],
``user_dense`` [n, 2] (activity, mean rating), ``item_dense`` [n, 2] (popularity, mean rating),
``hist`` [n, L] (recent items + 1, most recent first, 0 = padding), ``affinity`` [n, G] (the user's
genre shares). When ``recstack.features`` provides ``ranker_inputs`` it is used instead, so that
training and serving build identical inputs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from recstack.errors import ArtifactError
from recstack.features.tables import FeatureTables

__all__ = ["SUPPORTED_INPUTS", "OnnxRanker", "RankContext", "UserTower", "session"]

#: ONNX input names `OnnxRanker` builds from the feature tables
SUPPORTED_INPUTS = frozenset(
    {
        "uid",
        "iid",
        "ucat",
        "hist",
        "genres",
        "year",
        "year_bucket",
        "title",
        "title_tokens",
        "item_dense",
        "user_dense",
        "affinity",
    }
)

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float32]


def session(path: str | Path) -> Any:
    """An onnxruntime InferenceSession for CPU with one intra-op thread."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    try:
        return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own exception types
        raise ArtifactError(f"{path}: cannot load ONNX model: {exc}") from exc


@dataclass(frozen=True)
class RankContext:
    """The user side of ranker inputs: dense index (None = unknown), categorical codes [4], recent
    history (item indices, most recent first) and genre affinity [G]."""

    user_idx: int | None
    ucat: IntArray
    recent: IntArray
    affinity: FloatArray | None = None


def _ints(meta: Any) -> bool:
    return "int" in str(meta.type)


class OnnxRanker:
    """A ranker exported to ONNX: ``score(ctx, items) -> scores[n]`` float32, higher is better."""

    def __init__(self, name: str, path: str | Path, features: FeatureTables | None) -> None:
        self.name = name
        self.path = Path(path)
        self.sess = session(path)
        self.features = features
        self.inputs = list(self.sess.get_inputs())
        self.output = self.sess.get_outputs()[0].name
        try:
            from recstack import features as feat_mod

            self._external = getattr(feat_mod, "ranker_inputs", None)
        except ImportError:  # pragma: no cover
            self._external = None
        if self._external is None:
            unknown = [m.name for m in self.inputs if m.name not in SUPPORTED_INPUTS]
            if unknown:
                raise ArtifactError(
                    f"ranker {name} ({self.path}): serving cannot build ONNX inputs {unknown}; "
                    f"supported inputs: {', '.join(sorted(SUPPORTED_INPUTS))}"
                )
            if features is None and any(m.name not in ("uid", "iid", "ucat", "hist") for m in self.inputs):
                raise ArtifactError(f"ranker {name}: its inputs need the release's feature tables")

    def _feed(self, ctx: RankContext, items: IntArray) -> dict[str, Any]:
        n = len(items)
        f = self.features
        feed: dict[str, Any] = {}
        for meta in self.inputs:
            name = meta.name
            shape = meta.shape
            width = shape[1] if len(shape) > 1 and isinstance(shape[1], int) else None
            if name == "uid":
                v: Any = np.full(n, 0 if ctx.user_idx is None else ctx.user_idx + 1, dtype=np.int64)
            elif name == "iid":
                v = items + 1
            elif name == "ucat":
                v = np.broadcast_to(ctx.ucat, (n, len(ctx.ucat)))
            elif name == "hist":
                L = width or max(len(ctx.recent), 1)
                row = np.zeros(L, dtype=np.int64)
                r = ctx.recent[:L] + 1
                row[: len(r)] = r
                v = np.broadcast_to(row, (n, L))
            elif f is None:
                raise ArtifactError(f"ranker {self.name}: input {name!r} needs the release's feature tables")
            elif name == "genres":
                v = f.genres[items]
            elif name in ("year", "year_bucket"):
                v = f.year_bucket[items]
            elif name in ("title", "title_tokens"):
                v = f.title_tokens[items]
            elif name == "item_dense":
                v = np.stack([f.popularity[items], f.item_mean_rating[items]], axis=1)
            elif name == "user_dense":
                u = ctx.user_idx
                row_d = np.array(
                    [0.0, 0.0] if u is None else [f.activity[u], f.user_mean_rating[u]], dtype=np.float32
                )
                v = np.broadcast_to(row_d, (n, 2))
            elif name == "affinity":
                aff = ctx.affinity if ctx.affinity is not None else np.zeros(f.n_genres, np.float32)
                v = np.broadcast_to(aff, (n, len(aff)))
            else:
                raise ArtifactError(f"ranker {self.name}: unknown ONNX input {name!r}")
            feed[name] = np.ascontiguousarray(v, dtype=np.int64 if _ints(meta) else np.float32)
        return feed

    def score(self, ctx: RankContext, items: IntArray) -> FloatArray:
        """Scores [n] float32 of candidate item indices ``items`` [n] for the user in ``ctx``."""
        if len(items) == 0:
            return np.zeros(0, dtype=np.float32)
        if self._external is not None and self.features is not None:
            feed = self._external(self.features, ctx, items, [m.name for m in self.inputs])
        else:
            feed = self._feed(ctx, items)
        out = self.sess.run([self.output], feed)[0]
        return np.asarray(out, dtype=np.float32).reshape(-1)[: len(items)]


class UserTower:
    """The two-tower user tower (ONNX): inputs ``uid`` [B], ``ucat`` [B, 4], ``hist`` [B, L] ->
    ``user_emb`` [B, dim] float32; ANN queries use it against the release's item embeddings."""

    def __init__(self, path: str | Path) -> None:
        self.sess = session(path)
        shapes = {m.name: m.shape for m in self.sess.get_inputs()}
        if set(shapes) != {"uid", "ucat", "hist"}:
            raise ArtifactError(f"{path}: user tower must take uid, ucat, hist; it takes {sorted(shapes)}")
        L = shapes["hist"][1]
        self.max_history = int(L) if isinstance(L, int) else 50
        self.output = self.sess.get_outputs()[0].name

    def encode(self, user_idx: int | None, ucat: IntArray, recent: IntArray) -> FloatArray:
        """User embedding [dim] float32 from the id (None = unknown), codes [4] and recent items
        (most recent first)."""
        hist = np.zeros((1, self.max_history), dtype=np.int64)
        r = recent[: self.max_history] + 1
        hist[0, : len(r)] = r
        uid = np.array([0 if user_idx is None else user_idx + 1], dtype=np.int64)
        out = self.sess.run(
            [self.output], {"uid": uid, "ucat": ucat.reshape(1, -1).astype(np.int64), "hist": hist}
        )
        emb: FloatArray = np.asarray(out[0], dtype=np.float32)[0]
        return emb
