"""Experiments declared in TOML, and where they are kept (`ExperimentStore`).

An experiment splits the users of a server between **arms**. Each arm serves a release (default: the
one the server serves; or a release id / channel) with a model (a ranker variant of ``model=``, or
``recall``) and pipeline settings (a `recstack.serving.PipelineConfig`, inline or a TOML file). A
share of the users can be kept out as a **holdout** (served the server's default, reported apart).

One TOML file per experiment::

    [experiment]
    name = "ranker-vs-pop"
    salt = "ranker-vs-pop-1"   # assignment is a hash of salt + user id (default: the name)
    holdout = 0.0              # share of users kept out of every arm (served the default)
    window_s = 3600            # a click / rating counts for an impression within this many seconds
    k = 10                     # the hit-rate cut-off of the report

    [[experiment.arms]]
    name = "popular"
    share = 0.5
    model = "recall"
    [experiment.arms.pipeline]     # any PipelineConfig key; unset keys keep the server's pipeline
    sources = [{ name = "popular", kind = "popular", quota = 300 }]

    [[experiment.arms]]
    name = "two_stage"
    share = 0.5                # shares are relative: they are normalised to sum to 1

At most one experiment runs at a time (`ExperimentStore.create` refuses a second one): a user is in
one experiment and one arm, and the report compares arms of one population. Files live in
``experiments/`` beside the releases dir (like ``events/``); ``recstack experiments create|list|
stop`` and ``POST /admin/experiments`` write them, and every server worker picks them up within a
second (`recstack.serving._experiments`).
"""

from __future__ import annotations

import os
import re
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import tomli_w
from pydantic import Field, field_validator, model_validator

from recstack.config import ComponentConfig, load_toml
from recstack.errors import ConfigError, ConflictError, NotFoundError

__all__ = [
    "HOLDOUT_ARM",
    "ArmConfig",
    "ExperimentConfig",
    "ExperimentStore",
    "default_experiments_dir",
]

#: the arm name of users kept out of the experiment (served the server's default)
HOLDOUT_ARM = "holdout"
#: experiment and arm names (the API's path parameter and body schema use the same pattern)
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
_NAME = re.compile(NAME_PATTERN)


def _check_name(v: str, what: str) -> str:
    if not _NAME.match(v):
        raise ValueError(
            f"{what} {v!r}: 1-64 characters of letters, digits, '.', '_' or '-', starting with a "
            "letter or digit"
        )
    return v


class ArmConfig(ComponentConfig):
    """One arm: what its users are served, and its share of the (non-holdout) traffic.

    ``release``: a release id (or unique prefix) or a channel; None = the server's serving release
    (follows its reloads). Another release costs a second loaded release per worker (see the README).
    ``model``: a ranker variant (``model=`` of the API) or ``recall``; None = the pipeline's default.
    ``pipeline``: `PipelineConfig` keys over the server's pipeline (inline table), or a TOML path."""

    name: str
    share: float = Field(default=1.0, gt=0)
    release: str | None = None
    model: str | None = None
    pipeline: dict[str, Any] | str | None = None

    @field_validator("name")
    @classmethod
    def _name_ok(cls, v: str) -> str:
        if v == HOLDOUT_ARM:
            raise ValueError(f"{HOLDOUT_ARM!r} is reserved for the users kept out (holdout = share)")
        return _check_name(v, "arm name")


