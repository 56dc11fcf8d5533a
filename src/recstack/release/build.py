"""`build(config, releases_dir)`: the offline pipeline that turns a dataset into a verified release.

Stages (each timed; the timings go into the manifest):

1. ``data``      load the dataset (a bundled/registered name, a file/dir path, or a saved Dataset dir)
2. ``features``  user / item feature tables (`recstack.features`), when enabled
3. ``evaluate``  split under the configured protocol (the headline; ``temporal-rolling`` in the default
                 pipeline: ``[split] windows`` folds) and the ``[evaluation] also`` protocols, fit each
                 configured model on each fold's train part and score it on its holdout
4. ``fit``       refit every model on all data for serving (``refit_full``, default true)
5. ``index``     export item embeddings and build the ANN index over the configured source model
6. ``write``     dataset, features, model dirs, metrics.json, report.html
7. ``finalize``  sha256 of every file, manifest.json, verification, atomic rename into place

Everything is written into ``releases_dir/.tmp-...`` and renamed to ``releases_dir/<id>`` only when
complete and verified: an interrupted build (exception, Ctrl-C, SIGKILL) never leaves a visible
release; stale temp dirs of dead builds are removed by the next build or by ``gc``.
"""

from __future__ import annotations

import importlib
import json
import logging
import math
import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import numpy.typing as npt
from pydantic import Field, field_validator, model_validator

from recstack import __version__
from recstack._progress import progress_bar
from recstack.config import ComponentConfig, load_toml
from recstack.data.checks import ChecksSpec, check_report, run_checks
from recstack.data.dataset import Dataset
from recstack.errors import ArtifactError, ConfigError, InvalidArgumentError
from recstack.events.dataset import EventsLineage, EventsSpec
from recstack.models.base import Retriever
from recstack.models.shared import shared_fits
from recstack.release.manifest import (
    ArtifactsInfo,
    DatasetInfo,
    HeadlineInfo,
    IndexInfo,
    Manifest,
    git_commit,
    hash_files,
    new_release_id,
)
from recstack.release.registry import PID_FILE, TMP_PREFIX, Registry, clean_stale_tmp

if TYPE_CHECKING:
    from recstack.evaluation._blocks import BlockScorer

__all__ = [
    "STAGES",
    "BuildConfig",
    "DatasetSpec",
    "EvaluationSpec",
    "FeaturesSpec",
    "HeadlineSpec",
    "IndexSpec",
    "ModelSpec",
    "SplitSpec",
    "build",
    "default_config_path",
]

log = logging.getLogger(__name__)

STAGES: tuple[str, ...] = ("data", "features", "evaluate", "fit", "index", "write", "finalize")


# ------------------------------------------------------------------------------------------ config
class DatasetSpec(ComponentConfig):
    """Where the data comes from: ``ml-latest-small`` (bundled), a MovieLens name read from the data
    directory (``ml-100k``...: `recstack.data.paths`), a MovieLens/CSV/Parquet path, or a dir
    written by `Dataset.save`; ``none`` with ``events`` only: the event log alone.

    ``events`` (a ``[dataset.events]`` table, `recstack.events.dataset.EventsSpec`): add the event
    log's interactions on top of the source; the offsets read go into the release's lineage
    (``manifest.events``)."""

    source: str = "ml-latest-small"
    format: str | None = None
    events: EventsSpec | None = None


class SplitSpec(ComponentConfig):
    """The holdout protocol of BENCHMARKS.md (``stratified``, ``tfrs``, ``temporal``,
    ``temporal-rolling``...): its figures are the release's headline metrics (the promote gate).
    ``windows`` / ``window_fraction``: ``temporal-rolling``'s folds (the last ``windows`` windows of
    ``window_fraction`` of the interactions each; fewer windows than `recstack evaluate`'s 5 keep a
    build short: every evaluated model is fitted once per window)."""

    protocol: str = "stratified"
    seed: int = 42
    windows: int = Field(default=5, ge=1)
    window_fraction: float = Field(default=0.05, gt=0, lt=1)

    def folds(self, dataset: Dataset, protocol: str | None = None) -> list[Any]:
        """The splits of ``protocol`` (default: this one): the rolling folds, else one split."""
        from recstack.data.splits import rolling_splits, split

        proto = protocol or self.protocol
        if proto == "temporal-rolling":
            return rolling_splits(
                dataset, n_windows=self.windows, window_fraction=self.window_fraction, seed=self.seed
            )
        return [split(dataset, proto, seed=self.seed)]


