"""The training loop on Ray Train: Torch DDP over CPU workers (gloo), for ``recstack build --runner ray``.

`distributed_training` makes every `recstack.models.ranking.trainer.train` call in its scope (the
two-tower, SASRec and the neural rankers of the two-stage model) run as a
``ray.train.torch.TorchTrainer`` of ``num_workers`` workers instead of in this process:

- the module, the batch generator, the loss and the validation function are shipped to every worker
  (cloudpickled closures, as Ray ships any task's arguments);
- every worker draws the same epoch permutations (same seed) and takes its share ``rank::world`` of
  each batch; DDP averages the gradients, so a step sees the whole batch, as locally;
- rank 0 validates (early stopping, best-state restore, checkpoint averaging) and broadcasts the metric
  so that all ranks stop together; it reports the final weights as a safetensors checkpoint under
  ``storage`` (a directory every node reaches), which is loaded back into the caller's module.

Differences from the local loop (why figures are close, not identical): each rank's loss sees half a
batch (for the two-tower's in-batch softmax: half the negatives per row), dropout masks are drawn per
rank, and DDP sums gradients in a different order.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

if TYPE_CHECKING:
    from recstack.models.ranking.trainer import TrainerConfig, TrainResult

__all__ = ["RayTrainSpec", "current", "ddp_step", "distributed_training", "run"]

log = logging.getLogger(__name__)

_WEIGHTS = "model.safetensors"


@dataclass
class RayTrainSpec:
    """Where `train` runs inside `distributed_training`: ``num_workers`` Ray Train workers of
    ``cpus_per_worker`` CPUs, on the cluster at ``address`` (None: a local Ray instance), checkpoints
    under ``storage``; fits of fewer than ``min_rows`` training rows stay in this process."""

    storage: str
    num_workers: int = 2
    cpus_per_worker: float = 1.0
    address: str | None = None
    min_rows: int = 0
    #: whether `run` started / connected Ray (then the context shuts it down)
    started: bool = False
    #: one entry per run: {"description", "seconds", "workers", "best_epoch", "best_metric",
    #: "worker_nodes" (the Ray node id of each rank)}
    runs: list[dict[str, Any]] = field(default_factory=list)


_ACTIVE: list[RayTrainSpec] = []


def current() -> RayTrainSpec | None:
    """The innermost active `distributed_training` spec, or None (train in this process)."""
    return _ACTIVE[-1] if _ACTIVE else None


@contextmanager
def distributed_training(
    storage: str | Path,
    *,
    num_workers: int = 2,
    cpus_per_worker: float = 1.0,
    address: str | None = None,
    min_rows: int = 0,
) -> Iterator[RayTrainSpec]:
    """Run the `train` calls of this block on Ray Train (see the module docstring). ``storage``:
    an existing directory that every Ray node reaches (the releases dir's temporary build directory
    for ``recstack build``). Ray is connected on the first run and, if this block connected it,
    shut down at the end."""
    if num_workers < 1:
        raise ValueError(f"num_workers must be >= 1, got {num_workers}")
    spec = RayTrainSpec(
        storage=str(Path(storage).resolve()),
        num_workers=num_workers,
        cpus_per_worker=cpus_per_worker,
        address=address,
        min_rows=min_rows,
    )
    _ACTIVE.append(spec)
    try:
        yield spec
    finally:
        _ACTIVE.remove(spec)
        if spec.started:
            import ray

            if ray.is_initialized():
                ray.shutdown()


class _LossModule(nn.Module):
    """``forward(batch) = loss_fn(batch)``: what DDP wraps, so that the loss's parameters (those of
    ``module``, which ``loss_fn`` closes over) are the ones DDP synchronises."""

    def __init__(self, module: nn.Module, loss_fn: Callable[[Any], torch.Tensor]) -> None:
        super().__init__()
        self.module = module
        self._loss = loss_fn

    def forward(self, batch: Any) -> torch.Tensor:
        return self._loss(batch)


def _shard(batch: Any, rank: int, world: int) -> Any:
    """This rank's rows ``rank::world`` (dim 0) of every tensor / array in ``batch`` (nested tuples and
    lists); a batch of fewer rows than ranks is taken whole by every rank."""
    if isinstance(batch, torch.Tensor | np.ndarray):
        return batch if len(batch) < world else batch[rank::world]
    if isinstance(batch, tuple | list):
        return type(batch)(_shard(b, rank, world) for b in batch)
    return batch


def ddp_step(
    module: nn.Module,
    loss_fn: Callable[[Any], torch.Tensor],
    validate: Callable[[], float] | None,
    seed: int,
) -> tuple[Callable[[Any], torch.Tensor], Callable[[], float] | None]:
    """For a member of an initialised torch process group: the loss of this rank's share of a batch
    through DDP, and a validation that rank 0 computes and broadcasts (None without ``validate``)."""
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    rank, world = dist.get_rank(), dist.get_world_size()
    torch.manual_seed(seed + 1_000_003 * rank)  # dropout masks differ between ranks
    ddp = DistributedDataParallel(_LossModule(module, loss_fn), find_unused_parameters=True)

    def step(batch: Any) -> torch.Tensor:
        out: torch.Tensor = ddp(_shard(batch, rank, world))
        return out

    if validate is None:
        return step, None
    check = validate

    def measure() -> float:
        value = torch.tensor([float(check()) if rank == 0 else 0.0], dtype=torch.float64)
        dist.broadcast(value, src=0)
        return float(value.item())

    return step, measure


def _worker_loop(config: dict[str, Any]) -> None:
    """Ray Train's per-worker function: the ordinary loop (which sees the process group), then rank 0
    reports the weights as a checkpoint; every rank reports (a collective in Ray Train)."""
    import ray
    import ray.train
    import torch.distributed as dist

    from recstack.models.ranking.trainer import train

    module, batches, loss_fn, tc, validate, description, n_batches = config["job"]
    res = train(module, batches, loss_fn, tc, validate=validate, description=description, n_batches=n_batches)
    nodes: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(nodes, ray.get_runtime_context().get_node_id())
    metrics = {
        "best_epoch": res.best_epoch,
        "best_metric": res.best_metric,
        "seconds": res.seconds,
        "history": json.dumps(res.history),
        "nodes": json.dumps(nodes),
    }
    if ray.train.get_context().get_world_rank() != 0:
        ray.train.report(metrics)
        return
    with tempfile.TemporaryDirectory(prefix="recstack-ckpt-") as d:
        state = {k: v.detach().contiguous().clone() for k, v in module.state_dict().items()}
        save_file(state, str(Path(d) / _WEIGHTS))
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(d))


def run(
    spec: RayTrainSpec,
    module: nn.Module,
    batches: Callable[[int, np.random.Generator], Iterable[Any]],
    loss_fn: Callable[[Any], torch.Tensor],
    config: TrainerConfig,
    validate: Callable[[], float] | None,
    description: str,
    n_batches: int | None,
) -> TrainResult:
    """`train` as a Ray Train TorchTrainer run; the best weights are loaded into ``module``."""
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    from recstack.batch.runners import ray_init
    from recstack.models.ranking.trainer import TrainResult

    t0 = time.perf_counter()
    if ray_init(spec.address, None):
        spec.started = True
    name = f"recstack-{description}-{uuid.uuid4().hex[:8]}"
    log.info("%s: Ray Train, %d workers (Torch DDP, gloo)", description, spec.num_workers)
    trainer = TorchTrainer(
        _worker_loop,
        train_loop_config={"job": (module, batches, loss_fn, config, validate, description, n_batches)},
        torch_config=TorchConfig(backend="gloo"),
        scaling_config=ScalingConfig(
            num_workers=spec.num_workers, use_gpu=False, resources_per_worker={"CPU": spec.cpus_per_worker}
        ),
        run_config=RunConfig(name=name, storage_path=spec.storage),
    )
    try:
        result = trainer.fit()
        if result.checkpoint is None:
            raise RuntimeError(f"{description}: Ray Train returned no checkpoint")
        with result.checkpoint.as_directory() as d:
            state = load_file(str(Path(d) / _WEIGHTS))
    finally:
        shutil.rmtree(Path(spec.storage) / name, ignore_errors=True)
    module.load_state_dict(state)
    module.eval()
    m = result.metrics or {}
    out = TrainResult(
        int(m["best_epoch"]), float(m["best_metric"]), time.perf_counter() - t0, json.loads(m["history"])
    )
    spec.runs.append(
        {
            "description": description,
            "seconds": out.seconds,
            "workers": spec.num_workers,
            "best_epoch": out.best_epoch,
            "best_metric": out.best_metric,
            "worker_nodes": json.loads(m["nodes"]),
        }
    )
    return out
