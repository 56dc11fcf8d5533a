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

import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from recstack.errors import ArtifactError
from recstack.features.tables import FeatureTables

__all__ = [
    "SUPPORTED_INPUTS",
    "OnnxRanker",
    "RankContext",
    "TwoStageRanker",
    "UserTower",
    "load_ranker",
    "session",
]

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


class _MemoScores:
    """A recall source whose ``score_users`` of ONE known user is memoised (LRU, ``max_entries``
    rows, thread-safe); everything else goes to the source. The scores of a known user are a pure
    function of the fitted model and the user's index (events since the fit only enter the history
    mask that `CandidateFeaturizer.source_scores` applies to its own copy), so a hit returns exactly
    what the source would compute. Rows are read-only: callers copy (``np.array``) before writing."""

    def __init__(self, source: Any, max_entries: int) -> None:
        self.source = source
        self.max_entries = max_entries
        self._rows: OrderedDict[int, FloatArray] = OrderedDict()
        self._lock = threading.Lock()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.source, name)

    def score_users(self, user_idx: Any) -> FloatArray:
        idx = np.asarray(user_idx, dtype=np.int64).ravel()
        if len(idx) != 1 or self.max_entries <= 0:
            out: FloatArray = self.source.score_users(idx)
            return out
        key = int(idx[0])
        with self._lock:
            row = self._rows.get(key)
            if row is not None:
                self._rows.move_to_end(key)
                return row
        row = np.asarray(self.source.score_users(idx))
        row.setflags(write=False)
        with self._lock:
            self._rows[key] = row
            while len(self._rows) > self.max_entries:
                self._rows.popitem(last=False)
        return row

    def score_history(self, history: Any) -> FloatArray:
        out: FloatArray = self.source.score_history(history)
        return out


#: default memory (MB) of a `TwoStageRanker`'s memo of known users' recall-source scores
SCORE_MEMO_MB = 64.0