class EvaluationSpec(ComponentConfig):
    """Holdout evaluation. ``max_k``: the curves of metrics.json / report.html go over K = 1..max_k.
    ``refit_full``: after evaluation, refit every model on all data for serving."""

    enabled: bool = True
    max_k: int = Field(default=50, ge=10)
    exclude_train: bool = True
    refit_full: bool = True
    #: more protocols in the table: each model's figures under them go into its metrics as
    #: ``"<protocol>:<metric>"`` (``"stratified:ndcg@10"``); the headline stays ``[split] protocol``
    also: list[str] = Field(default_factory=list)
    #: write report.html (plots with matplotlib: a few seconds)
    report: bool = True
    #: threads that score the evaluation's user blocks (0 = all cores; with ``--runner ray``: Ray
    #: tasks instead, see `build`)
    workers: int = Field(default=0, ge=0)
    #: users per scoring block: memory is about ``workers x 2 x block_users x n_items x 4`` bytes
    block_users: int = Field(default=1024, ge=1)
    #: evaluate a uniform sample of this many test users (metrics.json then holds each headline
    #: metric's 95% confidence interval under ``"sample"``); None = every test user
    sample_users: int | None = Field(default=None, ge=1)


class FeaturesSpec(ComponentConfig):
    """User / item feature tables (`recstack.features`). Statistics come from the data each model
    sees (train part while evaluating, all data in the release)."""

    enabled: bool = True


class ModelSpec(ComponentConfig):
    """One model of the release. ``name`` is a registry name (``ease``, ``two_stage:deepfm``);
    ``alias`` names it inside the release (default: ``name``); ``optional`` models that are not
    implemented / available are skipped (and listed in the manifest) instead of failing the build."""

    name: str
    alias: str | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    optional: bool = False
    evaluate: bool = True
    #: refit on all data for serving; None: ``[evaluation] refit_full``. False serves the model fitted
    #: on the split's train part (saves a second fit of expensive models; with several folds, the last)
    refit: bool | None = None
    #: the protocols (of ``[split] protocol`` and ``[evaluation] also``) this model is evaluated under;
    #: None: all of them (a costly recall source can stay out of the rolling folds)
    protocols: list[str] | None = None

    @property
    def key(self) -> str:
        return self.alias or self.name

    @field_validator("alias")
    @classmethod
    def _alias_ok(cls, v: str | None) -> str | None:
        if v is not None and (not v or "/" in v or v.startswith(".")):
            raise ValueError(f"alias {v!r} must be a non-empty name without '/' or a leading '.'")
        return v


class IndexSpec(ComponentConfig):
    """ANN index over a model's item embeddings. ``backend``: ``auto`` (faiss when installed, else
    exact), ``faiss``, ``exact``, ``milvus`` or ``none``. ``source``: the model alias whose
    embeddings are indexed (default: ``two_tower`` when built, else the first model with embeddings)."""

    backend: str = "auto"
    source: str | None = None
    metric: Literal["ip", "cosine", "l2"] = "ip"
    params: dict[str, Any] = Field(default_factory=dict)


class HeadlineSpec(ComponentConfig):
    """The metric `promote` gates on. ``model`` None: the last model of ``models`` that was built
    (the default pipeline lists models from simplest to the serving model)."""

    model: str | None = None
    metric: str = "ndcg@10"


class LargeModelSpec(ComponentConfig):
    """A model's overrides under `LargeSpec`: ``skip`` leaves it out of the build (listed in the
    manifest's ``skipped`` with the reason); ``params`` are merged into its params; ``refit`` /
    ``protocols`` replace its own."""

    skip: bool = False
    params: dict[str, Any] = Field(default_factory=dict)
    refit: bool | None = None
    protocols: list[str] | None = None


class LargeSpec(ComponentConfig):
    """Large data: when the dataset has at least ``interactions`` interactions, the build applies these
    overrides to the tables of the config (``split`` and ``evaluation`` are merged into ``[split]`` /
    ``[evaluation]``; ``models`` by model key) before anything is fitted, and records what it changed
    in the manifest (``metrics.json`` ``"large"``). It keeps the number of fits per model, and so the
    build's time, bounded where a build would fit every model once per rolling window, once per
    ``also`` protocol and once more on all data. None: never."""

    interactions: int | None = Field(default=None, ge=1)
    split: dict[str, Any] = Field(default_factory=dict)
    evaluation: dict[str, Any] = Field(default_factory=dict)
    models: dict[str, LargeModelSpec] = Field(default_factory=dict)

    def applies(self, n_interactions: int) -> bool:
        return self.interactions is not None and n_interactions >= self.interactions


