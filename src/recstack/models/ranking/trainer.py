"""The one PyTorch training loop of recstack.

Seeded and deterministic on CPU (``torch.manual_seed``, ``torch.use_deterministic_algorithms``, a fixed
number of threads), early stopping on a validation metric (higher is better) with best-checkpoint
restore, a rich progress bar with live metrics. Modules are saved as safetensors + a JSON config.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import BaseModel, Field
from safetensors.torch import load_file, save_file

from recstack._progress import progress_bar
from recstack.config import ComponentConfig
from recstack.errors import ArtifactError

__all__ = [
    "TrainResult",
    "TrainerConfig",
    "load_module",
    "save_module",
    "seed_everything",
    "train",
    "train_model",
]

log = logging.getLogger(__name__)


class TrainerConfig(ComponentConfig):
    """Hyperparameters of the loop. ``patience`` epochs without a validation improvement larger than
    ``min_delta`` stop training; ``num_threads`` is passed to ``torch.set_num_threads``. ``lr_schedule``:
    ``constant`` or ``cosine`` (per step, from ``lr`` to 0 over ``epochs``). ``average_top`` > 1 (with a
    validation): the weights of the best ``average_top`` epochs by the metric are averaged at the end and
    the average is kept when its metric is at least the best epoch's (a "soup" of one run's checkpoints).
    """

    epochs: int = 20
    batch_size: int = 1024
    lr: float = 1e-3
    weight_decay: float = 0.0
    patience: int = 3
    min_delta: float = 1e-4
    seed: int = 42
    num_threads: int = 2
    deterministic: bool = True
    lr_schedule: Literal["constant", "cosine"] = "constant"
    average_top: int = Field(default=1, ge=1)

    @classmethod
    def from_model(cls, config: BaseModel) -> TrainerConfig:
        """The loop's settings out of a model's hyperparameters: every field of this class that
        ``config`` also has (``epochs``, ``lr``, ``seed``, ...); the others keep their defaults."""
        values = {k: getattr(config, k) for k in cls.model_fields if hasattr(config, k)}
        return cls(**values)


@dataclass
class TrainResult:
    """What the loop did: best epoch (1-based; 0 = no validation), its metric, per-epoch history."""

    best_epoch: int
    best_metric: float
    seconds: float
    history: list[dict[str, float]] = field(default_factory=list)


def seed_everything(seed: int, num_threads: int = 2, deterministic: bool = True) -> np.random.Generator:
    """Seed torch and return a numpy Generator for the same seed; fix threads and determinism."""
    torch.manual_seed(seed)
    torch.set_num_threads(max(1, num_threads))
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
    return np.random.default_rng(seed)


def train(
    module: torch.nn.Module,
    batches: Callable[[int, np.random.Generator], Iterable[Any]],
    loss_fn: Callable[[Any], torch.Tensor],
    config: TrainerConfig,
    *,
    validate: Callable[[], float] | None = None,
    description: str = "training",
    n_batches: int | None = None,
) -> TrainResult:
    """Train ``module`` with Adam(W).

    ``batches(epoch, rng)`` yields the batches of one epoch (shuffled with ``rng``); ``loss_fn(batch)``
    returns a scalar loss; ``validate()`` returns a metric (higher is better) computed with the module in
    eval mode. The best state (by validation) is restored at the end.

    Inside a `distributed_training` context (``recstack build --runner ray``) the loop runs on Ray
    Train instead (`recstack.models.ranking._ray_train`): Torch DDP over CPU workers, each taking its
    share of every batch; the trained weights come back into ``module``. When this process is itself
    a member of a torch process group (a Ray Train worker), each rank computes the loss of its share
    of the batch through DDP (gradients averaged over ranks); rank 0 validates and tells the others.
    """
    from recstack.models.ranking import _ray_train

    dist_on = torch.distributed.is_available() and torch.distributed.is_initialized()
    spec = _ray_train.current()
    if not dist_on and spec is not None and (n_batches or 0) * config.batch_size >= spec.min_rows:
        return _ray_train.run(spec, module, batches, loss_fn, config, validate, description, n_batches)
    t0 = time.perf_counter()
    rng = seed_everything(config.seed, config.num_threads, config.deterministic)
    opt = torch.optim.AdamW(module.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    step_loss: Callable[[Any], torch.Tensor] = loss_fn
    measure: Callable[[], float] | None = validate
    if dist_on:
        step_loss, measure = _ray_train.ddp_step(module, loss_fn, validate, config.seed)
    sched: torch.optim.lr_scheduler.LRScheduler | None = None
    if config.lr_schedule == "cosine":
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=config.epochs * max(n_batches or 1, 1))
    best_state: dict[str, torch.Tensor] | None = None
    #: (metric, epoch, state) of the best ``average_top`` epochs so far
    top: list[tuple[float, int, dict[str, torch.Tensor]]] = []
    best, best_epoch, bad = -math.inf, 0, 0
    history: list[dict[str, float]] = []
    with progress_bar() as prog:
        task = prog.add_task(description, total=config.epochs * (n_batches or 1), status="")
        for epoch in range(1, config.epochs + 1):
            module.train()
            total, count = 0.0, 0
            for batch in batches(epoch, rng):
                opt.zero_grad(set_to_none=True)
                loss = step_loss(batch)
                loss.backward()  # type: ignore[no-untyped-call]
                opt.step()
                if sched is not None:
                    sched.step()
                total += float(loss.detach())
                count += 1
                if n_batches:
                    prog.update(task, advance=1, status=f"epoch {epoch} loss {total / count:.4f}")
            if not n_batches:
                prog.update(task, advance=1)
            row = {"epoch": float(epoch), "loss": total / max(count, 1)}
            if measure is not None:
                module.eval()
                with torch.no_grad():
                    metric = float(measure())
                row["val"] = metric
                if config.average_top > 1:
                    top.append((metric, epoch, copy.deepcopy(module.state_dict())))
                    top = sorted(top, key=lambda t: (-t[0], t[1]))[: config.average_top]
                if metric > best + config.min_delta:
                    best, best_epoch, bad = metric, epoch, 0
                    best_state = copy.deepcopy(module.state_dict())
                else:
                    bad += 1
            history.append(row)
            status = f"epoch {epoch} loss {row['loss']:.4f}" + (
                f" val {row['val']:.4f} (best {best:.4f}@{best_epoch})" if "val" in row else ""
            )
            prog.update(task, status=status)
            log.debug("%s: %s", description, status)
            if measure is not None and bad >= config.patience:
                break
    if best_state is not None:
        module.load_state_dict(best_state)
    module.eval()
    if measure is not None and len(top) > 1:
        # the mean of the best epochs' weights (buffers too: they are the same in every epoch here)
        soup = {
            k: torch.stack([t[2][k].to(torch.float64) for t in top]).mean(dim=0).to(v.dtype)
            if v.is_floating_point()
            else v
            for k, v in top[0][2].items()
        }
        module.load_state_dict(soup)
        module.eval()
        with torch.no_grad():
            soup_metric = float(measure())
        history.append({"epoch": 0.0, "loss": math.nan, "val": soup_metric, "averaged": float(len(top))})
        log.debug(
            "%s: average of the best %d epochs: val %.4f (best %.4f)",
            description,
            len(top),
            soup_metric,
            best,
        )
        if soup_metric >= best:
            best = soup_metric
        elif best_state is not None:
            module.load_state_dict(best_state)
        module.eval()
    if measure is None:
        best = history[-1]["loss"] if history else math.nan
    return TrainResult(best_epoch, best, time.perf_counter() - t0, history)


def train_model(
    module: torch.nn.Module,
    batches: Callable[[int, np.random.Generator], Iterable[Any]],
    loss_fn: Callable[[Any], torch.Tensor],
    config: BaseModel,
    *,
    n_rows: int,
    validate: Callable[[], float] | None = None,
    description: str = "training",
) -> TrainResult:
    """`train` with the loop's settings taken from a model's hyperparameters ``config``
    (`TrainerConfig.from_model`) and ``n_rows`` training rows (progress: one step per batch)."""
    tc = TrainerConfig.from_model(config)
    return train(
        module,
        batches,
        loss_fn,
        tc,
        validate=validate,
        description=description,
        n_batches=(n_rows + tc.batch_size - 1) // tc.batch_size,
    )


def save_module(module: torch.nn.Module, path: str | Path, config: dict[str, Any]) -> Path:
    """Write ``<path>.safetensors`` (weights) and ``<path>.json`` (``config``); returns the stem."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().clone() for k, v in module.state_dict().items()}
    save_file(state, str(p.with_suffix(".safetensors")))
    p.with_suffix(".json").write_text(json.dumps(config, indent=2))
    return p


def load_module(
    path: str | Path, factory: Callable[[dict[str, Any]], torch.nn.Module]
) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Rebuild a module with ``factory(config)`` and load the weights written by `save_module`."""
    p = Path(path)
    try:
        config = json.loads(p.with_suffix(".json").read_text())
        state = load_file(str(p.with_suffix(".safetensors")))
    except (OSError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"{p}: cannot read module (.json + .safetensors): {exc}") from exc
    module = factory(config)
    module.load_state_dict(state)
    module.eval()
    return module, config
