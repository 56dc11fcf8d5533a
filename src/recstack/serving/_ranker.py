"""ONNX Runtime scoring of (user, candidate item) pairs and the two-tower user tower.

Sessions run with ``intra_op_num_threads=1`` (the server runs one worker per core). Ranker inputs are
built from the release's `FeatureTables` by input name, vectorised over the candidates:

``uid`` [n] (user index + 1, 0 = unknown), ``iid`` [n] (item index + 1), ``ucat`` [n, 4] user codes,
``genres`` [n, G] float32, ``year`` / ``year_bucket`` [n], ``title`` / ``title_tokens`` [n, L],
``user_dense`` [n, 2] (activity, mean rating), ``item_dense`` [n, 2] (popularity, mean rating),
``hist`` [n, L] (recent items + 1, most recent first, 0 = padding), ``affinity`` [n, G] (the user's
genre shares over the recent items, `genre_affinity`).
"""

from __future__ import annotations

import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from recstack.errors import ArtifactError
from recstack.features.tables import FeatureTables
from recstack.serving._memo import ByteLRU
from recstack.serving.settings import ServingSettings

try:  # the serve extra: batch jobs may run without prometheus_client
    from recstack.ops import metrics
except ImportError:  # pragma: no cover
    metrics = None  # type: ignore[assignment]

if TYPE_CHECKING:  # serving imports the training module lazily, when a release has a two-stage model
    from recstack.models.ranking.two_stage import CandidateFeaturizer, UserState