class BuildConfig(ComponentConfig):
    """The whole offline pipeline, declared in TOML (``recstack build --config recstack.toml``)."""

    dataset: DatasetSpec = Field(default_factory=DatasetSpec)
    split: SplitSpec = Field(default_factory=SplitSpec)
    evaluation: EvaluationSpec = Field(default_factory=EvaluationSpec)
    features: FeaturesSpec = Field(default_factory=FeaturesSpec)
    models: list[ModelSpec] = Field(
        default_factory=lambda: [ModelSpec(name=n) for n in ("pop", "itemknn", "ease", "als")]
    )
    index: IndexSpec = Field(default_factory=IndexSpec)
    headline: HeadlineSpec = Field(default_factory=HeadlineSpec)
    #: data checks run before anything is fitted (`recstack.data.checks`); a failure stops the build
    #: unless ``allow`` names it with a reason (recorded in the manifest's ``data_checks``)
    checks: ChecksSpec = Field(default_factory=ChecksSpec)
    #: the parent of a new release: this channel's current release, else the latest release
    parent_channel: str = "production"
    #: overrides for large data (`LargeSpec`)
    large: LargeSpec = Field(default_factory=LargeSpec)

    @model_validator(mode="after")
    def _unique_aliases(self) -> BuildConfig:
        keys = [m.key for m in self.models]
        dup = sorted({k for k in keys if keys.count(k) > 1})
        if dup:
            raise ValueError(f"model aliases must be unique; set `alias` for the duplicates {dup}")
        if not keys:
            raise ValueError("configure at least one model under [[models]]")
        unknown = sorted(set(self.large.models) - set(keys))
        if unknown:
            raise ValueError(
                f"[large.models] names models that are not configured: {unknown} (models: {keys})"
            )
        return self

    def at_size(self, n_interactions: int) -> tuple[BuildConfig, dict[str, Any] | None]:
        """This config for a dataset of ``n_interactions``: with `LargeSpec` applied when it applies
        (the models it skips removed), and a record of what changed (None: nothing)."""
        lg = self.large
        if not lg.applies(n_interactions):
            return self, None
        data = self.dump_config()
        changed: dict[str, Any] = {"interactions": n_interactions, "threshold": lg.interactions}
        for table in ("split", "evaluation"):
            over = getattr(lg, table)
            if over:
                data[table] = {**data[table], **over}
                changed[table] = over
        models: list[dict[str, Any]] = []
        skipped: list[str] = []
        for m in self.models:
            o = lg.models.get(m.key)
            d = m.dump_config()
            if o is not None:
                if o.skip:
                    skipped.append(m.key)
                    continue
                d["params"] = {**d["params"], **o.params}
                for f in ("refit", "protocols"):
                    if f in o.model_fields_set:
                        d[f] = getattr(o, f)
                changed.setdefault("models", {})[m.key] = o.model_dump(mode="json", exclude_unset=True)
            models.append(d)
        if skipped:
            changed["skipped"] = skipped
        if not models:
            raise ConfigError("[large.models] skips every configured model")
        data["models"] = models
        headline = data["headline"]
        if headline.get("model") in skipped:
            raise ConfigError(f"[large.models] skips the headline model {headline['model']!r}")
        data["large"] = {**data["large"], "models": {}}  # applied once
        return BuildConfig.from_config(data), changed

    @classmethod
    def from_toml(cls, path: str | Path) -> BuildConfig:
        """Read a pipeline TOML. A ``[build]`` table is used when present (so the config can live
        in a shared ``recstack.toml``); otherwise the whole file is the build config."""
        data = load_toml(path)
        data = data.get("build", data)
        try:
            return cls.from_config(data)
        except ConfigError as exc:
            raise ConfigError(f"{path}: {exc}") from exc

    @classmethod
    def default(cls) -> BuildConfig:
        """The default pipeline (the bundled ``default.toml``)."""
        return cls.from_toml(default_config_path())


def default_config_path() -> Path:
    """Path of the bundled default pipeline config."""
    return Path(str(resources.files("recstack.release").joinpath("default.toml")))


# ------------------------------------------------------------------------------------------ stages
StageHook = Callable[[str], None]


class _Timer:
    def __init__(self, hook: StageHook | None) -> None:
        self.timings: dict[str, float] = {}
        self.peak_rss_mb: dict[str, int] = {}
        self.hook = hook

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        if self.hook is not None:
            self.hook(name)
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.timings[name] = round(self.timings.get(name, 0.0) + time.perf_counter() - t0, 4)
            self.peak_rss_mb[name] = _peak_rss_mb()


def _peak_rss_mb() -> int:
    """This process's peak resident set size so far, MB (``ru_maxrss``: KB on Linux)."""
    import resource
    import sys

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024)


def _load_data(spec: DatasetSpec) -> tuple[Dataset, EventsLineage | None]:
    """The data set of the build and, with ``[dataset.events]``, what it took from the log."""
    base = None if spec.source.lower() in ("none", "") else _load_source(spec)
    if spec.events is None:
        if base is None:
            raise ConfigError("[dataset] source = 'none' needs a [dataset.events] log to train on")
        return base, None
    from recstack.events import open_log
    from recstack.events.dataset import dataset_with_events, read_events

    event_log = open_log(spec.events.log)
    if event_log is None:
        raise ConfigError("[dataset.events] log is 'off': give the log's URL")
    try:
        events, upto = read_events(spec.events, event_log)
        ds, stats = dataset_with_events(base, events, spec.events)
        lineage = EventsLineage(
            log_id=event_log.log_id,
            log=event_log.url,
            after=spec.events.after,
            last_offset=upto,
            read=events.height,
            before_ts=spec.events.before_ts,
            **stats,
        )
    finally:
        event_log.close()
    return ds, lineage


