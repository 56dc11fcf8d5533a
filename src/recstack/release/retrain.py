"""`retrain`: build a candidate from the base data + the event log, gate it against production on the
most recent events, and promote it only when it is not worse.

One run (``recstack retrain``; ``--every 6h`` repeats it in the foreground):

1. **What is new.** Production's lineage (``manifest.events``) says up to which log offset it has
   seen; the log's last offset says what exists. Fewer than ``min_new_events`` new events: nothing
   to do (``skipped``). No production release yet: build and promote the first one.
2. **Holdout.** The new events (offset after production's cut-off) that happened in the last
   ``holdout_days`` days before the newest one: neither production nor the evaluation candidate
   has seen them. Each holdout user's context is every other interaction (base data + the rest of
   the log); their holdout items minus that context are what a good model should rank high.
3. **Evaluation candidate.** The headline model (``model``, default the build's headline model)
   fitted on the base data + the log without the holdout.
4. **Gate.** Both models score every holdout user from the user's context as it stands
   (`Retriever.recommend_history`: production the way it serves, with fresh histories, not with its
   stale training rows); users with no item the model knows get its most popular items. The mean
   ``metric`` (NDCG@k, recall@k or HR@k) over holdout users decides: promote when
   ``candidate >= production * (1 - max_drop)`` (``max_drop = 0``: not worse), else keep
   production and say why (both values, the users counted). Fewer than ``min_holdout_users``
   holdout users: refuse (too little evidence) unless ``min_holdout_users = 0``.
5. **Release.** On a pass, `build` the release from the base data + the whole log up to the last
   offset (nothing held out: the serving release learns the latest events too), with that offset
   range in its lineage, and promote it; the channel's history records the retrain gate. Servers
   watching the channel roll it out by themselves (`recstack.serving`), and a rollback is the
   same path.

Every run appends one JSON line to ``<releases>/retrain.jsonl`` (the audit trail).
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
import polars as pl
import scipy.sparse as sp
from pydantic import Field

from recstack.config import ComponentConfig
from recstack.data.checks import DataCheckError
from recstack.data.dataset import Dataset
from recstack.errors import ConfigError, InvalidArgumentError
from recstack.events import INTERACTION_TYPES, EventLog, open_log
from recstack.events.dataset import EventsSpec, dataset_with_events, read_events
from recstack.models.base import Retriever
from recstack.release.build import BuildConfig, ModelSpec, build
from recstack.release.registry import Registry

__all__ = ["RetrainConfig", "RetrainResult", "evaluate_on_holdout", "parse_interval", "retrain"]

log = logging.getLogger(__name__)

AUDIT_FILE = "retrain.jsonl"


class RetrainConfig(ComponentConfig):
    """How `retrain` decides (see the module docstring)."""

    #: the pipeline of the releases (its [dataset] source is the base data set; `retrain` sets
    #: [dataset.events] itself)
    build: BuildConfig = Field(default_factory=BuildConfig.default)
    #: the event log (`recstack.events.open_log` URL)
    event_log: str
    channel: str = "production"
    #: the holdout: new events of the last N days; keep it shorter than the time between retrains,
    #: or the evaluation candidate has nothing new to learn from before it (then the gate is a tie)
    holdout_days: float = Field(default=2.0, gt=0)
    metric: Literal["ndcg", "recall", "hr"] = "ndcg"
    k: int = Field(default=10, ge=1)
    #: largest relative drop of the metric that still promotes (0: the candidate must not be worse)
    max_drop: float = Field(default=0.0, ge=0.0, lt=1.0)
    min_new_events: int = Field(default=1, ge=0)
    min_holdout_users: int = Field(default=10, ge=0)
    #: the model both sides are compared on (None: the build's headline model)
    model: str | None = None


@dataclass
class RetrainResult:
    """What one run did: ``action`` is ``promoted``, ``refused`` or ``skipped``."""

    action: str
    reason: str
    production: str | None
    candidate: str | None = None
    last_offset: int = 0
    production_offset: int = 0
    holdout: dict[str, Any] = field(default_factory=dict)
    scores: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0
    at: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def parse_interval(text: str) -> float:
    """Seconds of ``90s``, ``30m``, ``6h``, ``1d`` (or a bare number of seconds)."""
    t = text.strip().lower()
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    try:
        value = float(t[:-1]) * units[t[-1]] if t and t[-1] in units else float(t)
    except ValueError:
        raise InvalidArgumentError(f"interval {text!r}: use a number with s, m, h or d (6h, 30m)") from None
    if not math.isfinite(value) or value <= 0:
        raise InvalidArgumentError(f"interval {text!r} must be positive")
    return value


# ----------------------------------------------------------------------------------- evaluation
def _csr(rows: list[list[int]], n_cols: int) -> sp.csr_matrix:
    indptr = np.zeros(len(rows) + 1, dtype=np.int64)
    np.cumsum([len(r) for r in rows], out=indptr[1:])
    cols = np.fromiter((c for r in rows for c in r), dtype=np.int64, count=int(indptr[-1]))
    data = np.ones(len(cols), dtype=np.float32)
    return sp.csr_matrix((data, cols, indptr), shape=(len(rows), n_cols))


def evaluate_on_holdout(
    model: Retriever,
    model_data: Dataset,
    context: dict[str, list[str]],
    truth: dict[str, set[str]],
    *,
    k: int = 10,
) -> dict[str, float]:
    """Mean NDCG@k, recall@k and HR@k of ``model`` over the users of ``truth``.

    ``context[user]``: the user's items (external ids, as strings) before the holdout, scored from
    with `Retriever.recommend_history` and excluded from the ranking; ``truth[user]``: the holdout
    items (minus the context). ``model_data``: the data the model was fitted on (its vocabularies;
    its popularity ranks the items of users with no item the model knows). Items unknown to the
    model still count in the denominators.
    """
    users = sorted(u for u, t in truth.items() if t)
    vocab = model_data.item_vocab
    ext = [str(x) for x in vocab.ids.to_list()]
    index = {e: i for i, e in enumerate(ext)}
    rows = [sorted({index[i] for i in context.get(u, ()) if i in index}) for u in users]
    hist = _csr(rows, model_data.n_items)
    ids = np.full((len(users), k), -1, dtype=np.int64)
    has = np.asarray([len(r) > 0 for r in rows])
    if has.any():
        top, _ = model.recommend_history(hist[np.flatnonzero(has)], k)
        ids[has] = top
    if (~has).any():
        pop_order = np.argsort(-model_data.item_popularity(), kind="stable")[:k]
        ids[~has] = pop_order
    ndcg = recall = hr = 0.0
    disc = 1.0 / np.log2(np.arange(2, k + 2))
    for r, u in enumerate(users):
        t = truth[u]
        hits = np.asarray([i >= 0 and ext[i] in t for i in ids[r]], dtype=np.float64)
        ideal = disc[: min(len(t), k)].sum()
        ndcg += float((hits * disc).sum() / ideal)
        recall += float(hits.sum() / len(t))
        hr += float(hits.any())
    n = max(len(users), 1)
    return {"ndcg": ndcg / n, "recall": recall / n, "hr": hr / n, "users": float(len(users))}


def _holdout(
    events: pl.DataFrame, base: Dataset | None, prod_offset: int, days: float
) -> tuple[pl.DataFrame, dict[str, list[str]], dict[str, set[str]], int]:
    """(events without the holdout, context per holdout user, truth per user, holdout start ts)."""
    inter = events.filter(pl.col("type").is_in(list(INTERACTION_TYPES)) & pl.col("item_id").is_not_null())
    new = inter.filter(pl.col("offset") > prod_offset)
    t_end = int(new["ts"].max())  # type: ignore[arg-type]
    t_start = t_end - int(days * 86400)
    held = new.filter(pl.col("ts") >= t_start)
    train_events = events.join(held.select("offset"), on="offset", how="anti")
    users = set(held["user_id"].to_list())
    context: dict[str, list[str]] = {u: [] for u in users}
    if base is not None:
        uext = base.user_vocab.ids.cast(pl.String)
        iext = base.item_vocab.ids.cast(pl.String)
        bi = pl.DataFrame(
            {
                "user_id": uext.gather(base.interactions["user"]),
                "item_id": iext.gather(base.interactions["item"]),
            }
        ).filter(pl.col("user_id").is_in(list(users)))
        for u, i in bi.iter_rows():
            context[u].append(i)
    ctx_ev = train_events.filter(
        pl.col("type").is_in(list(INTERACTION_TYPES)) & pl.col("user_id").is_in(list(users))
    )
    for u, i in ctx_ev.select("user_id", "item_id").iter_rows():
        if i is not None:
            context[u].append(i)
    truth: dict[str, set[str]] = {}
    for u, i in held.select("user_id", "item_id").iter_rows():
        truth.setdefault(u, set()).add(i)
    for u in truth:
        truth[u] -= set(context[u])
    return train_events, context, truth, t_start


# ------------------------------------------------------------------------------------- the run
def _headline(cfg: BuildConfig, name: str | None) -> ModelSpec:
    key = name or cfg.headline.model or cfg.models[-1].key
    for spec in cfg.models:
        if spec.key == key:
            return spec
    raise ConfigError(f"retrain model {key!r} is not among the build's models {[m.key for m in cfg.models]}")


def _base(cfg: BuildConfig) -> Dataset | None:
    from recstack.release.build import _load_source

    return None if cfg.dataset.source.lower() in ("none", "") else _load_source(cfg.dataset)


def _build_with_events(cfg: RetrainConfig, upto: int, root: Path) -> str:
    ds = cfg.build.dataset
    events = ds.events or EventsSpec(log=cfg.event_log)
    events = events.model_copy(update={"log": cfg.event_log, "after": 0, "upto": upto, "before_ts": None})
    bc = cfg.build.model_copy(update={"dataset": ds.model_copy(update={"events": events})})
    return build(bc, root).id


def _audit(root: Path, result: RetrainResult) -> None:
    with (root / AUDIT_FILE).open("a", encoding="utf-8") as fh:
        fh.write(json.dumps(result.to_json()) + "\n")


def retrain(
    cfg: RetrainConfig, releases_dir: str | Path, *, event_log: EventLog | None = None
) -> RetrainResult:
    """One retrain run (see the module docstring); appends its result to ``retrain.jsonl``."""
    t0 = time.perf_counter()
    root = Path(releases_dir)
    root.mkdir(parents=True, exist_ok=True)
    reg = Registry(root)
    own = event_log is None
    elog = event_log or open_log(cfg.event_log)
    if elog is None:
        raise ConfigError("retrain needs an event log (event_log is 'off')")
    try:
        result = _run(cfg, root, reg, elog)
    finally:
        if own:
            elog.close()
    result.seconds = round(time.perf_counter() - t0, 2)
    _audit(root, result)
    return result


def _run(cfg: RetrainConfig, root: Path, reg: Registry, elog: EventLog) -> RetrainResult:
    from recstack.models.registry import create
    from recstack.serving._events import release_cutoff

    last = elog.last_offset()
    prod = reg.channel(cfg.channel).current
    if prod is None:
        try:
            rid = _build_with_events(cfg, last, root)
        except DataCheckError as exc:
            return RetrainResult("refused", f"data checks: {exc.message}", None, None, last)
        reg.promote(rid, cfg.channel, force=True, reason=f"retrain: first release of {cfg.channel}")
        return RetrainResult("promoted", f"no release on {cfg.channel} yet", None, rid, last)
    from recstack.release.loader import load

    prod_rel = load(prod, root, verify=False)
    log_id, prod_off = release_cutoff(prod_rel)
    if log_id is not None and log_id != elog.log_id:
        prod_off = 0  # built from another log: every event here is new to it
    result = RetrainResult("skipped", "", prod, None, last, prod_off)
    if last - prod_off < max(cfg.min_new_events, 1):
        result.reason = f"{last - prod_off} new events since {prod} (at least {max(cfg.min_new_events, 1)})"
        return result
    spec = cfg.build.dataset.events or EventsSpec(log=cfg.event_log)
    spec = spec.model_copy(update={"log": cfg.event_log, "after": 0, "upto": last, "before_ts": None})
    events, _ = read_events(spec, elog)
    if (
        events.filter(pl.col("offset") > prod_off)
        .filter(pl.col("type").is_in(list(INTERACTION_TYPES)))
        .is_empty()
    ):
        result.reason = f"no new interaction among the {last - prod_off} new events"
        return result
    base = _base(cfg.build)
    train_events, context, truth, t_start = _holdout(events, base, prod_off, cfg.holdout_days)
    n_users = sum(1 for t in truth.values() if t)
    result.holdout = {
        "start_ts": t_start,
        "days": cfg.holdout_days,
        "users": n_users,
        "items": sum(len(t) for t in truth.values()),
    }
    if n_users < cfg.min_holdout_users:
        result.action = "refused"
        result.reason = (
            f"only {n_users} holdout users in the last {cfg.holdout_days:g} days of new events "
            f"(min_holdout_users {cfg.min_holdout_users}): too little evidence; production stays"
        )
        return result
    mspec = _headline(cfg.build, cfg.model)
    learnt = train_events.filter(
        (pl.col("offset") > prod_off) & pl.col("type").is_in(list(INTERACTION_TYPES))
    ).height
    result.holdout["new_events_before_holdout"] = learnt
    train_ds, _ = dataset_with_events(base, train_events, spec)
    cand = create(mspec.name, **mspec.params).fit(train_ds)
    s_cand = evaluate_on_holdout(cand, train_ds, context, truth, k=cfg.k)
    s_prod = evaluate_on_holdout(prod_rel.retriever(mspec.key), prod_rel.dataset, context, truth, k=cfg.k)
    name = f"{cfg.metric}@{cfg.k}"
    c, p = s_cand[cfg.metric], s_prod[cfg.metric]
    result.scores = {
        **{f"candidate_{k}@{cfg.k}": v for k, v in s_cand.items() if k != "users"},
        **{f"production_{k}@{cfg.k}": v for k, v in s_prod.items() if k != "users"},
    }
    floor = p * (1.0 - cfg.max_drop)
    if c < floor:
        result.action = "refused"
        result.reason = (
            f"candidate {mspec.key} {name} {c:.4f} < production {prod} {p:.4f}"
            + (f" x (1 - {cfg.max_drop:g})" if cfg.max_drop else "")
            + f" on {n_users} holdout users; production stays"
        )
        return result
    try:
        rid = _build_with_events(cfg, last, root)
    except DataCheckError as exc:  # the data checks of the build gate a retrain too
        result.action = "refused"
        result.reason = f"data checks: {exc.message}; production stays"
        return result
    gate = f"retrain: {mspec.key} {name} {c:.4f} vs production {p:.4f} on {n_users} holdout users"
    if learnt == 0:
        gate += (
            f" (a tie by construction: every new event is in the {cfg.holdout_days:g}-day holdout, so "
            "the evaluation candidate learnt nothing new; use a holdout shorter than the retrain interval)"
        )
    reg.promote(rid, cfg.channel, force=True, reason=gate)
    result.action, result.candidate, result.reason = "promoted", rid, gate
    return result
