"""The online recommendation pipeline: resolve the user -> recall (several sources, with quotas) ->
filter -> rank (ONNX Runtime) -> rerank (genre-diversity cap) -> top k.

Declared in TOML (`PipelineConfig.from_toml`)::

    k_default = 10
    k_max = 100
    [[sources]]
    name = "ann"            # the release's ANN index, queried with the user tower or the ALS user factors
    kind = "ann"
    quota = 200
    [[sources]]
    name = "itemknn"        # a release retriever scored from the user's recent history
    kind = "history"
    quota = 200
    recent = 50
    [[sources]]
    name = "popular"        # popular overall, or in a profile's segments when the release's cold-users
                            # validation found that beats popular (cold_start.json)
    kind = "popular"
    quota = 100
    [filters]
    exclude_seen = true
    [rank]
    ranker = "ncf"          # default variant; `model=` picks another; "recall" = merged recall score
    candidates = 300
    [rerank]
    genre_cap = 3           # at most 3 items of one genre in the top k (None = off)

Everything per release is precomputed (`Catalog`: genre bitmasks, years, popularity orders, CSR
histories); a request runs vectorised numpy over its few hundred candidates, never a Python loop
over items. Sources that the release lacks (no two-tower model, no item-kNN) are skipped.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import polars as pl
from pydantic import Field, model_validator

from recstack.config import ComponentConfig, load_toml
from recstack.errors import ArtifactError, InvalidArgumentError, UnavailableError
from recstack.features.segments import SegmentPopularity, user_profiles
from recstack.models.base import Retriever
from recstack.serving._catalog import Catalog, build_catalog, extend_catalog
from recstack.serving._history import History, HistoryBackend, MemoryHistory
from recstack.serving._kernels import HistoryScorer, history_scorer
from recstack.serving._memo import ByteLRU
from recstack.serving._ranker import FactorQuery, OnnxRanker, RankContext, UserTower, load_ranker
from recstack.serving._release import ServingRelease
from recstack.serving._search import SEARCH_MODELS, TextSearch, item_text, open_text_search
from recstack.serving._threads import rank_slot
from recstack.store._breaker import BreakerOpenError, CircuitBreaker

__all__ = [
    "COLD_START_FILE",
    "STAGES",
    "FilterConfig",
    "Pipeline",
    "PipelineConfig",
    "RankConfig",
    "RecRequest",
    "RecResult",
    "RerankConfig",
    "SourceConfig",
    "cold_start_policy",
]

log = logging.getLogger(__name__)

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float32]
#: one recall source's result: (name, ids, scores, the scores min-max normalised times the source's
#: weight: its share of the merged score, `Pipeline._merge`)
Recalled = tuple[str, IntArray, FloatArray, FloatArray]

#: pipeline stages, in order (names of the Prometheus stage histogram labels)
STAGES = ("resolve", "recall", "filter", "rank", "rerank")
RECALL_MODEL = "recall"
#: the recall source of the items added online (`Pipeline.add_items`)
NEW_ITEMS_SOURCE = "new_items"
_SECONDS_PER_DAY = 86_400


class SourceConfig(ComponentConfig):
    """One recall source. ``kind``: ``ann`` (the release's ANN index, queried with the two-tower's
    user tower, or with the user's factors when the index holds a factor model's items: ALS),
    ``history`` (a release retriever scored
    from the ``recent`` most recent history items), ``popular`` (popularity; segment popularity for a
    profile when the release's cold-start verdict says personal) or ``trending`` (popularity over the
    last ``trending_days`` of the data). ``retriever`` (``history``): the release retriever's alias
    (default: ``name``), or a list of aliases: the first one the release has (a release built for
    large data has no EASE; the default ``ease`` source then scores with time_ease)."""

    name: str = Field(min_length=1)
    kind: Literal["ann", "history", "popular", "trending"]
    retriever: str | tuple[str, ...] | None = None
    quota: int = Field(default=100, ge=1, le=10_000)
    weight: float = Field(default=1.0, gt=0)
    recent: int = Field(default=50, ge=1)


class FilterConfig(ComponentConfig):
    exclude_seen: bool = True


class RankConfig(ComponentConfig):
    """``ranker``: default ranker variant (None = the release's first ranker, or the merged recall
    score when it has none). ``candidates``: how many merged candidates the ranker scores."""

    ranker: str | None = None
    candidates: int = Field(default=300, ge=1, le=10_000)


class RerankConfig(ComponentConfig):
    """``genre_cap``: at most this many items sharing a genre in the top k (None disables);
    items over the cap move behind the others. ``window``: rerank the best ``window * k``."""

    genre_cap: int | None = Field(default=3, ge=1)
    window: int = Field(default=4, ge=1)


def _default_sources() -> tuple[SourceConfig, ...]:
    return (
        # the index over the two-tower's items (its user tower), or over ALS's (the user's factors)
        SourceConfig(name="ann", kind="ann", quota=200),
        SourceConfig(name="itemknn", kind="history", quota=200, recent=50),
        SourceConfig(name="ease", kind="history", quota=200, recent=50, retriever=("ease", "time_ease")),
        SourceConfig(name="popular", kind="popular", quota=100),
    )


class PipelineConfig(ComponentConfig):
    """The whole pipeline (see the module docstring for the TOML form)."""

    sources: tuple[SourceConfig, ...] = Field(default_factory=_default_sources)
    filters: FilterConfig = Field(default_factory=FilterConfig)
    rank: RankConfig = Field(default_factory=RankConfig)
    rerank: RerankConfig = Field(default_factory=RerankConfig)
    k_default: int = Field(default=10, ge=1)
    k_max: int = Field(default=100, ge=1, le=10_000)
    trending_days: float = Field(default=30.0, gt=0)
    #: memory (MB) of the memo of the ANN and history sources' results by exact query (0: off)
    recall_memo_mb: float = Field(default=32.0, ge=0)

    @model_validator(mode="after")
    def _check(self) -> PipelineConfig:
        names = [s.name for s in self.sources]
        if len(set(names)) != len(names):
            raise ValueError(f"source names must be unique, got {names}")
        if not self.sources:
            raise ValueError("at least one recall source is needed")
        if self.k_default > self.k_max:
            raise ValueError(f"k_default ({self.k_default}) must be <= k_max ({self.k_max})")
        return self

    @classmethod
    def from_toml(cls, path: str | Path) -> PipelineConfig:
        data = load_toml(path)
        return cls.from_config(data.get("pipeline", data))


@dataclass
class RecRequest:
    """One recommendation request. Item lists hold external ids; genres are names."""

    user_id: str | int | None = None
    profile: dict[str, Any] | None = None
    liked_items: list[Any] | None = None
    k: int | None = None
    model: str | None = None
    exclude: list[Any] = field(default_factory=list)
    genres: list[str] = field(default_factory=list)
    exclude_genres: list[str] = field(default_factory=list)
    year_min: int | None = None
    year_max: int | None = None
    exclude_seen: bool | None = None
    explain: bool = False


@dataclass
class RecResult:
    """``items`` [k] item indices and ``scores`` [k] (float32, higher is better), best first."""

    items: IntArray
    scores: FloatArray
    sources: list[list[str]]
    model: str
    user_kind: Literal["known", "unknown", "profile", "liked_items", "anonymous"]
    cold_start: bool
    fallbacks: list[str]
    timings: dict[str, float]  #: stage -> seconds
    explain: list[dict[str, Any]] | None = None
    #: what this answer lacks and why (e.g. the user's online events while the store is down)
    degraded: list[str] = field(default_factory=list)
    #: distinct items of the user's history the answer went on (0: a user without history)
    history: int = 0


@dataclass
class _User:
    key: str
    idx: int | None
    kind: Literal["known", "unknown", "profile", "liked_items", "anonymous"]
    cold_start: bool
    recent: IntArray  #: unique item indices, most recent first
    seen: IntArray  #: every item of the history (sorted unique)
    ucat: IntArray
    profile: dict[str, Any] | None
    degraded: str | None = None


def genre_cap(
    head: IntArray, genres: Sequence[Sequence[int]], k: int, cap: int
) -> tuple[IntArray, npt.NDArray[np.bool_]]:
    """Greedy genre cap over ``head`` (the best candidates, best first; ``genres`` the genre codes of
    each): walking down, an item is kept when each of its genres has fewer than ``cap`` kept items
    above it; the top ``k`` are the kept items in order, then (when fewer than ``k`` were kept) the
    demoted ones in order. Returns (top k, demoted flags). The walk stops at the k-th kept item: what
    lies below it cannot enter the top k. Plain Python over a few dozen items is cheaper than any
    array formulation."""
    counts: dict[int, int] = {}
    full: set[int] = set()  # genres at the cap
    kept: list[int] = []
    dropped: list[int] = []
    for pos, gs in zip(head.tolist(), genres, strict=True):
        if full.isdisjoint(gs):
            for g in gs:
                c = counts[g] = counts.get(g, 0) + 1
                if c >= cap:
                    full.add(g)
            kept.append(pos)
            if len(kept) == k:
                break
        else:
            dropped.append(pos)
    top = (kept + dropped)[:k]
    return np.asarray(top, dtype=np.int64), np.arange(len(top)) >= len(kept)


#: the file of a release holding its cold-start verdict (`recstack.evaluation.cold_users`)
COLD_START_FILE = "cold_start.json"


def cold_start_policy(release: ServingRelease) -> dict[str, Any]:
    """The release's cold-start verdict: ``{"model": "segment" | "popular", "personal": bool,
    "params": {...}, "reason": str, ...}`` (`recstack.evaluation.cold_users.choose_profile_model`),
    from the release's ``cold_start`` attribute or its ``cold_start.json``; a release without one
    (built before) is not personal: a profile alone gets popular items, said so."""
    policy = getattr(release, "cold_start", None)
    if policy is None:
        path = getattr(release, "path", None)
        f = Path(path) / COLD_START_FILE if path is not None else None
        if f is not None and f.is_file():
            try:
                policy = json.loads(f.read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                log.warning("release %s: unreadable %s (%s): profiles are not used", release.id, f, exc)
    if not isinstance(policy, dict):
        return {
            "model": "popular",
            "personal": False,
            "params": {},
            "reason": "no cold-users validation in the release",
        }
    return policy


def _fit_segments(dataset: Any, inter: pl.DataFrame, params: dict[str, Any]) -> SegmentPopularity:
    return SegmentPopularity.fit(
        inter["user"].to_numpy(),
        inter["item"].to_numpy(),
        user_profiles(dataset.users, dataset.n_users),
        dataset.n_items,
        **params,
    )


class Pipeline:
    """Recommendations for one release. Thread-safe for concurrent `recommend` calls."""

    def __init__(
        self,
        release: ServingRelease,
        config: PipelineConfig | None = None,
        *,
        catalog: Catalog | None = None,
        history: HistoryBackend | None = None,
        index: Any | None = None,
        user_tower: UserTower | FactorQuery | None = None,
        rankers: dict[str, OnnxRanker] | None = None,
    ) -> None:
        """``catalog``, ``history``, ``index``, ``user_tower`` and ``rankers`` (loaded ranker
        sessions, e.g. another pipeline's over the same release: an experiment arm) are built from
        ``release`` when not given."""
        self.release = release
        self.config = config or PipelineConfig()
        self.catalog = catalog or build_catalog(release.dataset)
        self.history: HistoryBackend = history or MemoryHistory(self.catalog)
        self.features = getattr(release, "features", None)
        self.index = index
        self.user_tower = user_tower
        self.retrievers: dict[str, Retriever] = {}
        names = set(release.retriever_names)
        for src in self.config.sources:
            if src.kind == "history":
                want = (src.retriever,) if isinstance(src.retriever, str) else src.retriever or (src.name,)
                alias = next((a for a in want if a in names), None)
                if alias is not None:
                    self.retrievers[src.name] = release.retriever(alias)
                else:
                    log.info("release %s has none of %s: source %r is off", release.id, want, src.name)
        self.active_sources = [
            s
            for s in self.config.sources
            if (s.kind == "history" and s.name in self.retrievers)
            or (s.kind == "ann" and self.index is not None and self.user_tower is not None)
            or s.kind in ("popular", "trending")
        ]
        self.scorers: dict[str, tuple[HistoryScorer, bool]] = {
            name: history_scorer(r, self.catalog.n_items) for name, r in self.retrievers.items()
        }
        self._tag_tables: dict[tuple[str, ...], list[list[str]]] = {}
        self._weights = {s.name: s.weight for s in self.config.sources}
        self.rankers: dict[str, OnnxRanker] = dict(rankers) if rankers is not None else {}
        #: rankers of the release that serving cannot run, with the reason
        self.unavailable_rankers: dict[str, str] = {}
        for name, path in release.ranker_paths.items() if rankers is None else ():
            try:
                self.rankers[name] = load_ranker(name, path, release, self.features)
            except ArtifactError as exc:
                log.warning("ranker %s is not served: %s", name, exc.message)
                self.unavailable_rankers[name] = exc.message
        wanted = self.config.rank.ranker
        if wanted is not None and wanted != RECALL_MODEL and wanted not in self.rankers:
            log.warning("ranker %r is not in release %s; using %s", wanted, release.id, self.default_model)
        self._trending = self._trending_scores()
        #: the release's cold-start verdict (`cold_start_policy`): whether a profile alone is personal
        self.cold_start = cold_start_policy(release)
        self.segments: SegmentPopularity | None = None
        if self.cold_start.get("personal") and self.cold_start.get("model") == "segment":
            try:
                self.segments = _fit_segments(
                    self.catalog.dataset,
                    self.catalog.interactions(),
                    dict(self.cold_start.get("params") or {}),
                )
            except (TypeError, ValueError) as exc:  # a verdict this version cannot apply: not personal
                log.warning(
                    "release %s: cold-start params not usable (%s): profiles are not used", release.id, exc
                )
        self.ann_profile = bool(self.cold_start.get("ann_profile", False))
        # every catalog item, to fill up short result lists without a Python loop
        self._all_items = np.arange(self.catalog.n_items, dtype=np.int64)
        #: the ANN and history sources' results (`Recalled`, read-only arrays) by exact query: (source,
        #: embedding bytes, k) for the ANN, (source, the user's items most recent first) for a history
        #: source.
        #: The index and the retrievers are immutable per pipeline, so a user whose history has not
        #: changed asks the same queries again; an event changes the items, hence the key
        self.recall_memo: ByteLRU[Recalled] = ByteLRU(int(self.config.recall_memo_mb * 2**20))
        #: the ANN index's calls: 3 failures (or timeouts, `ServingSettings.index_timeout`) in a row
        #: skip the ANN source for 1 s, then one trial query
        self.ann_breaker = CircuitBreaker(fail_max=3, reset_timeout=1.0, failures=(UnavailableError,))
        self._text_search: TextSearch | None = None
        self._text_search_lock = threading.Lock()
        #: items of the release; items added online (`add_items`) get the indices after these
        self.base_n_items = self.catalog.n_items
        #: the catalogue before any item was added online (what another pipeline over the same
        #: release is built from: `follow_items`)
        self.base_catalog = self.catalog
        #: pipelines that get this one's items added online (experiment arms: `follow_items`)
        self._followers: weakref.WeakSet[Pipeline] = weakref.WeakSet()
        #: per online item, the release item whose features the rankers use for it (the nearest by
        #: text embedding; `rank`)
        self._proxy = np.zeros(0, dtype=np.int64)
        self._items_lock = threading.Lock()

    @property
    def text_search(self) -> TextSearch:
        """Item search (`recstack.serving._search`): opened on first use (the ONNX text encoder
        loads in about a second)."""
        if self._text_search is None:
            with self._text_search_lock:
                if self._text_search is None:
                    self._text_search = open_text_search(self.release, self.catalog)
        return self._text_search

    # ------------------------------------------------------------ models
    @property
    def models(self) -> list[str]:
        """Ranker variants accepted by ``model=`` (``recall`` = no ranker)."""
        return [*self.rankers, RECALL_MODEL]

    @property
    def default_model(self) -> str:
        wanted = self.config.rank.ranker
        if wanted is not None and (wanted in self.rankers or wanted == RECALL_MODEL):
            return wanted
        return next(iter(self.rankers), RECALL_MODEL)

    def check_model(self, model: str | None) -> str:
        m = model or self.default_model
        if m not in self.models:
            raise InvalidArgumentError(f"unknown model {m!r}; allowed: {', '.join(self.models)}")
        return m

    def check_k(self, k: int | None) -> int:
        kk = self.config.k_default if k is None else k
        if not 1 <= kk <= self.config.k_max:
            raise InvalidArgumentError(f"k must be between 1 and {self.config.k_max}, got {kk}")
        return kk

    # ----------------------------------------------------------- helpers
    def _trending_scores(self) -> FloatArray:
        inter = self.catalog.interactions()
        n = self.catalog.n_items
        if inter.height == 0:
            return np.zeros(n, dtype=np.float32)
        ts = inter["timestamp"].to_numpy()
        start = int(ts.max()) - int(self.config.trending_days * _SECONDS_PER_DAY)
        items = inter["item"].to_numpy()[ts >= start]
        return np.bincount(items, minlength=n).astype(np.float32)

    @staticmethod
    def _top_set(scores: FloatArray, n: int) -> IntArray:
        """Indices of the n largest scores, in no particular order (recall does not need one)."""
        if n >= len(scores):
            return np.arange(len(scores), dtype=np.int64)
        return np.argpartition(-scores, n - 1)[:n].astype(np.int64)

    @staticmethod
    def _top(scores: FloatArray, n: int) -> IntArray:
        """Indices of the n largest scores, best first (ties: lower index first)."""
        m = len(scores)
        if n >= m:
            return np.lexsort((np.arange(m), -scores)).astype(np.int64)
        part = np.argpartition(-scores, n - 1)[:n]
        return part[np.lexsort((part, -scores[part]))].astype(np.int64)

    # ----------------------------------------------------------- resolve
    def resolve(self, req: RecRequest) -> _User:
        """Who is asking: a known user (history from the store), an unknown id (whatever events it
        sent since), a profile, or a few liked items."""
        cat = self.catalog
        ucat = np.zeros(4, dtype=np.int64)
        if req.profile and self.features is not None:
            ucat = self.features.encode_profile(req.profile)
        hist = History.empty()
        idx: int | None = None
        key = ""
        kind: Literal["known", "unknown", "profile", "liked_items", "anonymous"] = "anonymous"
        if req.user_id is not None:
            key = str(req.user_id)
            idx = cat.user_index(req.user_id)
            hist = self.history.get(key, idx)
            kind = "known" if idx is not None else "unknown"
            if idx is not None and self.features is not None and not req.profile:
                ucat = self.features.users_cat[idx]
        items = hist.items
        if req.liked_items:
            liked = cat.item_indices(list(req.liked_items), what="liked item")
            items = np.concatenate([items, liked])
            if kind in ("anonymous", "unknown"):
                kind = "liked_items"
        if kind == "anonymous" and req.profile:
            kind = "profile"
        if kind == "unknown" and req.profile:
            kind = "profile"
        # unique items, most recent first: reverse, then first occurrences
        rev = items[::-1]
        _, first = np.unique(rev, return_index=True)
        recent = rev[np.sort(first)]
        seen = np.sort(recent)  # = np.unique(items): recent holds each item once
        if len(self._proxy):  # the models know the release's items only
            recent = recent[recent < self.base_n_items]
        return _User(
            key=key,
            idx=idx,
            kind=kind,
            cold_start=idx is None,
            recent=recent,
            seen=seen,
            ucat=ucat,
            profile=req.profile,
            degraded=hist.degraded,
        )

    # ------------------------------------------------------------ recall
    def _recall(self, user: _User, fallbacks: list[str]) -> list[Recalled]:
        out: list[Recalled] = []
        n_seen = len(user.seen)
        for src in self.active_sources:
            if src.kind == "history":
                if len(user.recent) == 0:
                    continue
                # recent holds every history item once: it determines the scored items and the seen
                key = (src.name, user.recent.tobytes())
                hit = self.recall_memo.get(key)
                if hit is None:
                    scorer, sparse = self.scorers[src.name]
                    s = scorer(user.recent[: src.recent])
                    s[user.seen[user.seen < len(s)] if len(self._proxy) else user.seen] = -np.inf
                    top = self._top_set(s, src.quota)
                    sc = s[top]
                    ok = (sc > 0) if sparse else np.isfinite(sc)
                    hit = self._remember(key, top[ok], sc[ok])
                out.append(hit)
            elif src.kind == "ann":
                assert self.user_tower is not None and self.index is not None
                if user.idx is None and len(user.recent) == 0 and not (user.profile and self.ann_profile):
                    continue  # a profile alone: only when validation found the user tower beats popular
                vec = self.user_tower.encode(user.idx, user.ucat, user.recent)
                if vec is None:  # a factor model's query: nothing to query with
                    continue
                try:  # an index server that fails or is slow costs this source, not the request
                    out.append(self.ann_breaker.call(self._ann, src.name, vec, src.quota + n_seen))
                except (UnavailableError, BreakerOpenError):
                    fallbacks.append(f"{src.name}_unavailable")
            else:
                scores: FloatArray | None = None
                # a profile only when the release's cold-users validation found that it beats global
                # popularity (`cold_start_policy`) and the data knows its segment; otherwise unused
                if src.kind == "popular" and user.kind == "profile":
                    if self.segments is not None and self.segments.matched(user.profile):
                        scores = self.segments.scores(user.profile).astype(np.float32)
                        fallbacks.append("demographic")
                    else:  # said in the answer: the profile did not change it
                        fallbacks.append("profile_unused")
                if scores is None:
                    scores = self.catalog.popularity if src.kind == "popular" else self._trending
                top = (
                    self.catalog.pop_order[: src.quota + n_seen]
                    if scores is self.catalog.popularity
                    else self._top_set(scores, src.quota + n_seen)
                )
                out.append(self._recalled(src.name, top, scores[top]))
        if len(self._proxy) and len(user.recent):
            fresh = self._new_items_recall(user, sum(1 for r in out if len(r[1])))
            if fresh is not None:
                out.append(fresh)
        if not any(len(r[1]) for r in out):
            fallbacks.append("popular")
            top = self.catalog.pop_order[: self.config.rank.candidates + n_seen]
            out.append(self._recalled("popular", top, self.catalog.popularity[top]))
        elif len(user.recent) == 0 and any(s.kind in ("history", "ann") for s in self.active_sources):
            fallbacks.append("no_history")
        return out

    def _new_items_recall(self, user: _User, n_sources: int) -> Recalled | None:
        """Source ``new_items``: the items added online by the cosine of their text embedding with
        the user's profile (the mean text embedding of their recent release items), both centred on
        the release items' mean embedding."""
        ts = self.text_search
        emb = ts.embeddings
        if emb is None or not len(user.recent):
            return None
        # mean-centred as the content models score (the release items' mean embedding)
        mu = ts.mean if ts.mean is not None else np.zeros(emb.shape[1], np.float32)
        prof = emb[user.recent[:50]].mean(axis=0) - mu
        norm = float(np.linalg.norm(prof))
        if norm == 0:
            return None
        ids = np.arange(self.base_n_items, min(len(emb), self.catalog.n_items), dtype=np.int64)
        fresh = emb[ids] - mu
        fresh /= np.maximum(np.linalg.norm(fresh, axis=1, keepdims=True), 1e-9)
        sims = (fresh @ (prof / norm)).astype(np.float32)
        keep = self._top_set(sims, 100)
        keep = keep[sims[keep] > 0]
        # the share of the merged score: the cosine (not min-max normalised: one new item would
        # otherwise get the full weight for everyone) times the number of the other sources that
        # recalled something, since none of those can recall a new item (a release item recalled by
        # all of them gets up to that many shares)
        w = np.float32(self._weights.get(NEW_ITEMS_SOURCE, 1.0) * max(1, n_sources))
        return NEW_ITEMS_SOURCE, ids[keep], sims[keep], w * sims[keep]

    def add_items(self, rows: Sequence[dict[str, Any]]) -> IntArray:
        """Add items to the catalogue at once (``rows``: ``item_id``, ``title``, ``year``,
        ``genres``, ``text``): searchable (title and meaning), recommendable through the
        ``new_items`` recall source and in similar items by text embedding; the rankers score each
        as its nearest release item. Ids already in the catalogue are left as they are (idempotent).
        Returns the items' indices."""
        with self._items_lock:
            cat = self.catalog
            fresh = [r for r in rows if cat.dataset.item_vocab.get(r["item_id"]) is None]
            if fresh:
                ts = self.text_search
                new_cat = extend_catalog(cat, fresh)
                vecs = ts.encode([item_text(r) for r in fresh])
                if vecs is not None:
                    ts.add(vecs, new_cat)
                    emb = ts.embeddings
                    assert emb is not None
                    proxy = np.argmax(vecs @ emb[: self.base_n_items].T, axis=1).astype(np.int64)
                else:
                    ts.add(None, new_cat)
                    proxy = np.full(len(fresh), int(cat.pop_order[0]) if cat.n_items else 0, np.int64)
                self._proxy = np.concatenate([self._proxy, proxy])
                self.catalog = new_cat
            out = self.catalog.item_indices([r["item_id"] for r in rows])
        if fresh:
            for f in list(self._followers):
                f._followed(self, fresh)
        return out

    def online_items(self) -> list[dict[str, Any]]:
        """The items added online (`add_items`), as rows ``add_items`` takes, in order."""
        cat = self.catalog
        if cat.n_items == self.base_n_items:
            return []
        items = cat.dataset.items.filter(pl.col("item") >= self.base_n_items).sort("item")
        texts = items["text"].to_list() if "text" in items.columns else [None] * items.height
        return [
            {
                "item_id": cat.item_ids[i],
                "title": cat.titles[i],
                "year": int(cat.years[i]) if cat.years[i] >= 0 else None,
                "genres": list(cat.genre_lists[i]),
                "text": t,
            }
            for i, t in zip(items["item"].to_list(), texts, strict=True)
        ]

    def follow_items(self, source: Pipeline) -> None:
        """Get ``source``'s items added online, those so far and every later one (an experiment
        arm follows the serving pipeline, whose `add_items` the API and the event log call). Over
        the same release (an arm with its own settings, built from ``source.base_catalog``) the
        two share the catalogue and the text search; over another release the items are added to
        this one's own (`add_items`, idempotent)."""
        if source is self:
            return
        with source._items_lock:
            source._followers.add(self)
            if self.release is source.release:
                self._share_items(source)
                return
        rows = source.online_items()
        if rows:
            self.add_items(rows)

    def _share_items(self, source: Pipeline) -> None:
        """Take ``source``'s catalogue, text search and online items (same release)."""
        with self._items_lock:
            self._text_search = source.text_search
            self.base_n_items = source.base_n_items
            self._proxy = source._proxy
            self.catalog = source.catalog

    def _followed(self, source: Pipeline, rows: list[dict[str, Any]]) -> None:
        try:
            if self.release is source.release:
                self._share_items(source)
            else:
                self.add_items(rows)
        except Exception:  # an arm that cannot take the item must not fail the request
            log.exception("experiment arm pipeline: cannot add %d item(s) added online", len(rows))

    def _recalled(self, name: str, ids: IntArray, scores: FloatArray) -> Recalled:
        """A source's result with its share of the merged score: min-max normalised, times the
        source's weight (every item ``weight`` when all scores are equal)."""
        w = np.float32(self._weights.get(name, 1.0))
        if not len(scores):
            return name, ids, scores, np.zeros(0, np.float32)
        lo, hi = float(scores.min()), float(scores.max())
        norm = (
            w * ((scores - lo) / (hi - lo)).astype(np.float32)
            if hi > lo
            else np.full(len(scores), w, np.float32)
        )
        return name, ids, scores, norm

    def _ann(self, name: str, vec: FloatArray, k: int) -> Recalled:
        """Source ``name``: the ANN index's top ``k`` of query ``vec`` [d] (padding dropped;
        memoised)."""
        assert self.index is not None
        q = np.ascontiguousarray(vec, dtype=np.float32).reshape(1, -1)
        key = (name, q.tobytes(), k)
        hit = self.recall_memo.get(key)
        if hit is not None:
            return hit
        sc, ids = self.index.search(q, k)
        ok = ids[0] >= 0
        return self._remember(key, ids[0][ok].astype(np.int64), sc[0][ok].astype(np.float32))

    def _remember(self, key: tuple[Any, ...], ids: IntArray, scores: FloatArray) -> Recalled:
        """The result of source ``key[0]`` (`_recalled`, arrays made read-only), stored in
        `recall_memo` under ``key``."""
        res = self._recalled(
            key[0],
            np.ascontiguousarray(ids, dtype=np.int64),
            np.ascontiguousarray(scores, dtype=np.float32),
        )
        _, i, sc, norm = res
        for a in (i, sc, norm):
            a.setflags(write=False)
        key_bytes = sum(len(k) for k in key if isinstance(k, bytes))
        self.recall_memo.put(key, res, key_bytes + i.nbytes + sc.nbytes + norm.nbytes + 200)
        return res

    def _merge(self, parts: list[Recalled]) -> tuple[IntArray, FloatArray, IntArray, list[str]]:
        """Union of the sources -> (items[m] sorted, merged[m], tags[m] bitmask of sources, source
        names). The merged score sums each source's min-max normalised score times its weight."""
        names = [p[0] for p in parts]
        n = self.catalog.n_items
        merged_full = np.zeros(n, dtype=np.float32)
        tags_full = np.zeros(n, dtype=np.int64)
        for j, (_, ids, _, norm) in enumerate(parts):  # one iteration per source, vectorised inside
            merged_full[ids] += norm  # ids are unique within a source
            tags_full[ids] |= 1 << j
        items = np.flatnonzero(tags_full).astype(np.int64)
        return items, merged_full[items], tags_full[items], names

    @staticmethod
    def _raw_scores(parts: list[Recalled], items: IntArray) -> FloatArray:
        """Source scores [m, n_sources] of ``items`` (NaN where a source did not recall the item)."""
        raw = np.full((len(items), len(parts)), np.nan, dtype=np.float32)
        for j, (_, ids, sc, _) in enumerate(parts):
            if len(ids):
                order = np.argsort(ids)
                pos = np.searchsorted(ids[order], items)
                pos = np.minimum(pos, len(ids) - 1)
                hit = ids[order][pos] == items
                raw[hit, j] = sc[order][pos[hit]]
        return raw

    # ------------------------------------------------------------ filter
    def _filter_mask(
        self, items: IntArray, user: _User, req: RecRequest, exclude_idx: IntArray
    ) -> npt.NDArray[np.bool_]:
        cat = self.catalog
        keep = np.ones(len(items), dtype=bool)
        exclude_seen = self.config.filters.exclude_seen if req.exclude_seen is None else req.exclude_seen
        if exclude_seen and len(user.seen):
            seen_mask = np.zeros(cat.n_items, dtype=bool)
            seen_mask[user.seen] = True
            keep &= ~seen_mask[items]
        if len(exclude_idx):
            keep &= ~np.isin(items, exclude_idx)
        if req.genres:
            keep &= (cat.genre_bits[items] & cat.genre_mask(req.genres)) != 0
        if req.exclude_genres:
            keep &= (cat.genre_bits[items] & cat.genre_mask(req.exclude_genres)) == 0
        if req.year_min is not None:
            keep &= cat.years[items] >= req.year_min
        if req.year_max is not None:
            keep &= (cat.years[items] <= req.year_max) & (cat.years[items] >= 0)
        return keep

    def _filter_fill(
        self,
        items: IntArray,
        merged: FloatArray,
        tags: IntArray,
        user: _User,
        req: RecRequest,
        exclude_idx: IntArray,
        k: int,
        fallbacks: list[str],
    ) -> tuple[IntArray, FloatArray, IntArray]:
        """The filter stage over the merged candidates, then, when fewer than ``k`` are left, a fill
        from the whole catalogue, popular first (``popular_fill``)."""
        keep = self._filter_mask(items, user, req, exclude_idx)
        items, merged, tags = items[keep], merged[keep], tags[keep]
        if len(items) < k:
            fallbacks.append("popular_fill")
            pop = self.catalog.pop_order
            pool = pop[~np.isin(pop, items)]
            pool = pool[self._filter_mask(pool, user, req, exclude_idx)][: k - len(items)]
            items = np.concatenate([items, pool])
            merged = np.concatenate([merged, np.zeros(len(pool), np.float32)])
            tags = np.concatenate([tags, np.zeros(len(pool), np.int64)])
        return items, merged, tags

    # ------------------------------------------------------------ rerank
    def _genre_cap(self, order: IntArray, k: int, items: IntArray) -> tuple[IntArray, npt.NDArray[np.bool_]]:
        """The top ``k`` of ``order`` (candidate positions, best first; ``items`` [n_candidates] their
        item indices) after the genre cap, and which of them were demoted (`genre_cap`)."""
        cap = self.config.rerank.genre_cap
        if cap is None or not self.catalog.genre_names:
            return order[:k], np.zeros(min(k, len(order)), dtype=bool)
        head = order[: min(len(order), self.config.rerank.window * k)]
        codes = self.catalog.genre_codes
        return genre_cap(head, [codes[i] for i in items[head].tolist()], k, cap)

    # -------------------------------------------------------------- rank
    def rank(
        self, user: _User, model: str, items: IntArray, recall_scores: FloatArray
    ) -> tuple[FloatArray, IntArray]:
        """The rank stage: scores [m] float32 of candidates ``items`` [m] by ranker ``model``
        (`RECALL_MODEL`: ``recall_scores``) and their order (positions, best first; ties: the
        earlier position)."""
        if model != RECALL_MODEL and len(items):
            proxy = self._proxy
            known = items
            if len(proxy) and items.max() >= self.base_n_items:  # online items: their proxies
                known = items.copy()
                online = known >= self.base_n_items
                known[online] = proxy[np.minimum(known[online] - self.base_n_items, len(proxy) - 1)]
            with rank_slot():  # a bounded number of requests rank at once per process (`_threads`)
                scores = self.rankers[model].score(RankContext(user.idx, user.ucat, user.recent), known)
        else:
            scores = recall_scores
        scores = np.asarray(scores, dtype=np.float32)
        return scores, self._top(scores, len(items))

    # ---------------------------------------------------------- recommend
    def recommend(self, req: RecRequest) -> RecResult:
        """Run every stage; raises `InvalidArgumentError` (422) for bad k / model / genres and
        `UnknownIdError` (404) for unknown item ids in ``exclude`` / ``liked_items``."""
        timings: dict[str, float] = {}
        fallbacks: list[str] = []
        t0 = time.perf_counter()
        k = self.check_k(req.k)
        model = self.check_model(req.model)
        cat = self.catalog
        exclude_idx = (
            cat.item_indices(list(req.exclude), what="excluded item")
            if req.exclude
            else np.zeros(0, np.int64)
        )
        user = self.resolve(req)
        t1 = time.perf_counter()
        timings["resolve"] = t1 - t0

        parts = self._recall(user, fallbacks)
        items, merged, tags, src_names = self._merge(parts)
        t2 = time.perf_counter()
        timings["recall"] = t2 - t1

        items, merged, tags = self._filter_fill(items, merged, tags, user, req, exclude_idx, k, fallbacks)
        t3 = time.perf_counter()
        timings["filter"] = t3 - t2

        n_rank = min(len(items), max(self.config.rank.candidates, k))
        top = self._top(merged, n_rank)
        items, merged, tags = items[top], merged[top], tags[top]
        rank_scores, order = self.rank(user, model, items, merged)
        t4 = time.perf_counter()
        timings["rank"] = t4 - t3

        final, demoted = self._genre_cap(order, k, items)
        t5 = time.perf_counter()
        timings["rerank"] = t5 - t4

        src_lists = self._source_lists(tags[final], src_names)
        explain = None
        if req.explain:
            because = self._because(user, src_lists, items[final])
            raw = self._raw_scores(parts, items)
            pre_pos = np.empty(len(items), dtype=np.int64)
            pre_pos[order] = np.arange(len(items))
            explain = [
                {
                    "sources": src_lists[j],
                    "recall_scores": {
                        n: float(raw[c, s]) for s, n in enumerate(src_names) if not np.isnan(raw[c, s])
                    },
                    "merged_score": float(merged[c]),
                    "rank_score": float(rank_scores[c]),
                    "rank_position": int(pre_pos[c]) + 1,
                    "final_position": j + 1,
                    "demoted_by_genre_cap": bool(demoted[j]),
                    "because": because[j],
                }
                for j, c in enumerate(final.tolist())
            ]
        return RecResult(
            items=items[final],
            scores=rank_scores[final].astype(np.float32),
            sources=src_lists,
            model=model,
            user_kind=user.kind,
            cold_start=user.cold_start,
            fallbacks=fallbacks,
            timings=timings,
            explain=explain,
            degraded=[user.degraded] if user.degraded else [],
            history=len(user.recent),
        )

    def _because(
        self, user: _User, src_lists: list[list[str]], items: IntArray
    ) -> list[dict[str, Any] | None]:
        """Per returned item, the history item that added most to its score in its first item-item
        source (``{"item_id", "title", "source"}``), or None (not recalled from the history, or a
        source that cannot say: two-tower, popularity)."""
        out: list[dict[str, Any] | None] = [None] * len(items)
        if not len(user.recent):
            return out
        recent = {s.name: s.recent for s in self.config.sources}
        cat = self.catalog
        # each item's history sources in order: the first that can name a history item with a
        # positive contribution explains it (a source without contributions passes to the next)
        todo = [(j, [n for n in srcs if n in self.scorers]) for j, srcs in enumerate(src_lists)]
        while todo:
            by_src: dict[str, list[int]] = {}
            rest: list[tuple[int, list[str]]] = []
            for j, names in todo:
                if names:
                    by_src.setdefault(names[0], []).append(j)
                    rest.append((j, names[1:]))
            todo = []
            left = {j: names for j, names in rest if names}
            for name, rows in by_src.items():
                hist = user.recent[: recent.get(name, len(user.recent))]
                contrib = self.scorers[name][0].contributions(hist, items[rows])
                found: set[int] = set()
                if contrib is not None and contrib.size:
                    best = contrib.argmax(axis=0)
                    for col, j in enumerate(rows):
                        if contrib[best[col], col] > 0:
                            h = int(hist[best[col]])
                            out[j] = {"item_id": cat.item_ids[h], "title": cat.titles[h], "source": name}
                            found.add(j)
                todo += [(j, left[j]) for j in rows if j not in found and j in left]
        return out

    def _source_lists(self, tags: IntArray, names: list[str]) -> list[list[str]]:
        """Source names per returned item from its tag bitmask (a table of every combination)."""
        key = tuple(names)
        table = self._tag_tables.get(key)
        if table is None:
            table = [
                [n for j, n in enumerate(names) if t >> j & 1] or ["fill"] for t in range(1 << len(names))
            ]
            self._tag_tables[key] = table
        return [table[t] for t in tags.tolist()]

    # ------------------------------------------------------------ similar
    def _same_genres(self, item_idx: int, k: int) -> tuple[IntArray, FloatArray, str]:
        """The most popular items sharing a genre with ``item_idx`` (then the most popular ones):
        similar items of an item added online to a release without a text model."""
        cat = self.catalog
        mine = set(cat.genre_lists[item_idx])
        order = cat.pop_order[cat.pop_order != item_idx]
        shared = np.array([bool(mine & set(cat.genre_lists[int(i)])) for i in order], dtype=bool)
        pool = np.concatenate([order[shared], order[~shared]])[:k]
        return pool, cat.popularity[pool].astype(np.float32), "genre"

    def similar_models(self) -> list[str]:
        """The ``model=`` values of similar items: the release's retrievers but ``pop``, and the text
        search's (``content``...) when it has embeddings."""
        allowed = [n for n in self.release.retriever_names if n != "pop"]
        if self.text_search.semantic:
            allowed += [n for n in SEARCH_MODELS if n not in allowed]
        return allowed

    def similar(self, item_idx: int, k: int, model: str | None = None) -> tuple[IntArray, FloatArray, str]:
        """Top k items similar to one item by a release retriever (default: itemknn, else EASE, else
        time_ease, else the two-tower, else the release's first retriever but ``pop``) -> (items[k],
        scores[k], model name)."""
        kk = self.check_k(k)
        allowed = self.similar_models()
        if model == "pop" and not allowed:  # a release without an item-item model: popular items
            model = None
        if model is not None and model not in allowed:
            raise InvalidArgumentError(
                f"unknown model {model!r} for similar items; allowed: {', '.join(allowed) or 'none'}"
            )
        if item_idx >= self.base_n_items or (model in SEARCH_MODELS and self.text_search.semantic):
            if not self.text_search.semantic:  # no text model: the most popular items of its genres
                return self._same_genres(item_idx, kk)
            ids, sc = self.text_search.similar(item_idx, kk)
            return ids, sc, model if model in SEARCH_MODELS else "content"
        if model is None:
            model = next((n for n in ("itemknn", "ease", "time_ease", "two_tower") if n in allowed), None)
            if model is None and allowed:
                model = allowed[0]
        if model is None:
            # no item-to-item model: popular items (never the item itself)
            pool = self.catalog.pop_order[self.catalog.pop_order != item_idx][:kk]
            return pool, self.catalog.popularity[pool], "pop"
        retr = self.retrievers.get(model) or self.release.retriever(model)
        ids, sc = retr.similar_items(np.array([item_idx]), kk)
        ok = ids[0] >= 0
        return ids[0][ok], sc[0][ok], model