def _data_checks(cfg: BuildConfig, dataset: Dataset, root: Path, parent: str | None) -> dict[str, Any] | None:
    """Run the data checks (`recstack.data.checks`) against the parent release's data; raises
    `DataCheckError` on a failure the config does not allow; the manifest's ``data_checks``."""
    if not cfg.checks.enabled:
        return None
    parent_ds = None
    if parent is not None:
        try:
            from recstack.release.loader import load

            parent_ds = load(parent, root, verify=False).dataset
        except Exception as exc:  # an unreadable parent: no shift check, said in the result
            log.warning("parent release %s: cannot read its data (%s): no shift check", parent, exc)
    results = run_checks(
        dataset,
        cfg.checks,
        protocol=cfg.split.protocol if cfg.evaluation.enabled else None,
        seed=cfg.split.seed,
        split_options=(
            {"n_windows": cfg.split.windows, "window_fraction": cfg.split.window_fraction}
            if cfg.split.protocol == "temporal-rolling"
            else None
        ),
        parent=parent_ds,
        parent_id=parent,
    )
    for r in results:
        if r["status"] in ("fail", "allowed", "warn"):
            log.warning("data check %s: %s: %s", r["check"], r["status"], r["message"])
    return check_report(results)


def _load_source(spec: DatasetSpec) -> Dataset:
    src = Path(spec.source)
    if src.is_dir() and (src / "dataset.json").is_file():
        return Dataset.load(src)
    try:
        from recstack.data.loading import load_dataset
    except ImportError:  # the generic loader has not landed: MovieLens only
        from recstack.data.movielens import load_movielens

        return load_movielens(spec.source, format=spec.format)
    return load_dataset(spec.source, format=spec.format)


def _build_features(dataset: Dataset) -> Any:
    from recstack.features.tables import build_features

    return build_features(dataset)


def _fit_model(spec: ModelSpec, dataset: Dataset) -> tuple[Retriever, bool]:
    """``spec``'s model fitted on ``dataset`` -> (model, reused): inside the build's `shared_fits()`
    the model fitted there already with the same config on this dataset object (`recstack.models.shared`)."""
    from recstack.models.shared import fit

    return fit(spec.name, dataset, **spec.params)  # a reuse is logged there


def _available(spec: ModelSpec) -> str | None:
    """None when the model can be created, else why not."""
    from recstack.models.registry import get_class

    try:
        get_class(spec.name)
    except InvalidArgumentError as exc:
        return str(exc)
    return None


def _item_embeddings(model: Retriever) -> npt.NDArray[np.float32] | None:
    """[n_items, dim] float32 item vectors of a model (two-tower item tower, MF item factors)."""
    fn = getattr(model, "item_embeddings", None)
    emb: Any = fn() if callable(fn) else None
    if emb is None:
        emb = getattr(model, "item_factors", None)
    if emb is None:
        return None
    arr = np.ascontiguousarray(np.asarray(emb, dtype=np.float32))
    if arr.ndim != 2 or arr.shape[0] != model.n_items:
        return None
    return arr


def _scalar_metrics(result: dict[str, Any]) -> dict[str, float]:
    out: dict[str, float] = {}
    for k, v in result.items():
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            continue
        if isinstance(v, float) and not math.isfinite(v):
            continue
        out[k] = float(v)
    return out


#: the figures of an ``[evaluation] also`` protocol kept in the table (``"stratified:ndcg@10"``)
_ALSO_KEYS = ("ndcg@10", "recall@10", "precision@10", "map@10", "hr@10", "n_users", "fit_seconds")


def _window_info(i: int, fold: Any) -> dict[str, Any]:
    ts = fold.test.interactions["timestamp"]
    return {
        "window": i,
        "train": fold.train.n_interactions,
        "test": fold.test.n_interactions,
        "start": int(ts.min()),
        "end": int(ts.max()),
        "warm_users": int(fold.warm_test_users.size),
        "cold_users": int(fold.cold_users.size),
    }


