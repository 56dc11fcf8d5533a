"""A loaded release ready to serve (`ServingState`) and the holder that swaps it atomically.

A request reads ``holder.current`` once and uses that state to the end, so a reload never changes
the release under a request in flight; the old state is dropped when its last request finishes.
"""

from __future__ import annotations

import atexit
import logging
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from recstack.errors import ConfigError, UnavailableError
from recstack.events import EventLog, open_log
from recstack.serving._catalog import build_catalog
from recstack.serving._events import EventSink, HistoryFeed
from recstack.serving._history import HistoryBackend, MemoryHistory, StoreHistory
from recstack.serving._ranker import TwoStageRanker, UserTower
from recstack.serving._release import ServingRelease
from recstack.serving.pipeline import Pipeline, PipelineConfig
from recstack.serving.settings import ServingSettings

__all__ = ["ReleaseLoader", "ServingState", "StateHolder", "build_state", "default_loader"]

log = logging.getLogger(__name__)

ReleaseLoader = Callable[[str], ServingRelease]


@dataclass
class ServingState:
    """One release, its pipeline and backends."""

    release: ServingRelease
    pipeline: Pipeline
    store: str
    index_backend: str | None
    loaded_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    load_seconds: float = 0.0
    #: keeps the histories in step with the event log (None without a log)
    feed: HistoryFeed | None = None

    @property
    def release_id(self) -> str:
        return self.release.id


def default_loader(settings: ServingSettings) -> ReleaseLoader:
    """``recstack.release.load`` on the settings' releases dir."""

    def load(target: str) -> ServingRelease:
        from recstack.release import loader

        rel: ServingRelease = loader.load(target, settings.releases_path(), verify=settings.verify)
        return rel

    return load


def _user_tower_path(release: ServingRelease) -> Path | None:
    p = getattr(release, "user_tower_path", None)
    if p is not None:
        return Path(p)
    manifest = getattr(release, "manifest", None)
    files = getattr(manifest, "files", None) or []
    root = getattr(release, "path", None)
    for f in files:
        if str(f.path).endswith("user_tower.onnx") and root is not None:
            return Path(root) / str(f.path)
    return None


def _open_index(release: ServingRelease, settings: ServingSettings, emb: Any) -> tuple[Any, str | None]:
    from recstack import index as index_mod

    stored = getattr(getattr(getattr(release, "manifest", None), "artifacts", None), "index", None)
    if settings.index is None or (stored is not None and stored.backend == settings.index):
        load_index = getattr(release, "load_index", None)
        if load_index is not None and stored is not None:
            return load_index(), stored.backend
    backend = settings.index or "exact"
    opts: dict[str, Any] = {}
    if backend == "milvus":
        opts["uri"] = str(Path(tempfile.mkdtemp(prefix="recstack-milvus-")) / "index.db")
    idx = index_mod.create_index(backend, dim=int(emb.shape[1]), metric="ip", **opts)
    import numpy as np

    idx.add(np.arange(emb.shape[0], dtype=np.int64), emb)
    return idx, backend


def _open_history(release: ServingRelease, settings: ServingSettings, catalog: Any) -> HistoryBackend:
    """Histories from a `recstack.store` FeatureStore (embedded: in process; redis: shared by every
    worker); without the store package, in-process arrays of the catalog."""
    try:
        from recstack.store import open_store
    except ImportError:  # pragma: no cover - the store package is part of recstack
        if settings.store == "redis":
            raise ConfigError("store=redis needs recstack.store") from None
        return MemoryHistory(catalog)
    if settings.store == "embedded":
        return StoreHistory(open_store("embedded", release=release), catalog)
    try:
        st = open_store("redis", release=release, url=settings.redis_url)
    except (ConnectionError, OSError) as exc:
        raise UnavailableError(f"Redis at {settings.redis_url} does not answer: {exc}") from exc
    return StoreHistory(st, catalog)


def _start_prewarm(ranker: TwoStageRanker, pipeline: Pipeline) -> None:
    """`TwoStageRanker.prewarm` (with the users' histories as the pipeline reads them) in a daemon
    thread, stopped and joined at interpreter exit (a thread inside ONNX Runtime / numpy while the
    interpreter finalises aborts the process)."""
    stop = threading.Event()
    ids = pipeline.catalog.dataset.user_vocab.ids.to_list()

    def recent(u: int) -> Any:
        return pipeline.history.get(str(ids[u]), u).items

    def _stop() -> None:
        stop.set()
        thread.join(timeout=5.0)

    def _run() -> None:
        try:
            ranker.prewarm(stop, recent)
        finally:  # done: nothing to stop at exit (reloads would otherwise pile up exit hooks)
            atexit.unregister(_stop)

    thread = threading.Thread(target=_run, name=f"prewarm-{ranker.name}", daemon=True)
    atexit.register(_stop)
    thread.start()


