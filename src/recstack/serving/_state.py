"""A loaded release ready to serve (`ServingState`) and the holder that swaps it atomically.

A request reads ``holder.current`` once and uses that state to the end, so a reload never changes
the release under a request in flight; the old state is dropped when its last request finishes.

Which release a worker serves is decided by the service's target (`recstack.serving._target`): the
holder loads it at start, watches it while serving and converges to it. After a swap the old state's
background work (the ranker memo's prewarm) is stopped, and once it is unreferenced the memory goes
back to the system (``gc.collect`` + glibc's ``malloc_trim``): 20 reloads leave the RSS where one
left it (benchmarks/bench_reload.py).
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import gc
import logging
import os
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import polars as pl

from recstack.errors import ConfigError, RecstackError, UnavailableError
from recstack.events import EventLog, open_log
from recstack.serving._catalog import build_catalog
from recstack.serving._events import EventSink, HistoryFeed
from recstack.serving._follow import ChannelFollower
from recstack.serving._history import HistoryBackend, MemoryHistory, StoreHistory
from recstack.serving._ranker import FactorQuery, TwoStageRanker, UserTower
from recstack.serving._release import ServingRelease
from recstack.serving._target import POLL_SECONDS, RunDir, Target
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
    #: set when the state is replaced: its background threads (prewarm) stop
    stop: threading.Event = field(default_factory=threading.Event)
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


def _factor_query(release: ServingRelease) -> FactorQuery | None:
    """The `FactorQuery` of the model whose item vectors the release's index holds, when that is a
    matrix-factorisation model (ALS, BPR); None otherwise."""
    manifest = getattr(release, "manifest", None)
    name = getattr(getattr(manifest, "artifacts", None), "primary_embeddings", None)
    if name is None:
        name = getattr(release, "embeddings_model", None)
    if name is None or name not in release.retriever_names:
        return None
    model = release.retriever(name)
    if not (hasattr(model, "fold_in") and getattr(model, "user_factors", None) is not None):
        return None
    return FactorQuery(model)


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
    limits = settings.event_limits()
    if settings.store == "embedded":
        return StoreHistory(open_store("embedded", release=release, limits=limits), catalog)
    try:
        st = open_store(
            "redis",
            release=release,
            url=settings.redis_url,
            prefix=settings.redis_prefix,
            limits=limits,
            timeout=settings.redis_timeout,
            retries=settings.redis_retries,
        )
    except (ConnectionError, OSError) as exc:
        raise UnavailableError(f"Redis at {settings.redis_url} does not answer: {exc}") from exc
    return StoreHistory(st, catalog)


def _interactions_reader(release: ServingRelease) -> Callable[[], pl.DataFrame]:
    """How a worker reads the release's interactions again once it dropped them: from the release's
    files (`Release.read_interactions`), or the in-memory release's own frame."""
    read = getattr(release, "read_interactions", None)
    if callable(read):
        return cast(Callable[[], pl.DataFrame], read)
    return lambda: release.dataset.interactions


def _drop_interactions(release: ServingRelease, pipeline: Pipeline) -> None:
    """Once the state is built, the worker keeps nothing per interaction: the histories are the
    store's (`StoreHistory`; a `MemoryHistory` holds its own arrays), the catalogue's per-item
    arrays are computed; the interactions frame is dropped from the catalogue and the release's
    cached dataset is forgotten (`Release.forget_dataset`; read again from disk if asked for)."""
    if pipeline.catalog.release_interactions.drop():
        forget = getattr(release, "forget_dataset", None)
        if callable(forget):
            forget()
    # the load's transient arrays (sorting, the frame; freed by reference counting, no collection
    # needed) stay in the heap otherwise: ~90 MB per worker of a 2M-interaction release
    # (benchmarks/bench_serve_scale.py --breakdown)
    _trim_memory(collect=False)