def _evaluate_folds(
    spec: ModelSpec, folds: list[Any], protocol: str, cfg: BuildConfig, scorer: BlockScorer | None = None
) -> tuple[dict[str, Any], Retriever, dict[str, list[Any]] | None]:
    """Fit ``spec`` on each fold's train and score it on the fold's test -> (result, the last fold's
    model, per-window per-user figures for paired CIs or None). One fold: `evaluate_retriever`'s dict
    (warm users for ``temporal``); several (``temporal-rolling``): the mean over windows, ``"cold"``,
    ``"windows"`` and ``fit_seconds`` per fold. Users are scored in blocks of ``[evaluation]
    block_users`` by ``scorer`` (threads or Ray, `_scorer`); ``[evaluation] sample_users`` samples the
    (warm) test users of each fold."""
    from recstack.evaluation.protocols import evaluate_retriever, mean_over_windows

    ks = range(1, cfg.evaluation.max_k + 1)
    rolling = protocol == "temporal-rolling"
    warm_res: list[dict[str, Any]] = []
    cold_res: list[dict[str, Any]] = []
    units: dict[str, list[Any]] = {"warm": [], "cold": []}
    secs: list[float] = []
    shared = False
    model: Retriever | None = None
    for fold in folds if spec.evaluate else folds[-1:]:
        t0 = time.perf_counter()
        model, reused = _fit_model(spec, fold.train)
        secs.append(round(time.perf_counter() - t0, 3))
        shared |= reused
        if not spec.evaluate:
            continue
        warm = fold.warm_test_users if protocol in ("temporal", "temporal-rolling") else None
        ev = cfg.evaluation
        res = evaluate_retriever(
            model,
            fold.train,
            fold.test,
            ks,
            ev.exclude_train,
            users=warm,
            per_user=rolling,
            sample_users=ev.sample_users,
            sample_seed=cfg.split.seed,
            batch_size=ev.block_users,
            scorer=scorer,
        )
        if rolling:
            units["warm"].append(res.pop("per_user"))
            cold = evaluate_retriever(
                model,
                fold.train,
                fold.test,
                [10],
                True,
                users=fold.cold_users,
                per_user=True,
                accuracy_ks=(),
                batch_size=ev.block_users,
                scorer=scorer,
            )
            units["cold"].append(cold.pop("per_user"))
            cold_res.append({k: v for k, v in cold.items() if k not in ("curves", "popularity")})
        warm_res.append(res)
    assert model is not None
    if not spec.evaluate:
        return {}, model, None
    if not rolling:
        out = warm_res[0]
        out["fit_seconds"] = secs[0]
        out["params"] = model.params()
        if shared:
            out["shared_fit"] = True
        return out, model, None
    out = mean_over_windows(warm_res)
    out["cold"] = mean_over_windows(cold_res)
    out["windows"] = [
        {"warm": {k: v for k, v in w.items() if k not in ("curves", "popularity")}, "cold": c}
        for w, c in zip(warm_res, cold_res, strict=True)
    ]
    out["curves"] = {
        m: np.mean([w["curves"][m] for w in warm_res], axis=0).tolist() for m in warm_res[0]["curves"]
    }
    out["popularity"] = warm_res[-1]["popularity"]
    out["fit_seconds"] = float(np.mean(secs))
    out["params"] = model.params()
    if shared:  # a fit of another model with the same config on the same data served (`shared_fits`)
        out["shared_fit"] = True
    return out, model, units


def _catalog_popularity(train: Dataset) -> list[float]:
    """Share of the catalog's interactions per popularity bin (the report's long-tail plot)."""
    try:
        from recstack.evaluation.metrics import popularity_bins
    except ImportError:
        return []
    pop_users = np.asarray((train.to_csr("binary") > 0).sum(axis=0)).ravel()
    empty = np.full((0, 10), -1, dtype=np.int64)
    return [float(x) for x in popularity_bins(empty, pop_users, 10)[1]]


def _jsonable(obj: Any) -> Any:
    """NaN / inf -> None and numpy scalars -> Python (the report module's strict-JSON converter)."""
    try:
        from recstack.evaluation.report import to_jsonable
    except ImportError:
        return obj
    return to_jsonable(obj)


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON-serialisable: {type(o).__name__}")


def _make_index(spec: IndexSpec, dim: int) -> tuple[str, Any] | None:
    """(backend, empty index) or None when ``auto`` finds no index implementation."""
    if spec.backend == "none":
        return None
    try:
        from recstack.index import create_index
    except ImportError:
        if spec.backend == "auto":
            return None
        raise
    backends = ["faiss", "exact"] if spec.backend == "auto" else [spec.backend]
    last: Exception | None = None
    for backend in backends:
        try:
            return backend, create_index(backend, dim=dim, metric=spec.metric, **spec.params)
        except (ImportError, InvalidArgumentError) as exc:
            last = exc
    if spec.backend == "auto":
        log.warning("no ANN index backend available: %s", last)
        return None
    assert last is not None
    raise last


def _write_report(path: Path, results: dict[str, Any], title: str) -> None:
    """report.html via `recstack.evaluation.report` when it offers a writer, else a plain table."""
    try:
        report_mod: Any = importlib.import_module("recstack.evaluation.report")
    except ImportError:
        report_mod = None
    writer = getattr(report_mod, "write_html", None) if report_mod is not None else None
    if writer is not None:
        try:
            writer(results, path)
            if path.is_file():
                return
        except Exception as exc:  # a report bug must not lose a release; fall back to the plain table
            log.warning("evaluation report failed (%s); writing a plain table", exc)
    models: dict[str, dict[str, Any]] = results.get("results", {})
    cols = sorted({k for m in models.values() for k, v in m.items() if isinstance(v, (int, float))})
    head = "".join(f"<th>{c}</th>" for c in cols)
    rows = "".join(
        f"<tr><td>{name}</td>"
        + "".join(
            f"<td>{m[c]:.4f}</td>" if isinstance(m.get(c), float) else f"<td>{m.get(c, '')}</td>"
            for c in cols
        )
        + "</tr>"
        for name, m in models.items()
    )
    path.write_text(
        f"<!doctype html><html><head><meta charset='utf-8'><title>{title}</title></head><body>"
        f"<h1>{title}</h1><p>protocol {results.get('protocol')}, seed {results.get('seed')}</p>"
        f"<table border='1'><tr><th>model</th>{head}</tr>{rows}</table></body></html>\n",
        encoding="utf-8",
    )