def build_state(
    release: ServingRelease,
    settings: ServingSettings,
    config: PipelineConfig | None = None,
    *,
    prewarm: bool = False,
    event_log: EventLog | None = None,
) -> ServingState:
    """Precompute everything the pipeline needs for ``release`` (catalog arrays, sessions, index).
    ``prewarm`` (servers, with ``settings.ranker_prewarm``): fill the two-stage rankers' memo of known
    users in the background (`TwoStageRanker.prewarm`); batch jobs leave it off. With ``event_log``,
    the histories get every logged event after the release's data cut-off before the state serves."""
    t0 = time.perf_counter()
    if config is None:
        config = PipelineConfig.from_toml(settings.pipeline) if settings.pipeline else PipelineConfig()
    catalog = build_catalog(release.dataset)
    history = _open_history(release, settings, catalog)
    feed = None
    if event_log is not None:
        feed = HistoryFeed.for_release(event_log, history, catalog, release)
        n = feed.catch_up()
        log.info("release %s: %d logged events replayed into the histories", release.id, n)
    tower_path = _user_tower_path(release)
    emb = getattr(release, "item_embeddings", None)
    index, backend, tower = None, None, None
    if tower_path is not None and emb is not None and any(s.kind == "ann" for s in config.sources):
        tower = UserTower(tower_path)
        index, backend = _open_index(release, settings, emb)
    pipeline = Pipeline(release, config, catalog=catalog, history=history, index=index, user_tower=tower)
    for ranker in pipeline.rankers.values():
        if isinstance(ranker, TwoStageRanker):
            ranker.set_memo(settings.ranker_memo_mb)
            if prewarm and settings.ranker_prewarm:
                _start_prewarm(ranker, pipeline)
    for name in release.retriever_names:  # load (and cache) every retriever before serving
        release.retriever(name)
    return ServingState(
        release=release,
        pipeline=pipeline,
        store=settings.store,
        index_backend=backend,
        load_seconds=time.perf_counter() - t0,
        feed=feed,
    )


class StateHolder:
    """Holds the current `ServingState`; `reload` builds a new one off the request path and swaps
    the reference atomically."""

    def __init__(
        self,
        settings: ServingSettings,
        loader: ReleaseLoader,
        config: PipelineConfig | None = None,
    ) -> None:
        self.settings = settings
        self.loader = loader
        self.config = config
        self.current: ServingState | None = None
        self.loading: str | None = None
        self.last_error: str | None = None
        self._lock = threading.Lock()
        self.event_log: EventLog | None = open_log(settings.event_log)
        self.sink: EventSink | None = EventSink(self.event_log) if self.event_log is not None else None
        self._poller: threading.Thread | None = None
        self._poll_stop = threading.Event()

    def load(self, target: str) -> ServingState:
        """Load ``target`` (release id or channel) and make it current; returns the new state."""
        state = build_state(
            self.loader(target), self.settings, self.config, prewarm=True, event_log=self.event_log
        )
        self.current = state  # one reference assignment: atomic for readers
        self.start_polling()
        return state

    def start_polling(self) -> None:
        """Read the events other workers log into the current state's histories, every
        ``settings.event_poll_s`` seconds (a daemon thread; idempotent)."""
        if self.event_log is None or self._poller is not None:
            return

        def run() -> None:
            while not self._poll_stop.wait(self.settings.event_poll_s):
                state = self.current
                if state is None or state.feed is None:
                    continue
                try:
                    state.feed.catch_up()
                except Exception:  # a busy / unreachable log: try again at the next tick
                    log.exception("reading the event log failed")

        self._poller = threading.Thread(target=run, name="event-log-poller", daemon=True)
        self._poller.start()

    def close(self) -> None:
        """Stop the poller and the event writer (the server's shutdown)."""
        self._poll_stop.set()
        if self._poller is not None:
            self._poller.join(timeout=5)
        if self.sink is not None:
            self.sink.close()

    def start_reload(
        self, target: str, on_done: Callable[[ServingState | None, Exception | None], None]
    ) -> bool:
        """Start loading ``target`` in a background thread; False when a reload is already running."""
        with self._lock:
            if self.loading is not None:
                return False
            self.loading = target

        def run() -> None:
            state: ServingState | None = None
            err: Exception | None = None
            try:
                state = self.load(target)
                self.last_error = None
            except Exception as exc:  # reported through /admin/reload status, never crashes serving
                err = exc
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.exception("reload of %s failed", target)
            finally:
                with self._lock:
                    self.loading = None
            on_done(state, err)

        threading.Thread(target=run, name=f"reload-{target}", daemon=True).start()
        return True