class TwoStageRanker(OnnxRanker):
    """The ranker of a two-stage model (ONNX inputs ``cat`` [n, C] int64, ``dense`` [n, D] float32):
    the inputs come from the model's own `CandidateFeaturizer.features_for` (its fitted recall
    sources + feature tables, the function training uses), so serving scores a candidate exactly as
    `TwoStage` does (per-source z-scores over the model's own recall list of the user).

    Known user -> its dense index (source scores from the model's training rows) and the history row
    (training row + the events of ``ctx.recent``); new user -> ``users=None`` and the history row of
    ``ctx.recent``; no history at all -> popularity order (as `TwoStage`).

    The recall-source scores of known users are memoised (``memo_mb`` MB, LRU by user; 0 turns it
    off): a known user's source scores do not change between requests, and computing them (the
    two-tower user embedding in PyTorch, item-kNN, EASE, ALS) is about a fifth of the ranking time on
    ML-100K."""

    def __init__(self, name: str, path: str | Path, model: Any, memo_mb: float = SCORE_MEMO_MB) -> None:
        self.name = name
        self.path = Path(path)
        self.sess = session(path)
        self.inputs = list(self.sess.get_inputs())
        self.output = self.sess.get_outputs()[0].name
        self._external = None
        names = {m.name for m in self.inputs}
        if names != {"cat", "dense"}:
            raise ArtifactError(
                f"ranker {name} ({self.path}): a two-stage ranker takes cat, dense; got {names}"
            )
        import scipy.sparse as sp

        from recstack.models.ranking.two_stage import CandidateFeaturizer

        fz = model.featurizer()
        self.features = fz.features
        self.n_items = int(self.features.n_items)
        self.train = model.train_matrix()
        # the user rows of the training matrix as sorted column lists of its positive entries
        pos = sp.csr_matrix(self.train > 0)
        pos.sort_indices()
        self._indptr = np.asarray(pos.indptr, dtype=np.int64)
        self._indices = np.asarray(pos.indices, dtype=np.int64)
        self._n_users = int(pos.shape[0])
        self.memo = {n: _MemoScores(src, 0) for n, src in fz.sources.items()}
        self.set_memo(memo_mb)
        self.featurizer = CandidateFeaturizer(dict(self.memo), fz.features, fz.per_source, fz.ablate)
        pop = self.features.popularity
        self._cold: FloatArray = (-1e4 + pop / (pop.max() + 1.0)).astype(np.float32)

    def set_memo(self, memo_mb: float) -> int:
        """Size the memo of known users' source scores to ``memo_mb`` MB (0: off); returns how
        many users it holds (4 bytes x items x sources each)."""
        per_user = 4 * self.n_items * max(len(self.memo), 1)
        entries = int(memo_mb * 2**20 // per_user) if memo_mb > 0 else 0
        for m in self.memo.values():
            with m._lock:
                m.max_entries = entries
                m._rows.clear()
        return entries

    def _history(self, ctx: RankContext) -> tuple[Any, IntArray | None]:
        """The user's binary history row [1, n_items] (the training row, if known, OR the items of
        ``ctx.recent``) and its dense index (None for a user unknown to the model)."""
        import scipy.sparse as sp

        recent = np.asarray(ctx.recent, dtype=np.int64)
        cols = recent[(recent >= 0) & (recent < self.n_items)]
        u = ctx.user_idx
        known = u is not None and 0 <= u < self._n_users
        if known:
            assert u is not None
            cols = np.concatenate([self._indices[self._indptr[u] : self._indptr[u + 1]], cols])
        cols = np.unique(cols)  # sorted, as a canonical CSR row
        row = sp.csr_matrix(
            (np.ones(len(cols), np.float32), cols, np.array([0, len(cols)], dtype=np.int64)),
            shape=(1, self.n_items),
        )
        return row, (np.array([u], dtype=np.int64) if known else None)

    def _feed(self, ctx: RankContext, items: IntArray) -> dict[str, Any]:
        hist, users = self._history(ctx)
        cat, dense, _ = self.featurizer.features_for(
            hist, users, np.asarray(items, dtype=np.int64)[None, :], standardise_over="recall"
        )
        return {"cat": cat.reshape(-1, cat.shape[2]), "dense": dense.reshape(-1, dense.shape[2])}

    def score(self, ctx: RankContext, items: IntArray) -> FloatArray:
        """Scores [n] float32 of candidate item indices ``items`` [n] (logits, higher is better)."""
        if len(items) == 0:
            return np.zeros(0, dtype=np.float32)
        hist, users = self._history(ctx)
        if hist.nnz == 0:
            return self._cold[items].copy()
        cat, dense, _ = self.featurizer.features_for(
            hist, users, np.asarray(items, dtype=np.int64)[None, :], standardise_over="recall"
        )
        feed = {"cat": cat.reshape(-1, cat.shape[2]), "dense": dense.reshape(-1, dense.shape[2])}
        out = self.sess.run([self.output], feed)[0]
        return np.asarray(out, dtype=np.float32).reshape(-1)[: len(items)]


def load_ranker(name: str, path: str | Path, release: Any, features: FeatureTables | None) -> OnnxRanker:
    """The serving ranker of release ranker ``name``: a `TwoStageRanker` when the ONNX file belongs to
    a two-stage model of the release, else an `OnnxRanker` over the feature tables."""
    owner = _two_stage_owner(name, Path(path), release)
    if owner is None:
        return OnnxRanker(name, path, features)
    return TwoStageRanker(name, path, release.retriever(owner))


def _two_stage_owner(name: str, path: Path, release: Any) -> str | None:
    """Alias of the two-stage retriever whose model directory holds ``path`` (a loaded `Release`), or
    of the in-memory two-stage retriever whose ranker variant is ``name`` (a `MemoryRelease`)."""
    manifest = getattr(release, "manifest", None)
    arts = getattr(manifest, "artifacts", None)
    root = getattr(release, "path", None)
    if arts is not None and root is not None:
        target = path.resolve()
        for alias, rel in arts.retrievers.items():
            model = str(arts.retriever_models.get(alias, ""))
            if model.startswith("two_stage") and target.is_relative_to((Path(root) / rel).resolve()):
                return str(alias)
        return None
    retrievers = getattr(release, "retrievers", None) or {}
    two = [a for a, r in retrievers.items() if getattr(r, "name", "") == "two_stage"]
    named = [a for a in two if str(getattr(retrievers[a].config, "ranker", "")) == name.split(":")[0]]
    if len(named) == 1:
        return str(named[0])
    return str(two[0]) if len(two) == 1 else None