# ------------------------------------------------------------------------------------------ build
def build(
    config: BuildConfig | None = None,
    releases_dir: str | Path | None = None,
    *,
    on_stage: StageHook | None = None,
    runner: Literal["local", "ray"] = "local",
    address: str | None = None,
    train_workers: int = 2,
    train_min_rows: int = 100_000,
) -> Manifest:
    """Run the offline pipeline and write a new release under ``releases_dir``; returns its manifest.

    ``releases_dir`` defaults to the Settings' releases dir. ``on_stage(name)`` is called when each
    stage of `STAGES` starts (progress reporting, tests that interrupt a build). ``runner``: where the
    evaluation's user blocks are scored: ``local`` threads (``[evaluation] workers``) or ``ray``
    tasks (a local Ray instance, or the cluster at ``address``; each evaluated model is saved under
    the build's temporary directory inside ``releases_dir``, which every node must reach, and loaded
    once per Ray worker). With ``ray``, the torch training loops (two-tower, SASRec, the two-stage
    model's neural rankers) of at least ``train_min_rows`` training examples run on Ray Train with
    ``train_workers`` CPU workers (Torch DDP, gloo; checkpoints beside the temporary directory); the
    other fits run in this process.
    """
    cfg = config if config is not None else BuildConfig.default()
    if releases_dir is None:
        from recstack.config import get_settings

        releases_dir = get_settings().releases_path()
    root = Path(releases_dir)
    root.mkdir(parents=True, exist_ok=True)
    clean_stale_tmp(root)
    registry = Registry(root)
    try:
        parent = registry.channel(cfg.parent_channel).current or registry.latest()
    except ArtifactError:
        parent = registry.latest()

    tmp = root / f"{TMP_PREFIX}{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    tmp.mkdir()
    (tmp / PID_FILE).write_text(str(os.getpid()))
    try:
        with ExitStack() as stack:
            # a model fitted twice with the same config on the same data (a table model and a recall
            # source of the two-stage model) is fitted once (in this process)
            stack.enter_context(shared_fits())
            if runner == "ray":
                from recstack.models.ranking._ray_train import distributed_training

                # beside the build's directory (which becomes the release): checkpoints of the runs
                storage = root / f"{tmp.name}-ray-train"
                storage.mkdir()
                (storage / PID_FILE).write_text(str(os.getpid()))
                stack.enter_context(
                    distributed_training(
                        storage, num_workers=train_workers, address=address, min_rows=train_min_rows
                    )
                )
                stack.callback(shutil.rmtree, storage, True)
            manifest = _run(cfg, root, tmp, parent, _Timer(on_stage), runner, address)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return manifest


def _scorer(runner: str, address: str | None, workers: int, scratch: Path) -> BlockScorer:
    """The evaluation's `recstack.evaluation._blocks.BlockScorer` for ``--runner``."""
    from recstack.evaluation._blocks import RayScorer, ThreadScorer

    if runner == "local":
        return ThreadScorer(workers)
    if runner == "ray":
        return RayScorer(address, num_cpus=workers or None, scratch=scratch)
    raise InvalidArgumentError(f"runner must be local or ray, got {runner!r}")


