"""The server's side of experiments and monitoring (one `OnlineRuntime` per worker process).

A background thread, every ``experiments_poll_s`` seconds:

1. looks at the experiments directory (`recstack.experiments.ExperimentStore`); when the running
   experiment changed, or the serving release did, it builds the arms **off the request path** and
   then publishes them with one reference assignment (`OnlineRuntime.active`). An arm on the serving
   release shares everything of it (catalogue, histories, index, loaded rankers: a `Pipeline` object
   with the arm's settings); an arm on another release loads that release once per worker (a second
   `ServingState`: its memory, see the README) and keeps its histories in step with the event log.
   Until the arms are built the experiment is not live in that worker: answers carry no arm and are
   served by the default, so no answer is attributed to an arm that did not serve it;
2. reads the event log's new events into the drift window (`recstack.ops.drift.DriftMonitor`:
   every worker reads every worker's events) and exports the PSI gauges.

On the request path `route` costs one hash of the user id (`recstack.experiments.Assigner`).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from recstack.events import EventLog, NewEvent
from recstack.experiments.assign import Assigner
from recstack.experiments.config import (
    HOLDOUT_ARM,
    ExperimentConfig,
    ExperimentStore,
    default_experiments_dir,
)
from recstack.ops import monitoring
from recstack.ops.drift import DriftMonitor, DriftReference
from recstack.serving.pipeline import Pipeline, PipelineConfig, RecRequest, RecResult

__all__ = ["ActiveExperiment", "ArmRuntime", "OnlineRuntime", "Routed", "arm_pipeline_config"]

log = logging.getLogger(__name__)

NO_ARM = "none"


@dataclass(frozen=True)
class ArmRuntime:
    """What serves one arm: a pipeline (over ``state``'s release) and the model it asks for."""

    name: str
    state: Any  #: ServingState
    pipeline: Pipeline
    model: str | None


@dataclass(frozen=True)
class Routed:
    experiment: str
    arm: str
    runtime: ArmRuntime


@dataclass
class ActiveExperiment:
    config: ExperimentConfig
    assigner: Assigner
    base: Any  #: the ServingState the arms were built for
    arms: dict[str, ArmRuntime]
    signature: tuple[Any, ...]


@dataclass
class _Extra:
    """A release loaded for an arm (not the serving one)."""

    state: Any
    monitor: monitoring.ShownMonitor


def arm_pipeline_config(base: PipelineConfig, overrides: dict[str, Any] | None) -> PipelineConfig:
    """``base`` with an arm's ``pipeline`` keys over it (tables such as ``rank`` merge key by key)."""
    if not overrides:
        return base
    data = base.dump_config()
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    return PipelineConfig.from_config(data)


@dataclass
class OnlineRuntime:
    """Experiments (assignment, arms) and monitoring (shown items, drift) of one worker."""

    holder: Any  #: StateHolder
    store: ExperimentStore | None
    poll_s: float = 1.0
    impressions: str = "all"
    drift_window: int = 5000
    drift_min_events: int = 200
    drift_threshold: float = 0.25
    active: ActiveExperiment | None = None
    #: the last error building the running experiment (None when fine)
    error: str | None = None
    drift: DriftMonitor | None = None
    _extra: dict[str, _Extra] = field(default_factory=dict)
    _monitors: dict[str, monitoring.ShownMonitor] = field(default_factory=dict)
    _drift_base: Any = None
    _drift_cursor: int = 0
    _log_reader: EventLog | None = None
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def from_settings(cls, settings: Any, holder: Any) -> OnlineRuntime:
        exp_dir = getattr(settings, "experiments_dir", None)
        if exp_dir is None:
            try:
                exp_dir = default_experiments_dir(Path(settings.releases_path()))
            except Exception:  # no releases dir configured (in-memory tests)
                exp_dir = None
        store = ExperimentStore(exp_dir) if exp_dir is not None and str(exp_dir) != "off" else None
        return cls(
            holder=holder,
            store=store,
            poll_s=float(getattr(settings, "experiments_poll_s", 1.0)),
            impressions=str(getattr(settings, "impressions", "all")),
            drift_window=int(getattr(settings, "drift_window", 5000)),
            drift_min_events=int(getattr(settings, "drift_min_events", 200)),
            drift_threshold=float(getattr(settings, "drift_threshold", 0.25)),
        )

    # ----------------------------------------------------------------------------- lifecycle
    def start(self) -> None:
        if self._thread is not None:
            return

        def run() -> None:
            while not self._stop.wait(self.poll_s):
                try:
                    self.refresh()
                except Exception:  # never let the thread die: try again at the next tick
                    log.exception("experiments / monitoring refresh failed")

        self._thread = threading.Thread(target=run, name="online-runtime", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def refresh(self) -> None:
        """One tick: experiments, extra releases' histories, drift (also called by tests)."""
        with self._lock:
            self._refresh_experiment()
            for extra in list(self._extra.values()):
                if extra.state.feed is not None:
                    extra.state.feed.catch_up()
            self._refresh_drift()

    # ---------------------------------------------------------------------------- experiments
    def running(self) -> ExperimentConfig | None:
        return self.store.running() if self.store is not None else None

    def _refresh_experiment(self) -> None:
        base = self.holder.current
        if self.store is None or base is None:
            return
        sig = (self.store.signature(), id(base))
        act = self.active
        if act is not None and act.signature == sig:
            return
        cfg = self.store.running()
        if cfg is None:
            self.active, self.error = None, None
            self._drop_extras(set())
            return
        if act is not None and act.base is base and act.config == cfg:
            act.signature = sig
            return
        try:
            arms = {a.name: self._build_arm(cfg, a, base) for a in cfg.arms}
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
            if error != self.error:  # once per change, not once per poll
                log.error("experiment %s is not live: %s", cfg.name, error)
            self.error = error
            self.active = None
            return
        if cfg.holdout > 0:
            arms[HOLDOUT_ARM] = ArmRuntime(HOLDOUT_ARM, base, base.pipeline, None)
        self.active = ActiveExperiment(cfg, Assigner(cfg), base, arms, sig)
        self.error = None
        self._drop_extras({a.state.release_id for a in arms.values() if a.state is not base})
        log.info("experiment %s live: arms %s", cfg.name, ", ".join(arms))

    def _build_arm(self, cfg: ExperimentConfig, arm: Any, base: Any) -> ArmRuntime:
        state = base
        if arm.release is not None:
            state = self._release_state(arm.release, base)
            # items added online to the serving release reach this one too (so far and later)
            state.pipeline.follow_items(base.pipeline)
        overrides = arm.pipeline if isinstance(arm.pipeline, dict) else None
        if overrides:
            p0 = state.pipeline
            pipeline = Pipeline(
                state.release,
                arm_pipeline_config(p0.config, overrides),
                catalog=p0.base_catalog,
                history=p0.history,
                index=p0.index,
                user_tower=p0.user_tower,
                rankers=p0.rankers,
            )
            pipeline.follow_items(p0)  # shares p0's catalogue and text search, items added included
        else:
            pipeline = state.pipeline
        pipeline.check_model(arm.model)  # an unknown model fails here, not on every request
        return ArmRuntime(arm.name, state, pipeline, arm.model)

    def _release_state(self, target: str, base: Any) -> Any:
        """The state of release / channel ``target`` (the serving one when it resolves to it)."""
        for rid, extra in self._extra.items():
            if target == rid:
                return extra.state
        release = self.holder.loader(target)
        if release.id == base.release_id:
            return base
        if release.id in self._extra:
            return self._extra[release.id].state
        from recstack.serving._state import build_state

        t0 = time.perf_counter()
        state = build_state(
            release, self.holder.settings, self.holder.config, prewarm=True, event_log=self.holder.event_log
        )
        self._extra[release.id] = _Extra(state, monitoring.ShownMonitor.of_catalog(state.pipeline.catalog))
        log.info("experiment arm release %s loaded in %.2fs", release.id, time.perf_counter() - t0)
        return state

    def _drop_extras(self, keep: set[str]) -> None:
        for rid in [r for r in self._extra if r not in keep]:
            del self._extra[rid]
            log.info("experiment arm release %s unloaded", rid)

    def route(self, state: Any, req: RecRequest) -> Routed | None:
        """The arm serving ``req`` (None: no live experiment, no user id, an explicit ``model=``, or
        ``state`` is not the state the arms were built for: a reload is in progress)."""
        act = self.active
        if act is None or req.user_id is None or req.model is not None or act.base is not state:
            return None
        arm = act.assigner(req.user_id)
        return Routed(act.config.name, arm, act.arms[arm])

    # ----------------------------------------------------------------------------- answers
    def monitor_for(self, state: Any) -> monitoring.ShownMonitor:
        """The shown-item monitor of ``state``'s catalogue (one per release: its arrays index it)."""
        for extra in self._extra.values():
            if extra.state is state:
                return extra.monitor
        m = self._monitors.get(state.release_id)
        if m is None:
            if len(self._monitors) >= 4:  # reloads: keep the few latest releases
                self._monitors.pop(next(iter(self._monitors)))
            m = self._monitors[state.release_id] = monitoring.ShownMonitor.of_catalog(state.pipeline.catalog)
        return m

    def answered(
        self,
        state: Any,
        res: RecResult,
        *,
        user_id: Any,
        request_id: str,
        routed: Routed | None,
        sink: Any,
    ) -> None:
        """After an answer: its metrics, and its impression into the event log."""
        arm = routed.arm if routed is not None else NO_ARM
        self.monitor_for(state).observe(
            state.release_id, arm, res.items, res.scores, res.cold_start, res.fallbacks
        )
        if sink is None or user_id is None or self.impressions == "off":
            return
        if self.impressions == "experiments" and routed is None:
            return
        ids = state.pipeline.catalog.item_ids
        items = [str(ids[i]) for i in res.items.tolist()]
        payload = {
            "experiment": routed.experiment if routed is not None else None,
            "arm": routed.arm if routed is not None else None,
            "items": items,
            "positions": list(range(1, len(items) + 1)),
            "model": res.model,
            # the user's segment: "new" when the answer had no history to go on (a user unknown to
            # the release, or one without interactions yet), else "returning"
            "segment": "returning" if res.history else "new",
            "k": len(items),
            "request_id": request_id,
        }
        now = time.time()
        try:
            sink.submit(
                NewEvent(
                    type="impression",
                    user_id=str(user_id),
                    item_id=None,
                    ts=int(now),
                    received=round(now, 3),
                    release_id=state.release_id,
                    request_id=request_id or None,
                    payload=payload,
                )
            )
        except Exception:  # a bad id never fails the answer
            monitoring.IMPRESSIONS_DROPPED.inc()

    # ---------------------------------------------------------------------------------- drift
    def _refresh_drift(self) -> None:
        base = self.holder.current
        ev_log = self.holder.event_log
        if base is None or ev_log is None:
            return
        if self.drift is None or self._drift_base != base.release_id:
            cat0 = base.pipeline.catalog
            ref = DriftReference.from_dataset(cat0.dataset.with_interactions(cat0.interactions()))
            self.drift = DriftMonitor(
                ref,
                window=self.drift_window,
                min_events=self.drift_min_events,
                threshold=self.drift_threshold,
            )
            self._drift_base = base.release_id
            # start with the last window of the log (a restarted worker has a full window at once)
            self._drift_cursor = max(0, ev_log.last_offset() - self.drift_window)
        cat = base.pipeline.catalog
        vocab = cat.dataset.item_vocab
        n = 0
        for batch in ev_log.iter_batches(self._drift_cursor):
            for e in batch:
                uidx = cat.user_index(e.user_id)
                if e.type == "impression":
                    self.drift.observe(uidx, -2)
                elif e.item_id is not None:
                    iidx = vocab.get(e.item_id)
                    self.drift.observe(uidx, -1 if iidx is None else int(iidx))
            self._drift_cursor = batch[-1].offset
            n += len(batch)
        st = self.drift.status()
        monitoring.set_drift(st["psi"], self.drift.threshold, st["window_events"])

    def drift_status(self) -> dict[str, Any]:
        if self.drift is None:
            return {"window_events": 0, "psi": {}, "drifted": [], "threshold": self.drift_threshold}
        st = self.drift.status()
        st["psi"] = {k: (v if math.isfinite(v) else None) for k, v in st["psi"].items()}
        return st