def _start_prewarm(ranker: TwoStageRanker, pipeline: Pipeline, stop: threading.Event) -> None:
    """`TwoStageRanker.prewarm` (with the users' histories as the pipeline reads them) in a daemon
    thread, stopped by ``stop`` (the state is replaced) and joined at interpreter exit (a thread
    inside ONNX Runtime / numpy while the interpreter finalises aborts the process)."""
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
    catalog = build_catalog(release.dataset, reload=_interactions_reader(release))
    history = _open_history(release, settings, catalog)
    feed = None
    if event_log is not None:
        feed = HistoryFeed.for_release(event_log, history, catalog, release)
        n = feed.catch_up()
        log.info("release %s: %d logged events replayed into the histories", release.id, n)
    tower_path = _user_tower_path(release)
    emb = getattr(release, "item_embeddings", None)
    index, backend = None, None
    tower: UserTower | FactorQuery | None = None
    if emb is not None and any(s.kind == "ann" for s in config.sources):
        # without a user tower, an index over a factor model's items (ALS at large data) is queried
        # with the user's factors
        tower = UserTower(tower_path) if tower_path is not None else _factor_query(release)
        if tower is not None:
            index, backend = _open_index(release, settings, emb)
            if index is not None:
                index.set_query_timeout(settings.index_timeout)
    pipeline = Pipeline(release, config, catalog=catalog, history=history, index=index, user_tower=tower)
    if feed is not None:  # items added online (the log's item records) join the catalogue
        feed.on_item = lambda e: add_logged_item(pipeline, e)
        for e in feed.pending_items:
            add_logged_item(pipeline, e)
        feed.pending_items.clear()
    stop = threading.Event()
    for ranker in pipeline.rankers.values():
        if isinstance(ranker, TwoStageRanker):
            ranker.set_memo(settings.ranker_memo_mb)
            if prewarm and settings.ranker_prewarm:
                _start_prewarm(ranker, pipeline, stop)
    for name in release.retriever_names:  # load (and cache) every retriever before serving
        release.retriever(name)
    _drop_interactions(release, pipeline)
    return ServingState(
        release=release,
        pipeline=pipeline,
        store=settings.store,
        index_backend=backend,
        load_seconds=time.perf_counter() - t0,
        stop=stop,
        feed=feed,
    )


def add_logged_item(pipeline: Pipeline, e: Any) -> None:
    """Add the item of an ``item`` record of the event log to the pipeline's catalogue."""
    p = dict(e.payload or {})
    row = {"item_id": e.item_id, **{k: p.get(k) for k in ("title", "year", "genres", "text")}}
    try:
        pipeline.add_items([row])
    except Exception:  # a malformed record must not stop the feed
        log.exception("item record at offset %s: cannot add item %r", e.offset, e.item_id)


def _trim_memory(collect: bool = True) -> None:
    """Collect garbage (``collect``) and hand freed heap pages back to the system (glibc
    ``malloc_trim``; a no-op elsewhere): without it a reload's freed arrays stay in the process's
    RSS."""
    if collect:
        gc.collect()
    with contextlib.suppress(OSError, AttributeError):  # not glibc: nothing to trim
        ctypes.CDLL("libc.so.6").malloc_trim(0)


#: seconds before a worker retries loading a target that failed to load
RETRY_SECONDS = 10.0