__all__ = [
    "SUPPORTED_INPUTS",
    "FactorQuery",
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


def session(path: str | Path | bytes) -> Any:
    """An onnxruntime InferenceSession for CPU with one intra-op thread (``path``: a file or a
    serialised model)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    try:
        model = path if isinstance(path, bytes) else str(path)
        return ort.InferenceSession(model, sess_options=opts, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own exception types
        where = "serialised model" if isinstance(path, bytes) else path
        raise ArtifactError(f"{where}: cannot load ONNX model: {exc}") from exc


@dataclass(frozen=True)
class RankContext:
    """The user side of ranker inputs: dense index (None = unknown), categorical codes [4], recent
    history (item indices, most recent first) and genre affinity [G] (None: computed from ``recent``
    by the rankers that read it)."""

    user_idx: int | None
    ucat: IntArray
    recent: IntArray
    affinity: FloatArray | None = None


def factorised_feed(
    pair: FloatArray,
    items: IntArray,
    ucat: IntArray,
    udense: FloatArray,
) -> dict[str, Any]:
    """The inputs of one user's candidates (``ucat`` / ``udense``: that user's [C] / [D] values)."""
    return {
        "pair": np.ascontiguousarray(pair, dtype=np.float32),
        "item": np.ascontiguousarray(items, dtype=np.int64),
        "ucat": np.ascontiguousarray(ucat, dtype=np.int64).reshape(1, -1),
        "udense": np.ascontiguousarray(udense, dtype=np.float32).reshape(1, -1),
        "urow": np.zeros(len(items), dtype=np.int64),
    }


def concat_feeds(feeds: list[dict[str, Any]]) -> dict[str, Any]:
    """One call's inputs from several users' `factorised_feed`s (their user rows stacked, ``urow``
    pointing each candidate at its user's row)."""
    urow = [f["urow"] + u for u, f in enumerate(feeds)]
    out = {k: np.concatenate([f[k] for f in feeds], axis=0) for k in ("pair", "item", "ucat", "udense")}
    out["urow"] = np.concatenate(urow)
    return out


def genre_affinity(genres: FloatArray, recent: IntArray) -> FloatArray:
    """The user's genre shares [G] over the items ``recent`` (zeros without history)."""
    g = genres[recent].sum(axis=0) if len(recent) else np.zeros(genres.shape[1], np.float32)
    return (g / max(float(g.sum()), 1.0)).astype(np.float32)


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
                aff = ctx.affinity if ctx.affinity is not None else genre_affinity(f.genres, ctx.recent)
                v = np.broadcast_to(aff, (n, len(aff)))
            else:
                raise ArtifactError(f"ranker {self.name}: unknown ONNX input {name!r}")
            feed[name] = np.ascontiguousarray(v, dtype=np.int64 if _ints(meta) else np.float32)
        return feed

    def score(self, ctx: RankContext, items: IntArray) -> FloatArray:
        """Scores [n] float32 of candidate item indices ``items`` [n] for the user in ``ctx``."""
        if len(items) == 0:
            return np.zeros(0, dtype=np.float32)
        out = self.sess.run([self.output], self._feed(ctx, items))[0]
        return np.asarray(out, dtype=np.float32).reshape(-1)[: len(items)]

    def run_feeds(self, feeds: list[dict[str, Any]]) -> FloatArray:
        """Scores of several users' `_feed`s in one ONNX Runtime call (batch jobs), concatenated."""
        feed = {name: np.concatenate([f[name] for f in feeds], axis=0) for name in feeds[0]}
        return np.asarray(self.sess.run([self.output], feed)[0], dtype=np.float32).reshape(-1)


#: default number of user embeddings a `UserTower` memoises (~1 KB each with its key)
TOWER_MEMO_ENTRIES = 4096


class UserTower:
    """The two-tower user tower (ONNX): inputs ``uid`` [B], ``ucat`` [B, 4], ``hist`` [B, L] ->
    ``user_emb`` [B, dim] float32; ANN queries use it against the release's item embeddings.

    `encode` memoises its last ``memo_entries`` embeddings (LRU, thread-safe; 0: off), keyed by the
    exact inputs it feeds (id, codes, the first L recent items): a user whose history has not changed
    since gets the very embedding the session returned for the same inputs."""

    def __init__(self, path: str | Path, memo_entries: int = TOWER_MEMO_ENTRIES) -> None:
        self.sess = session(path)
        shapes = {m.name: m.shape for m in self.sess.get_inputs()}
        if set(shapes) != {"uid", "ucat", "hist"}:
            raise ArtifactError(f"{path}: user tower must take uid, ucat, hist; it takes {sorted(shapes)}")
        L = shapes["hist"][1]
        self.max_history = int(L) if isinstance(L, int) else 50
        self.output = self.sess.get_outputs()[0].name
        self.memo_entries = memo_entries
        self._memo: OrderedDict[tuple[int, bytes, bytes], FloatArray] = OrderedDict()
        self._lock = threading.Lock()

    def encode(self, user_idx: int | None, ucat: IntArray, recent: IntArray) -> FloatArray:
        """User embedding [dim] float32 (read-only) from the id (None = unknown), codes [4] and recent
        items (most recent first)."""
        uid = np.array([0 if user_idx is None else user_idx + 1], dtype=np.int64)
        codes = np.ascontiguousarray(ucat, dtype=np.int64).reshape(1, -1)
        r = np.ascontiguousarray(recent[: self.max_history], dtype=np.int64) + 1
        key = (int(uid[0]), codes.tobytes(), r.tobytes())
        if self.memo_entries > 0:
            with self._lock:
                hit = self._memo.get(key)
                if hit is not None:
                    self._memo.move_to_end(key)
                    return hit
        hist = np.zeros((1, self.max_history), dtype=np.int64)
        hist[0, : len(r)] = r
        out = self.sess.run([self.output], {"uid": uid, "ucat": codes, "hist": hist})
        emb: FloatArray = np.array(out[0], dtype=np.float32)[0]
        emb.setflags(write=False)
        if self.memo_entries > 0:
            with self._lock:
                self._memo[key] = emb
                while len(self._memo) > self.memo_entries:
                    self._memo.popitem(last=False)
        return emb


class FactorQuery:
    """The ANN query of a matrix-factorisation model (ALS, BPR) whose item factors the release's
    index holds (a release without a two-tower: at large data the index is built over ALS): a
    user's factor row, so that the ANN's inner products are the model's own scores
    (``user_factors[u] @ item_factors.T``). A user the model has no factors for (unknown to it, or
    without training interactions: an all-zero row) is folded in from its recent items
    (`fold_in`, ALS's exact half-step); no history, or a profile alone: no query (None).
    ``max_history``: how many recent items a fold-in reads."""

    def __init__(self, model: Any, max_history: int = 200) -> None:
        self.model = model
        self.user_factors: FloatArray = model.user_factors
        self.n_items = int(model.item_factors.shape[0])
        self.max_history = int(max_history)
        #: [n_users] whether a user's factor row was learnt from its interactions (not all zeros)
        self._learnt = np.any(self.user_factors != 0, axis=1)

    def knows(self, user_idx: IntArray) -> npt.NDArray[np.bool_]:
        """[n] whether each user index (-1: none) has a learnt factor row."""
        idx = np.asarray(user_idx, dtype=np.int64)
        ok = (idx >= 0) & (idx < len(self.user_factors))
        ok[ok] = self._learnt[idx[ok]]
        return ok

    def encode(self, user_idx: int | None, ucat: IntArray, recent: IntArray) -> FloatArray | None:
        """The user's query vector [dim] float32, or None when there is nothing to query with
        (``ucat`` is not used: a factor model knows no profiles)."""
        vecs, ok = self.encode_many(
            np.array([-1 if user_idx is None else user_idx], dtype=np.int64), [np.asarray(recent)]
        )
        return vecs[0] if ok[0] else None

    def encode_many(
        self, user_idx: IntArray, recents: list[IntArray]
    ) -> tuple[FloatArray, npt.NDArray[np.bool_]]:
        """Query vectors [n, dim] float32 of n users (index, -1: none; recent items, most recent
        first) and [n] whether each row is a query (a user with neither factors nor history is not:
        its row is zeros)."""
        import scipy.sparse as sp

        idx = np.asarray(user_idx, dtype=np.int64)
        known = self.knows(idx)
        out = np.zeros((len(idx), self.user_factors.shape[1]), dtype=np.float32)
        out[known] = self.user_factors[idx[known]]
        fold: list[int] = []  # the users folded in from their recent items
        cols: list[IntArray] = []  # their history rows: distinct valid item indices, sorted
        for r in np.flatnonzero(~known).tolist():
            c = np.asarray(recents[r][: self.max_history], dtype=np.int64)
            c = np.unique(c[(c >= 0) & (c < self.n_items)])
            if len(c):
                fold.append(r)
                cols.append(c)
        if fold:
            indptr = np.concatenate([[0], np.cumsum([len(c) for c in cols])]).astype(np.int64)
            hist = sp.csr_matrix(
                (np.ones(int(indptr[-1]), np.float32), np.concatenate(cols), indptr),
                shape=(len(fold), self.n_items),
            )
            out[fold] = self.model.fold_in(hist)
        ok = known.copy()
        ok[fold] = True
        return out, ok


@dataclass(frozen=True)
class _Entry:
    """A memoised user: its ranking state (without the per-item ranks: ``pair`` holds what they were
    for) and its feature rows' columns that depend on the user (`CandidateFeaturizer.column_scopes`):
    the ``pair`` columns of every item, the ``user`` columns' values."""

    cols: IntArray  #: the history row's items (sorted) the state was built from
    recent: IntArray  #: the items given besides the training row that made ``cols``
    state: UserState
    pair: FloatArray  #: [n_items, pair columns] dense
    dense_user: FloatArray  #: [user columns] dense
    cat_user: IntArray  #: [user columns] categorical
    nbytes: int


def _freeze(state: UserState) -> UserState:
    """``state`` with every array read-only (entries are shared by concurrent requests)."""
    for a in _arrays(state):
        a.setflags(write=False)
    return state


def _arrays(state: UserState) -> list[Any]:
    arrays = [state.scores, state.mu, state.sd, state.act, state.umean, state.aff, state.ucat, state.uid]
    if state.windows is not None:
        w = state.windows
        arrays += [getattr(w, f.name) for f in fields(w)]
    if state.text_profile is not None:  # the ranker's text features (issue 21)
        arrays.append(state.text_profile)
    return [np.asarray(a) for a in arrays] + ([] if state.ranks is None else [state.ranks])


def _nbytes(state: UserState, *extra: Any) -> int:
    return int(sum(a.nbytes for a in _arrays(state))) + int(sum(a.nbytes for a in extra))


#: how many users a `TwoStageRanker`'s doorkeeper remembers (the users whose last request missed the
#: memo and built no entry; about 100 bytes each)
DOORKEEPER_USERS = 65_536

#: default memory (MB) of a `TwoStageRanker`'s memo of known users' ranking state: the default of the
#: ``ranker_memo_mb`` serving setting
SCORE_MEMO_MB: float = ServingSettings.model_fields["ranker_memo_mb"].default


class TwoStageRanker(OnnxRanker):
    """The ranker of a two-stage model (ONNX inputs ``cat`` [n, C] int64, ``dense`` [n, D] float32):
    the inputs come from the model's own `CandidateFeaturizer` (its fitted recall sources + feature
    tables, the function training uses), so serving scores a candidate exactly as `TwoStage` does
    (per-source z-scores over the model's own recall list of the user).

    Known user -> its dense index (source scores from the model's training rows) and the history row
    (training row + the events of ``ctx.recent``); new user -> ``users=None`` and the history row of
    ``ctx.recent``; no history at all -> popularity order (as `TwoStage`).

    With ``standardise_over="recall"`` a feature row of (user, item) depends on the user (index +
    history row) and the item only, never on the other candidates. So known users are memoised
    (``memo_mb`` MB, LRU by user; 0 turns it off): their state (`CandidateFeaturizer.user_state`:
    the sources' masked score rows, the z-score mean / std over the recall list, affinity, codes) and
    their feature rows of every item (`CandidateFeaturizer.rows`), kept as the columns that depend on
    the user (`CandidateFeaturizer.column_scopes`; the item columns are shared). An entry is keyed by
    the recent items it was built from and by the history row: a request of a memoised user with the
    same history only gathers its candidates' rows; a history that grew (events since) masks the new
    items in the memoised score rows (the scores of a known user do not depend on its history) and
    rebuilds the rest; anything else recomputes. New users, profiles and liked-items requests are
    not memoised. Memoised or not, the rows are those of `CandidateFeaturizer.features_for`, bit for
    bit.

    Admission (a doorkeeper, as in TinyLFU): an entry costs the feature rows of every item, a request
    needs its few hundred candidates' rows. So a user's first miss builds only its candidates' rows
    (and their ranks among all items by binary search) and notes the user in the doorkeeper, the
    last `DOORKEEPER_USERS` users that missed; a miss of a user already noted builds the entry.
    Users who come back (a session, a page of results) are memoised from their second request;
    a stream of users seen once never pays for rows it does not read (at 62k items an entry is 6 MB
    and ~30 ms of CPU against ~5 ms for the candidates alone). `prewarm` admits directly."""

    def __init__(self, name: str, path: str | Path, model: Any, memo_mb: float = SCORE_MEMO_MB) -> None:
        self.name = name
        self.path = Path(path)
        self.sess = session(path)
        self.inputs = list(self.sess.get_inputs())
        self.output = self.sess.get_outputs()[0].name
        names = {m.name for m in self.inputs}
        if names != {"cat", "dense"}:
            raise ArtifactError(
                f"ranker {name} ({self.path}): a two-stage ranker takes cat, dense; got {names}"
            )
        import scipy.sparse as sp

        self.featurizer: CandidateFeaturizer = model.featurizer()
        self.features = self.featurizer.features
        self.n_items = int(self.features.n_items)
        self.n_sources = len(self.featurizer.sources)
        self._n_genres = int(self.featurizer.features.n_genres)
        self.train = model.train_matrix()
        # the user rows of the training matrix as sorted column lists of its positive entries
        pos = sp.csr_matrix(self.train > 0)
        pos.sort_indices()
        self._indptr = np.asarray(pos.indptr, dtype=np.int64)
        self._indices = np.asarray(pos.indices, dtype=np.int64)
        self._n_users = int(pos.shape[0])
        dense_scope, cat_scope = self.featurizer.column_scopes()
        self._dcols = {k: np.flatnonzero(np.array(dense_scope) == k) for k in ("pair", "item", "user")}
        self._ccols = {k: np.flatnonzero(np.array(cat_scope) == k) for k in ("item", "user")}
        #: the factorised serving graph of the model's ranker (`FactorisedNet`)
        self.fsess = self._factorised_session(model)
        #: known users' ranking state: user index -> `_Entry` (LRU by bytes)
        self.memo: ByteLRU[_Entry] = ByteLRU(0)
        #: the doorkeeper: users whose last miss built no entry (user index -> None, LRU order)
        self._seen: OrderedDict[int, None] = OrderedDict()
        self._seen_lock = threading.Lock()
        self.set_memo(memo_mb)
        # users without history: the model's cold-start order (chosen on its holdouts' cold users)
        pop = model.cold_order_scores() if hasattr(model, "cold_order_scores") else self.features.popularity
        self._cold: FloatArray = (-1e4 + pop / (pop.max() + 1.0)).astype(np.float32)

    def _factorised_session(self, model: Any) -> Any:
        """An ONNX Runtime session of the model's ranker (a neural ranker or an ensemble of them) as a
        `FactorisedNet`, exported in memory once per ranker and process."""
        from recstack.models.ranking._base import NeuralRanker
        from recstack.models.ranking.ensemble import RankerEnsemble
        from recstack.models.ranking.factorised import onnx_bytes

        ranker = getattr(model, "ranker", None)
        if not isinstance(ranker, NeuralRanker | RankerEnsemble):
            raise ArtifactError(
                f"ranker {self.name}: a two-stage model's ranker must be a neural ranker or an ensemble "
                f"of them, not {type(ranker).__name__}"
            )
        with _FACTORISED_LOCK:
            data = _FACTORISED.get(ranker)
            if data is None:
                # every item's item columns (they do not depend on the user: an anonymous user's rows)
                every = np.arange(self.n_items, dtype=np.int64)[None, :]
                cat, dense, _ = self.featurizer.features_for(
                    self._row(np.zeros(0, np.int64)), None, every, standardise_over="recall"
                )
                net = ranker.net() if isinstance(ranker, RankerEnsemble) else ranker._require()
                item_dense, item_cat = dense[0][:, self._dcols["item"]], cat[0][:, self._ccols["item"]]
                data = onnx_bytes(net, self.featurizer.column_scopes(), item_dense, item_cat)
                _FACTORISED[ranker] = data
        return session(data)

    def memo_bytes_per_user(self) -> int:
        """Approximate bytes of one memoised user: per source a float32 score row, a float32 row per
        ``pair`` feature column (`_Entry`), plus the small per-user arrays."""
        n_pair = len(self._dcols["pair"])
        return (self.n_sources + n_pair) * self.n_items * 4 + 64 * (self.n_sources + self._n_genres)

    def set_memo(self, memo_mb: float) -> int:
        """Size the memo of known users' ranking state to ``memo_mb`` MB (0: off; clears it and the
        doorkeeper); returns about how many users it holds (`memo_bytes_per_user`)."""
        max_bytes = int(memo_mb * 2**20) if memo_mb > 0 else 0
        self.memo.resize(max_bytes)
        with self._seen_lock:
            self._seen.clear()
        return max_bytes // self.memo_bytes_per_user()

    def _admit(self, u: int) -> bool:
        """Whether a miss of user ``u`` builds its memo entry: yes when the doorkeeper holds ``u``
        (its previous request missed too; it leaves the doorkeeper), else ``u`` is noted there (the
        least recent of `DOORKEEPER_USERS` dropped)."""
        with self._seen_lock:
            if u in self._seen:
                del self._seen[u]
                return True
            self._seen[u] = None
            while len(self._seen) > DOORKEEPER_USERS:
                self._seen.popitem(last=False)
            return False

    def prewarm(
        self, stop: threading.Event | None = None, recent: Callable[[int], IntArray] | None = None
    ) -> int:
        """Fill the memo with known users' ranking state, the most active users first, until it is
        full (or ``stop`` is set): the first request of each user then costs a gather instead of
        scoring every source (~4-6 ms on ML-100K). ``recent(u)``: user u's history as the server
        reads it (the store's; it may hold more than the model's training rows, e.g. when the model
        was fitted on a split's train part), so that the state built is the one requests look up.
        Runs off the request path (`build_state` starts it in a daemon thread); returns how many
        users it built."""
        if self.memo.max_bytes <= 0:
            return 0
        capacity = self.memo.max_bytes // max(self.memo_bytes_per_user(), 1)
        counts = np.diff(self._indptr)
        order = np.argsort(-counts, kind="stable")[: int(capacity)]
        built = 0
        for u in order:
            if stop is not None and stop.is_set():
                break
            if counts[u] == 0 or self.memo.get(int(u)) is not None:
                continue
            hist = recent(int(u)) if recent is not None else np.zeros(0, dtype=np.int64)
            self._lookup(int(u), hist, record=False, admit=True)
            built += 1
        return built

    def _cols(self, u: int | None, recent: IntArray) -> tuple[IntArray, IntArray | None]:
        """The items of user ``u``'s binary history row (sorted unique: its training row, if the model
        knows it, and the items ``recent``) and its dense index (None for a user unknown to the
        model)."""
        recent = np.asarray(recent, dtype=np.int64)
        cols = recent[(recent >= 0) & (recent < self.n_items)]
        known = u is not None and 0 <= u < self._n_users
        if known:
            assert u is not None
            cols = np.concatenate([self._indices[self._indptr[u] : self._indptr[u + 1]], cols])
        cols = np.unique(cols)  # sorted, as a canonical CSR row
        return cols, (np.array([u], dtype=np.int64) if known else None)

    def _row(self, cols: IntArray) -> Any:
        import scipy.sparse as sp

        return sp.csr_matrix(
            (np.ones(len(cols), np.float32), cols, np.array([0, len(cols)], dtype=np.int64)),
            shape=(1, self.n_items),
        )

    def _history(self, ctx: RankContext) -> tuple[Any, IntArray | None]:
        """The user's binary history row [1, n_items] and its dense index (None: unknown user)."""
        cols, users = self._cols(ctx.user_idx, ctx.recent)
        return self._row(cols), users

    def _feed(self, ctx: RankContext, items: IntArray) -> dict[str, Any]:
        """Inputs by `CandidateFeaturizer.features_for` (not memoised: batch jobs see a user once)."""
        hist, users = self._history(ctx)
        items = np.asarray(items, dtype=np.int64)
        cat, dense, _ = self.featurizer.features_for(hist, users, items[None, :], standardise_over="recall")
        return self._rows_feed(cat[0], dense[0], items)

    def user_state(self, cols: IntArray, users: IntArray, *, record: bool = True) -> UserState:
        """The ranking state of ONE known user (``users`` [1]) with history items ``cols``: from the
        memo when it holds the same history, else built (and memoised when the memo is on and the
        doorkeeper admits the user). ``record``: count the lookup in the memo metric (prewarm does
        not)."""
        return self._lookup(int(users[0]), cols, record)[0]

    def _lookup(
        self, u: int, recent: IntArray, record: bool, admit: bool = False
    ) -> tuple[UserState, _Entry | None]:
        """(`user_state` of known user ``u`` with the items ``recent`` besides its training row, the
        user's memo entry; None when there is none: the memo is off, or a miss the doorkeeper did not
        admit (``admit``: admit without asking it). An entry built from the same ``recent`` is a hit
        without building the history row. A state without an entry holds no per-item ranks (`rows`
        searches the candidates' ranks)."""
        memo_on = self.memo.max_bytes > 0
        count = record and memo_on and metrics is not None
        entry = self.memo.get(u) if memo_on else None
        if entry is not None and np.array_equal(entry.recent, recent):
            if count:
                metrics.child(metrics.RANKER_MEMO, "hit").inc()
            return entry.state, entry
        cols, users = self._cols(u, recent)
        assert users is not None
        if entry is not None and np.array_equal(entry.cols, cols):  # the same history, other order
            if count:
                metrics.child(metrics.RANKER_MEMO, "hit").inc()
            # keyed by this ``recent`` from now on (prewarm's history is in the store's order)
            seen = np.array(recent, dtype=np.int64)
            seen.setflags(write=False)
            entry = replace(entry, recent=seen, nbytes=entry.nbytes - entry.recent.nbytes + seen.nbytes)
            self.memo.put(u, entry, entry.nbytes)
            return entry.state, entry
        fz = self.featurizer
        hist = self._row(cols)
        grown = entry is not None and len(entry.cols) < len(cols) and np.isin(entry.cols, cols).all()
        if count:
            metrics.child(metrics.RANKER_MEMO, "grown" if grown else "miss").inc()
        if grown:
            assert entry is not None
            # events since: the known user's source scores are the same, the new items get -inf (as
            # `source_scores` masks a history)
            scores = np.array(entry.state.scores)
            scores[:, 0, np.setdiff1d(cols, entry.cols, assume_unique=True)] = -np.inf
            mats = list(scores)
        else:
            mats = fz.source_scores(hist, users)
        build = bool(memo_on and (admit or grown or self._admit(u)))
        state = fz.user_state(hist, users, mats, fz.recall_lists(hist, mats), full_ranks=build)
        if not build:
            return state, None
        entry = self._materialise(cols, np.array(recent, dtype=np.int64), state)
        self.memo.put(u, entry, entry.nbytes)
        return entry.state, entry

    def _materialise(self, cols: IntArray, recent: IntArray, state: UserState) -> _Entry:
        """The memo entry of a user's ``state``: the feature rows of every item (`rows`, so a gather
        from them is bit for bit the rows of any candidates), kept as the columns that depend on the
        user (`CandidateFeaturizer.column_scopes`; the item columns are shared by every user)."""
        every = np.arange(self.n_items, dtype=np.int64)[None, :]
        cat, dense, _ = self.featurizer.rows(state, every)
        cat, dense = cat[0], dense[0]
        kept = _freeze(replace(state, ranks=None))
        pair = np.ascontiguousarray(dense[:, self._dcols["pair"]])
        dense_user = dense[0, self._dcols["user"]].copy()
        cat_user = cat[0, self._ccols["user"]].copy()
        for a in (cols, recent, pair, dense_user, cat_user):
            a.setflags(write=False)
        nbytes = _nbytes(kept, cols, recent, pair, dense_user, cat_user)
        return _Entry(cols, recent, kept, pair, dense_user, cat_user, nbytes)

    def feed(self, ctx: RankContext, items: IntArray) -> dict[str, Any] | None:
        """The factorised graph's inputs of ``items`` [n] (n > 0) for the user of ``ctx``; None when
        the user has no history at all (cold start: popularity order)."""
        items = np.asarray(items, dtype=np.int64)
        u = ctx.user_idx
        if u is not None and 0 <= u < self._n_users and self._indptr[u + 1] > self._indptr[u]:
            # a known user with a training row
            state, entry = self._lookup(u, np.asarray(ctx.recent, dtype=np.int64), True)
            if entry is not None and len(items) and items.min() >= 0 and items.max() < self.n_items:
                return factorised_feed(
                    entry.pair.take(items, axis=0), items, entry.cat_user, entry.dense_user
                )
            cat, dense, _ = self.featurizer.rows(state, items[None, :])
        else:
            cols, users = self._cols(u, ctx.recent)
            if len(cols) == 0:
                return None
            if users is not None:
                cat, dense, _ = self.featurizer.rows(self.user_state(cols, users), items[None, :])
            else:
                cat, dense, _ = self.featurizer.features_for(
                    self._row(cols), None, items[None, :], standardise_over="recall"
                )
        return self._rows_feed(cat[0], dense[0], items)

    def _rows_feed(self, cat: IntArray, dense: FloatArray, items: IntArray) -> dict[str, Any]:
        """The factorised graph's inputs of whole rows ``cat`` [n, C] / ``dense`` [n, D] of ``items``
        [n] (one user, n > 0)."""
        return factorised_feed(
            dense[:, self._dcols["pair"]], items, cat[0, self._ccols["user"]], dense[0, self._dcols["user"]]
        )

    def _run(self, feed: dict[str, Any]) -> FloatArray:
        return np.asarray(self.fsess.run(["score"], feed)[0], dtype=np.float32).reshape(-1)

    def score(self, ctx: RankContext, items: IntArray) -> FloatArray:
        """Scores [n] float32 of candidate item indices ``items`` [n] (logits, higher is better)."""
        if len(items) == 0:
            return np.zeros(0, dtype=np.float32)
        feed = self.feed(ctx, items)
        if feed is None:
            return self._cold[items].copy()
        return self._run(feed)[: len(items)]

    def run_feeds(self, feeds: list[dict[str, Any]]) -> FloatArray:
        """Scores of several users' `_feed`s in one ONNX Runtime call (batch jobs), concatenated."""
        return self._run(concat_feeds(feeds))


#: serialised factorised graphs by ranker (the serving rankers of one model share them)
_FACTORISED: weakref.WeakKeyDictionary[Any, bytes] = weakref.WeakKeyDictionary()
_FACTORISED_LOCK = threading.Lock()


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