class ExperimentConfig(ComponentConfig):
    """An experiment (see the module docstring). ``status`` and the timestamps are kept by the store."""

    name: str
    arms: tuple[ArmConfig, ...]
    salt: str | None = None
    holdout: float = Field(default=0.0, ge=0.0, lt=1.0)
    window_s: float = Field(default=3600.0, gt=0)
    k: int = Field(default=10, ge=1, le=100)
    description: str = ""
    status: Literal["running", "stopped"] = "running"
    created_at: str | None = None
    stopped_at: str | None = None

    @field_validator("name")
    @classmethod
    def _name_ok(cls, v: str) -> str:
        return _check_name(v, "experiment name")

    @model_validator(mode="after")
    def _check(self) -> ExperimentConfig:
        names = [a.name for a in self.arms]
        if len(names) < 1:
            raise ValueError("an experiment needs at least one arm")
        if len(set(names)) != len(names):
            raise ValueError(f"arm names must be unique, got {names}")
        return self

    @property
    def salt_value(self) -> str:
        return self.salt if self.salt is not None else self.name

    @property
    def arm_names(self) -> list[str]:
        return [a.name for a in self.arms]

    def shares(self) -> dict[str, float]:
        """Share of all users per arm, holdout included (sums to 1)."""
        total = sum(a.share for a in self.arms)
        out = {a.name: (1.0 - self.holdout) * a.share / total for a in self.arms}
        if self.holdout > 0:
            out[HOLDOUT_ARM] = self.holdout
        return out

    def arm(self, name: str) -> ArmConfig:
        for a in self.arms:
            if a.name == name:
                return a
        raise NotFoundError(
            f"experiment {self.name!r} has no arm {name!r}; arms: {', '.join(self.arm_names)}"
        )

    @classmethod
    def from_toml(cls, path: str | Path) -> ExperimentConfig:
        data = load_toml(path)
        cfg = cls.from_config(data.get("experiment", data))
        return cfg.with_pipeline_files(Path(path).parent)

    def with_pipeline_files(self, base: Path) -> ExperimentConfig:
        """Arms whose ``pipeline`` is a TOML path get its table inline (paths relative to ``base``),
        so that the stored experiment does not depend on a file that may change or vanish."""
        arms = []
        for a in self.arms:
            if isinstance(a.pipeline, str):
                p = Path(a.pipeline)
                p = p if p.is_absolute() else base / p
                data = load_toml(p)
                arms.append(a.model_copy(update={"pipeline": data.get("pipeline", data)}))
            else:
                arms.append(a)
        return self.model_copy(update={"arms": tuple(arms)})

    def check_pipelines(self) -> None:
        """Raise `ConfigError` unless every arm's inline pipeline is valid `PipelineConfig` keys (a
        bad arm is refused when the experiment is created, not found by every worker later)."""
        from recstack.serving.pipeline import PipelineConfig

        for a in self.arms:
            if isinstance(a.pipeline, dict):
                try:
                    PipelineConfig.from_config(a.pipeline)
                except ConfigError as exc:
                    raise ConfigError(f"arm {a.name!r}: {exc.message}") from None

    def to_toml(self) -> str:
        return tomli_w.dumps({"experiment": _drop_none(self.dump_config())})


def _drop_none(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _drop_none(v) for k, v in obj.items() if v is not None}
    if isinstance(obj, list):
        return [_drop_none(v) for v in obj]
    return obj


def default_experiments_dir(releases_dir: Path) -> Path:
    """``experiments/`` beside the releases dir (like the event log's ``events/``)."""
    return Path(releases_dir).resolve().parent / "experiments"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


class ExperimentStore:
    """Experiments as TOML files ``<dir>/<name>.toml`` (written atomically: temp file + rename)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def path(self, name: str) -> Path:
        return self.root / f"{_check_name_arg(name)}.toml"

    def list(self) -> list[ExperimentConfig]:
        """Every experiment, oldest first."""
        if not self.root.is_dir():
            return []
        out = [ExperimentConfig.from_toml(p) for p in sorted(self.root.glob("*.toml"))]
        return sorted(out, key=lambda e: (e.created_at or "", e.name))

    def get(self, name: str) -> ExperimentConfig:
        p = self.path(name)
        if not p.is_file():
            known = ", ".join(e.name for e in self.list()) or "none yet"
            raise NotFoundError(f"no experiment {name!r} (experiments: {known})")
        return ExperimentConfig.from_toml(p)

    def running(self) -> ExperimentConfig | None:
        run = [e for e in self.list() if e.status == "running"]
        return run[-1] if run else None

    def signature(self) -> tuple[tuple[str, int], ...]:
        """(file, mtime_ns) of every experiment file: changes when any is created / edited."""
        if not self.root.is_dir():
            return ()
        return tuple(sorted((p.name, p.stat().st_mtime_ns) for p in self.root.glob("*.toml")))

    def create(self, cfg: ExperimentConfig, *, replace: bool = False) -> ExperimentConfig:
        """Store a new running experiment. Refuses a name that exists (unless ``replace``) and a
        second running experiment (stop the running one first)."""
        cfg.check_pipelines()
        if self.path(cfg.name).is_file() and not replace:
            raise ConflictError(f"experiment {cfg.name!r} exists; pick another name")
        run = self.running()
        if run is not None and run.name != cfg.name:
            raise ConflictError(
                f"experiment {run.name!r} is running; stop it first (recstack experiments stop {run.name})"
            )
        stored = cfg.model_copy(update={"status": "running", "created_at": _now(), "stopped_at": None})
        self._write(stored)
        return stored

    def stop(self, name: str) -> ExperimentConfig:
        cfg = self.get(name)
        if cfg.status == "stopped":
            return cfg
        stopped = cfg.model_copy(update={"status": "stopped", "stopped_at": _now()})
        self._write(stopped)
        return stopped

    def _write(self, cfg: ExperimentConfig) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.root, prefix=".tmp-", suffix=".toml")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(cfg.to_toml())
            os.replace(tmp, self.path(cfg.name))
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        # mtime granularity: make sure a rewrite within the same tick is seen as a change
        now = time.time_ns()
        os.utime(self.path(cfg.name), ns=(now, now))


def _check_name_arg(name: str) -> str:
    try:
        return _check_name(name, "experiment name")
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