class StateHolder:
    """Holds the current `ServingState` of this worker and converges it to the service's target
    (`recstack.serving._target`): `start` loads the target (or, with none yet, ``settings.target()``
    and makes it the target), `start_watching` follows it; `start_reload` loads a release off the
    request path, swaps the reference atomically and, with ``publish``, makes it the service's
    target."""

    def __init__(
        self,
        settings: ServingSettings,
        loader: ReleaseLoader,
        config: PipelineConfig | None = None,
        run_dir: RunDir | None = None,
    ) -> None:
        self.settings = settings
        self.loader = loader
        self.config = config
        self.run_dir = run_dir
        self.current: ServingState | None = None
        self.loading: str | None = None
        self.last_error: str | None = None
        #: the service target this worker last converged to (or tries to)
        self.target: Target | None = None
        self._lock = threading.Lock()
        self.event_log: EventLog | None = open_log(settings.event_log)
        self.sink: EventSink | None = EventSink(self.event_log) if self.event_log is not None else None
        self._poller: threading.Thread | None = None
        self._poll_stop = threading.Event()
        self._stamp: tuple[int, int, int] | None = None
        self._failed_at: dict[int, float] = {}
        self._trim = False
        self._stop = threading.Event()
        self._watcher: threading.Thread | None = None
        self.pid = os.getpid()
        #: automatic roll-out: a server of a channel (not of a pinned release) follows the channel
        self.follower: ChannelFollower | None = None
        if run_dir is not None and settings.release is None and settings.follow_channel:
            self.follower = ChannelFollower(settings.releases_path(), settings.channel, run_dir.path)

    # ------------------------------------------------------------------ loading
    def load(self, target: str) -> ServingState:
        """Load ``target`` (release id or channel) and make it current; returns the new state."""
        state = build_state(
            self.loader(target), self.settings, self.config, prewarm=True, event_log=self.event_log
        )
        self._swap(state)
        return state

    def _swap(self, state: ServingState) -> None:
        old, self.current = self.current, state  # one reference assignment: atomic for readers
        if old is not None and old is not state:
            old.stop.set()
            self._trim = True  # on the watcher's next tick, once the requests in flight are done
        self.report()

    def start(self) -> ServingState:
        """At worker start: load the service's target (written by ``recstack serve``); without one,
        load ``settings.target()`` and make its release the target."""
        target = self.run_dir.read_target() if self.run_dir is not None else None
        if target is None:
            state = self.load(self.settings.target())
            if self.run_dir is not None:
                target = self.run_dir.write_target(state.release_id, self.settings.target())
        else:
            state = self.load(target.release)
        self.target = target
        self.report()
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
        self,
        target: str,
        on_done: Callable[[ServingState | None, Exception | None], None],
        *,
        publish: bool = False,
    ) -> bool:
        """Start loading ``target`` in a background thread; False when a reload is already running.
        ``publish``: once loaded here, make its release the service's target (the other workers
        follow)."""
        with self._lock:
            if self.loading is not None:
                return False
            self.loading = target
        self.report()

        def run() -> None:
            state: ServingState | None = None
            err: Exception | None = None
            try:
                state = self.load(target)
                self.last_error = None
                if publish and self.run_dir is not None:
                    self.target = self.run_dir.write_target(state.release_id, target)
            except Exception as exc:  # reported through /admin/reload status, never crashes serving
                err = exc
                self.last_error = f"{type(exc).__name__}: {exc}"
                if isinstance(exc, RecstackError):  # an expected refusal (no such release, tampered)
                    log.warning("reload of %r failed: %s", target, self.last_error)
                else:  # a bug: the traceback is needed
                    log.exception("reload of %r failed", target)
            finally:
                with self._lock:
                    self.loading = None
                self.report()
            on_done(state, err)

        threading.Thread(target=run, name=f"reload-{target}", daemon=True).start()
        return True

    # ------------------------------------------------------------------ converging
    def report(self) -> None:
        """Write this worker's status into the run directory."""
        if self.run_dir is None:
            return
        cur = self.current
        t = self.target
        status = {
            "release": cur.release_id if cur else None,
            "target": t.release if t else None,
            "target_seq": t.seq if t else None,
            "loading": self.loading,
            "error": self.last_error,
        }
        try:
            self.run_dir.write_status(self.pid, status)
        except OSError as exc:  # pragma: no cover - run dir removed under us
            log.warning("cannot write the worker status: %s", exc)

    def check_target(self, on_done: Callable[[ServingState | None, Exception | None], None]) -> None:
        """One convergence step: when the target file changed and names another release, load it."""
        if self.run_dir is None:
            return
        stamp = self.run_dir.stamp()
        target = self.target
        if stamp != self._stamp:
            self._stamp = stamp
            new = self.run_dir.read_target()
            if new is not None:
                target = self.target = new
                self.report()
        cur = self.current
        if target is None or cur is None or cur.release_id == target.release or self.loading is not None:
            return
        failed = self._failed_at.get(target.seq)
        if failed is not None and time.monotonic() - failed < RETRY_SECONDS:
            return

        def done(state: ServingState | None, err: Exception | None) -> None:
            if err is not None:
                self._failed_at[target.seq] = time.monotonic()
            on_done(state, err)

        log.info("converging to the service target %s (seq %d)", target.release, target.seq)
        self.start_reload(target.release, done)

    def start_watching(self, on_done: Callable[[ServingState | None, Exception | None], None]) -> None:
        """A daemon thread that runs `check_target` every `POLL_SECONDS` (and trims memory after a
        swap) until `stop_watching`."""
        if self.run_dir is None or self._watcher is not None:
            return
        self._stamp = self.run_dir.stamp()

        def loop() -> None:
            while not self._stop.wait(POLL_SECONDS):
                try:
                    if self._trim and self.loading is None:
                        self._trim = False
                        _trim_memory()
                    self.check_target(on_done)
                    if self.follower is not None:
                        self.follower.check(self, on_done)
                except Exception:  # pragma: no cover - never let the watcher die
                    log.exception("target watcher")

        self._watcher = threading.Thread(target=loop, name="target-watcher", daemon=True)
        self._watcher.start()

    def stop_watching(self) -> None:
        self._stop.set()
        if self._watcher is not None:
            self._watcher.join(timeout=5.0)
            self._watcher = None
        if self.run_dir is not None:
            self.run_dir.remove_status(self.pid)
        cur = self.current
        if cur is not None:
            cur.stop.set()