def _run(
    given: BuildConfig,
    root: Path,
    tmp: Path,
    parent: str | None,
    timer: _Timer,
    runner: str = "local",
    address: str | None = None,
) -> Manifest:
    cfg = given  # `given` with [large] applied once the data's size is known
    skipped: dict[str, str] = {}
    specs: list[ModelSpec] = []
    for spec in cfg.models:
        why = _available(spec)
        if why is None:
            specs.append(spec)
        elif spec.optional:
            skipped[spec.key] = why
        else:
            raise InvalidArgumentError(
                f"model {spec.key!r}: {why}; fix [[models]] or mark it optional = true"
            )
    if not specs:
        raise ConfigError(f"none of the configured models is available: {skipped}")
    headline_model = cfg.headline.model or specs[-1].key
    if headline_model not in {s.key for s in specs}:
        raise ConfigError(
            f"headline model {headline_model!r} is not among the built models {[s.key for s in specs]}"
        )

    # the shape of `recstack.evaluation.run_protocol`'s result, so that its report renders it
    results: dict[str, Any] = {
        "dataset": "",
        "protocol": cfg.split.protocol,
        "seed": cfg.split.seed,
        "tuned": False,
        "results": {},
        "catalog_popularity": [],
    }
    metrics: dict[str, dict[str, float]] = {}
    arts: dict[str, Any] = {
        "retrievers": {},
        "retriever_models": {},
        "rankers": {},
        "user_towers": {},
        "embeddings": {},
    }
    ev = cfg.evaluation

    # `cfg` and `specs` change once the data's size is known ([large]): both read them when called
    def refit(spec: ModelSpec) -> bool:
        e = cfg.evaluation
        return not e.enabled or (e.refit_full if spec.refit is None else spec.refit)

    def n_steps() -> int:
        """One step per stage, except evaluate and fit, which count one step per model."""
        return len(STAGES) - 2 + len(specs) * int(cfg.evaluation.enabled) + sum(refit(s) for s in specs)

    with progress_bar() as prog:
        task = prog.add_task("build", total=n_steps(), status="")

        def step(status: str) -> None:
            prog.update(task, advance=1, status=status)

        # 1. data
        prog.update(task, status="loading data")
        with timer.stage("data"):
            dataset, events_lineage = _load_data(cfg.dataset)
            if dataset.n_interactions == 0:
                raise InvalidArgumentError(f"dataset {cfg.dataset.source!r} has no interactions")
            data_checks = _data_checks(cfg, dataset, root, parent)
        results["dataset"] = dataset.name
        cfg, large = given.at_size(dataset.n_interactions)
        if large is not None:
            # large data ([large]): the overrides replace the specs; skipped models are listed
            results["large"] = large
            for key in large.get("skipped", []):
                skipped[key] = (
                    f"left out of large data ({dataset.n_interactions:,} interactions, at least the "
                    f"{given.large.interactions:,} of the config's large table)"
                )
            specs = [s for s in cfg.models if s.key in {k.key for k in specs}]
            headline_model = given.headline.model or specs[-1].key
            ev = cfg.evaluation
            prog.update(task, total=n_steps())
            log.info("large data (%s interactions): applied %s", f"{dataset.n_interactions:,}", large)
        step(f"data: {dataset.name}")

        # 2. features
        features: Any = None
        with timer.stage("features"):
            if cfg.features.enabled:
                try:
                    features = _build_features(dataset)
                except ImportError as exc:
                    skipped["features"] = f"recstack.features not available: {exc}"
        step("features")

        # 3. evaluate on the holdout
        fitted: dict[str, Retriever] = {}
        with timer.stage("evaluate"), ExitStack() as stack:
            if cfg.evaluation.enabled:
                headline = cfg.split.protocol
                protos = [headline, *[p for p in ev.also if p != headline]]
                folds = {p: cfg.split.folds(dataset, p) for p in protos}
                last = folds[headline][-1]
                results["counts"] = {"train": last.train.n_interactions, "test": last.test.n_interactions}
                results["catalog_popularity"] = _catalog_popularity(last.train)
                scratch = tmp / "eval-scratch"
                scratch.mkdir()
                scorer = _scorer(runner, address, ev.workers, scratch)
                stack.callback(shutil.rmtree, scratch, True)
                stack.callback(scorer.close)
                if headline == "temporal-rolling":
                    results["windows"] = [_window_info(i, f) for i, f in enumerate(folds[headline])]
                units: dict[str, dict[str, list[Any]]] = {"warm": {}, "cold": {}}
                for spec in specs:
                    keep: Retriever | None = None
                    for proto in protos:
                        if spec.protocols is not None and proto not in spec.protocols:
                            continue
                        prog.update(task, status=f"evaluate {spec.key} ({proto})")
                        res, model, unit = _evaluate_folds(spec, folds[proto], proto, cfg, scorer)
                        if proto == headline:
                            keep = model
                            if unit is not None:
                                for group in ("warm", "cold"):
                                    units[group][spec.key] = unit[group]
                        del model
                        if not spec.evaluate:
                            continue
                        if proto == headline:
                            results["results"][spec.key] = {**results["results"].get(spec.key, {}), **res}
                            metrics[spec.key] = {**metrics.get(spec.key, {}), **_scalar_metrics(res)}
                        else:
                            extra = {f"{proto}:{k}": v for k, v in _scalar_metrics(res).items()}
                            extra = {k: v for k, v in extra.items() if k.split(":", 1)[1] in _ALSO_KEYS}
                            results["results"].setdefault(spec.key, {}).update(extra)
                            metrics.setdefault(spec.key, {}).update(extra)
                    if not refit(spec) and keep is not None:
                        fitted[spec.key] = keep
                    del keep
                    step(f"evaluated {spec.key}")
                if units["warm"]:
                    from recstack.evaluation.protocols import compare_models

                    results["comparisons"] = {
                        g: compare_models(units[g], seed=cfg.split.seed) for g in ("warm", "cold")
                    }

        # 4. fit on all data for serving
        with timer.stage("fit"):
            for spec in specs:
                if spec.key in fitted:
                    continue
                prog.update(task, status=f"fit {spec.key}")
                model, _ = _fit_model(spec, dataset)
                fitted[spec.key] = model
                step(f"fitted {spec.key}")
            fitted = {s.key: fitted[s.key] for s in specs}  # config order

        # 5. embeddings + ANN index
        with timer.stage("index"):
            emb_dir = tmp / "embeddings"
            embeddings: dict[str, npt.NDArray[np.float32]] = {}
            for key, model in fitted.items():
                emb = _item_embeddings(model)
                if emb is not None:
                    emb_dir.mkdir(exist_ok=True)
                    np.save(emb_dir / f"{key}.npy", emb, allow_pickle=False)
                    arts["embeddings"][key] = f"embeddings/{key}.npy"
                    embeddings[key] = emb
            source = cfg.index.source
            if source is None and embeddings:
                tt = [s.key for s in specs if s.name == "two_tower" and s.key in embeddings]
                source = tt[0] if tt else next(iter(embeddings))
            if source is not None:
                if source not in embeddings:
                    raise ConfigError(
                        f"[index] source {source!r} has no item embeddings; models with embeddings: "
                        f"{sorted(embeddings)}"
                    )
                arts["primary_embeddings"] = source
                made = _make_index(cfg.index, embeddings[source].shape[1])
                if made is None:
                    if cfg.index.backend != "none":
                        skipped["index"] = "no ANN index backend available"
                else:
                    backend, index = made
                    vecs = embeddings[source]
                    index.add(np.arange(vecs.shape[0], dtype=np.int64), vecs)
                    index.save(tmp / "index")
                    arts["index"] = IndexInfo(
                        backend=backend,
                        path="index",
                        dim=int(vecs.shape[1]),
                        metric=cfg.index.metric,
                        source=source,
                    )
        step("index")

        # 6. write artifacts
        prog.update(task, status="writing")
        with timer.stage("write"):
            dataset.save(tmp / "dataset")
            if features is not None:
                features.save(tmp / "features")
                arts["features"] = "features"
            for key, model in fitted.items():
                d = tmp / "models" / key
                model.save(d)
                arts["retrievers"][key] = f"models/{key}"
                arts["retriever_models"][key] = next(s.name for s in specs if s.key == key)
                if arts["retriever_models"][key].startswith("two_stage"):
                    # the ranker's ONNX export, named by its variant ("deepfm") as serving's model=
                    onnx = [f for f in sorted(d.rglob("*.onnx")) if "sources" not in f.relative_to(d).parts]
                    variant = str(getattr(model.config, "ranker", "") or key)
                    for f in onnx:
                        name = variant if len(onnx) == 1 else f"{variant}:{f.stem}"
                        if name in arts["rankers"]:
                            name = f"{key}:{f.stem}"
                        arts["rankers"][name] = f.relative_to(tmp).as_posix()
                elif callable(getattr(model, "export_onnx", None)):
                    model.export_onnx(d / "user_tower.onnx")  # type: ignore[attr-defined]
                    arts["user_towers"][key] = f"models/{key}/user_tower.onnx"
            results["skipped"] = skipped
            # the cold-start verdict serving reads (recstack.serving.pipeline.cold_start_policy): is a
            # profile alone better than popular on validation users? (cold-users protocol; cheap)
            from recstack.evaluation.cold_users import choose_profile_model

            prog.update(task, status="cold-start profile model (cold-users validation)")
            try:
                cold_start = choose_profile_model(dataset, seed=cfg.split.seed)
            except InvalidArgumentError as exc:  # too few users to hold any out
                cold_start = {"model": "popular", "personal": False, "params": {}, "reason": exc.message}
            results["cold_start"] = cold_start
            (tmp / "cold_start.json").write_text(json.dumps(_jsonable(cold_start), indent=2) + "\n")
            from recstack.models.ranking._ray_train import current as ray_training

            if (training := ray_training()) is not None and training.runs:
                # where the torch models trained (Ray Train runs: seconds, workers, their nodes)
                results["training"] = {"runner": "ray", "runs": training.runs}
            (tmp / "metrics.json").write_text(
                json.dumps(_jsonable(results), indent=2, default=_json_default) + "\n"
            )
            if cfg.evaluation.report:
                _write_report(tmp / "report.html", results, f"recstack release on {dataset.name}")
            else:
                arts["report"] = None
        step("written")

        # 7. hash, manifest, verify, rename
        prog.update(task, status="finalizing")
        t0 = time.perf_counter()
        if timer.hook is not None:
            timer.hook("finalize")
        (tmp / PID_FILE).unlink()
        files = hash_files(tmp)
        created = datetime.now(UTC)
        rid = new_release_id(created, {"config": given.dump_config(), "files": [f.sha256 for f in files]})
        timer.timings["finalize"] = round(time.perf_counter() - t0, 4)
        manifest = Manifest(
            id=rid,
            created_at=created,
            dataset=DatasetInfo(
                name=dataset.name,
                fingerprint=dataset.fingerprint(),
                counts={
                    "users": dataset.n_users,
                    "items": dataset.n_items,
                    "interactions": dataset.n_interactions,
                },
            ),
            config=given.dump_config(),
            package_version=__version__,
            git_commit=git_commit(),
            parent=parent,
            events=events_lineage,
            data_checks=data_checks,
            headline=HeadlineInfo(model=headline_model, metric=cfg.headline.metric),
            metrics=metrics,
            timings=dict(timer.timings),
            peak_rss_mb={**timer.peak_rss_mb, "finalize": _peak_rss_mb()},
            skipped=skipped,
            artifacts=ArtifactsInfo(**arts),
            files=files,
        )
        manifest.write(tmp)
        Manifest.read(tmp).verify(tmp)
        final = root / rid
        if final.exists():
            raise ArtifactError(f"{final}: a release with this id already exists; build again")
        os.rename(tmp, final)
        step(f"release {rid}")
    return manifest
