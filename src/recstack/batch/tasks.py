"""What a batch job computes, one block at a time: the unit of work every runner executes.

A job is a `JobSpec` (plain, picklable data: kind, release, k...). `plan` cuts it into `Block`s and
`compute_block` (run in a worker thread, process or Ray task) returns a block's arrays through the
online pipeline's batched form (`recstack.batch._pipeline.BatchScorer`), built once per process by
`get_scorer`. The driver that writes the results is `recstack.batch.jobs.run_job`; the runners
(`recstack.batch.runners`) only call `compute_block`.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from recstack.batch._pipeline import BatchScorer
from recstack.errors import InvalidArgumentError
from recstack.store.tables import JobKind

if TYPE_CHECKING:
    from recstack.serving._release import ServingRelease

__all__ = [
    "Block",
    "BlockResult",
    "JobSpec",
    "clear_scorers",
    "compute_block",
    "get_scorer",
    "pair_count",
    "plan",
    "register_release",
]

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float32]


@dataclass(frozen=True)
class JobSpec:
    """What to compute. ``release``: id, prefix or channel under ``releases_dir`` (None: the
    Settings' dir). ``top``: the N most popular items (pairs jobs). ``model``: ranker variant or
    ``recall`` (None: the pipeline's default for users; ``recall`` for pairs). ``pipeline``: a
    pipeline TOML (None: the serving default)."""

    kind: JobKind
    release: str = "production"
    releases_dir: str | None = None
    k: int = 100
    top: int = 1000
    model: str | None = None
    pipeline: str | None = None
    block_size: int = 2048

    def __post_init__(self) -> None:
        if self.kind not in ("users", "pairs"):
            raise InvalidArgumentError(f"job kind must be users or pairs, got {self.kind!r}")
        if self.k < 1:
            raise InvalidArgumentError(f"--k must be >= 1, got {self.k}")
        if self.kind == "pairs" and self.top < 2:
            raise InvalidArgumentError(f"--top must be >= 2 for pairs, got {self.top}")
        if self.block_size < 1:
            raise InvalidArgumentError(f"--block-size must be >= 1, got {self.block_size}")

    @property
    def effective_model(self) -> str | None:
        return self.model if self.model is not None or self.kind == "users" else "recall"


@dataclass(frozen=True)
class Block:
    """Rows ``start:stop`` of the job (user indices, or positions in the pair list)."""

    index: int
    start: int
    stop: int

    @property
    def size(self) -> int:
        return self.stop - self.start


@dataclass
class BlockResult:
    """``keys`` [B] or [B, 2] dense indices (user, or item pair a < b by index), ``items`` [B, k]
    item indices (-1 padding), ``scores`` [B, k] float32."""

    block: Block
    keys: IntArray
    items: IntArray
    scores: FloatArray
    seconds: float = 0.0


# ------------------------------------------------------------------------------- scorer cache
_SCORERS: dict[tuple[Any, ...], BatchScorer] = {}
_SCORER_LOCK = threading.Lock()
_MEMORY: dict[str, ServingRelease] = {}


def register_release(release: ServingRelease) -> str:
    """Make an in-memory release usable by local jobs as ``mem:<id>`` (tests, benchmarks)."""
    _MEMORY[release.id] = release
    return f"mem:{release.id}"


def _load_release(spec: JobSpec) -> ServingRelease:
    if spec.release.startswith("mem:"):
        key = spec.release[4:]
        if key not in _MEMORY:
            raise InvalidArgumentError(f"no in-memory release {key!r} registered in this process")
        return _MEMORY[key]
    from recstack.release import load

    rel: ServingRelease = load(spec.release, spec.releases_dir)
    return rel


def get_scorer(spec: JobSpec) -> BatchScorer:
    """The `BatchScorer` of the spec's release + pipeline + model, built once per process: the
    pipeline is exactly the one serving builds (`recstack.serving._state.build_state`)."""
    key = (spec.release, spec.releases_dir, spec.pipeline, spec.effective_model)
    with _SCORER_LOCK:
        sc = _SCORERS.get(key)
        if sc is None:
            from recstack.serving._state import build_state
            from recstack.serving.pipeline import PipelineConfig
            from recstack.serving.settings import ServingSettings

            release = _load_release(spec)
            cfg = PipelineConfig.from_toml(spec.pipeline) if spec.pipeline else PipelineConfig()
            if cfg.k_max < spec.k:  # batch tables may hold more than one online request returns
                cfg = cfg.model_copy(update={"k_max": spec.k})
            settings = ServingSettings(store="embedded", releases_dir=spec.releases_dir)
            state = build_state(release, settings, cfg)
            sc = BatchScorer(state.pipeline, spec.effective_model)
            _SCORERS[key] = sc
    return sc


def clear_scorers() -> None:
    with _SCORER_LOCK:
        _SCORERS.clear()


# ------------------------------------------------------------------------------------- plan
def pair_count(top: int) -> int:
    return top * (top - 1) // 2


def _pairs(scorer: BatchScorer, top: int) -> tuple[IntArray, IntArray]:
    """Every pair of the ``top`` most popular items: (a[P], b[P]) item indices with a < b."""
    items = np.sort(scorer.cat.pop_order[: min(top, scorer.n_items)])
    i, j = np.triu_indices(len(items), 1)
    return items[i].astype(np.int64), items[j].astype(np.int64)


def plan(spec: JobSpec) -> tuple[int, list[Block]]:
    """(total profiles, blocks of at most ``spec.block_size``)."""
    scorer = get_scorer(spec)
    if spec.kind == "users":
        total = scorer.cat.n_users
    else:
        if spec.top > scorer.n_items:
            raise InvalidArgumentError(f"--top {spec.top} is above the item count {scorer.n_items}")
        total = pair_count(spec.top)
    bs = spec.block_size
    blocks = [Block(i, s, min(s + bs, total)) for i, s in enumerate(range(0, total, bs))]
    return total, blocks


_PAIR_CACHE: dict[tuple[int, int], tuple[IntArray, IntArray]] = {}


#: a block is scored in chunks of about this many [rows x items] cells, so that the score matrices
#: of one chunk (float32: 4 MB) stay in cache instead of streaming through memory
CHUNK_CELLS = 1 << 20


def chunk_rows(n_items: int) -> int:
    return max(16, CHUNK_CELLS // max(n_items, 1))


def compute_block(spec: JobSpec, block: Block) -> BlockResult:
    """The top k of one block (runs on a worker; the release is loaded once per process)."""
    t0 = time.perf_counter()
    scorer = get_scorer(spec)
    if spec.kind == "users":
        keys = np.arange(block.start, block.stop, dtype=np.int64)
    else:
        ck = (id(scorer), spec.top)
        if ck not in _PAIR_CACHE:
            _PAIR_CACHE[ck] = _pairs(scorer, spec.top)
        a_all, b_all = _PAIR_CACHE[ck]
        keys = np.stack([a_all[block.start : block.stop], b_all[block.start : block.stop]], axis=1)
    step = chunk_rows(scorer.n_items)
    items_parts: list[IntArray] = []
    score_parts: list[FloatArray] = []
    for s in range(0, len(keys), step):
        part = keys[s : s + step]
        if spec.kind == "users":
            prof = scorer.user_profiles(part)
        else:
            prof = scorer.pair_profiles(part[:, 0], part[:, 1])
        it, sc = scorer.recommend(prof, spec.k)
        items_parts.append(it)
        score_parts.append(sc)
    if items_parts:
        items, scores = np.concatenate(items_parts), np.concatenate(score_parts)
    else:
        items, scores = np.zeros((0, spec.k), np.int64), np.zeros((0, spec.k), np.float32)
    return BlockResult(block, keys, items, scores, time.perf_counter() - t0)
