"""Batch jobs: top k for every known user, or for every pair of the top-N popular items.

A job is a `JobSpec` (plain, picklable data: kind, release, k...). The same three functions run it on
any runner: `plan` cuts the work into blocks, `compute_block` (run in a worker thread, process or Ray
task) returns the block's arrays through the online pipeline's batched form
(`recstack.batch._pipeline.BatchScorer`), and `run_job` (on the driver) encodes the rows, writes them
into the sink's staging table and publishes the version atomically.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from recstack.batch._pipeline import BatchScorer
from recstack.batch.sinks import JobKind, Row, Sink, VersionInfo, make_version, open_sink
from recstack.errors import InvalidArgumentError

if TYPE_CHECKING:
    from recstack.batch.runners import Runner
    from recstack.serving._release import ServingRelease

__all__ = [
    "Block",
    "BlockResult",
    "JobReport",
    "JobSpec",
    "compute_block",
    "encode_rows",
    "get_scorer",
    "plan",
    "register_release",
    "run_job",
]

log = logging.getLogger(__name__)

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


# ------------------------------------------------------------------------------------ encode
class RowEncoder:
    """Turns `BlockResult` arrays into sink rows: external ids, JSON arrays of ids and scores.

    Blocks without padding and with integer external item ids are encoded with one ``orjson`` call
    per block for the ids and one for the scores (split into rows), the same text as row by row."""

    def __init__(self, scorer: BatchScorer, release_id: str) -> None:
        import orjson

        self._dumps = orjson.dumps
        ids = scorer.cat.item_ids
        self.item_key = [str(x) for x in ids]
        self.item_json = [orjson.dumps(x).decode() for x in ids]
        self.user_key = [str(x) for x in scorer.cat.dataset.user_vocab.ids.to_list()]
        self.release_id = release_id
        ints = all(isinstance(x, int | np.integer) and not isinstance(x, bool) for x in ids)
        self._ext: IntArray | None = np.asarray(ids, dtype=np.int64) if ints and len(ids) else None
        self._item_key_arr = np.asarray(self.item_key, dtype=str)

    def _json_rows(self, arr: npt.NDArray[Any]) -> list[str]:
        """One JSON array per row of a 2-D numeric array (orjson's formatting, NaN as null)."""
        text = self._dumps(arr, option=_NUMPY).decode()
        if arr.shape[0] == 0:
            return []
        if arr.shape[1] == 0:
            return ["[]"] * arr.shape[0]
        parts = text[2:-2].split("],[")
        return ["[" + x + "]" for x in parts]

    def _keys(self, kind: str, res: BlockResult) -> list[tuple[str, ...]]:
        if kind == "users":
            return [(self.user_key[u],) for u in res.keys.tolist()]
        ka = self._item_key_arr[res.keys[:, 0]]
        kb = self._item_key_arr[res.keys[:, 1]]
        swap = ka > kb
        lo = np.where(swap, kb, ka).tolist()
        hi = np.where(swap, ka, kb).tolist()
        return list(zip(lo, hi, strict=True))

    def rows(self, kind: str, res: BlockResult) -> list[Row]:
        keys = self._keys(kind, res)
        rid = self.release_id
        if self._ext is not None and bool((res.items >= 0).all()):
            items = self._json_rows(self._ext[res.items])
            scores = self._json_rows(np.ascontiguousarray(res.scores, dtype=np.float32))
            return [(*key, rid, it, sc) for key, it, sc in zip(keys, items, scores, strict=True)]
        ij, dumps = self.item_json, self._dumps
        out: list[Row] = []
        for r, (key, row) in enumerate(zip(keys, res.items.tolist(), strict=True)):
            sc = res.scores[r]
            n = sum(1 for x in row if x >= 0)
            row, sc = row[:n], sc[:n]
            items_json = "[" + ",".join([ij[i] for i in row]) + "]"
            out.append((*key, rid, items_json, dumps(sc, option=_NUMPY).decode()))
        return out


_NUMPY = 0
try:  # pragma: no branch
    import orjson as _orjson

    _NUMPY = _orjson.OPT_SERIALIZE_NUMPY
except ImportError:  # pragma: no cover
    pass


def encode_rows(scorer: BatchScorer, release_id: str, kind: str, res: BlockResult) -> list[Row]:
    return RowEncoder(scorer, release_id).rows(kind, res)


# --------------------------------------------------------------------------------------- run
@dataclass
class JobReport:
    kind: str
    release_id: str
    version: str
    sink: str
    runner: str
    profiles: int
    rows: int
    k: int
    model: str
    seconds: float
    compute_seconds: float
    write_seconds: float
    dropped: list[str] = field(default_factory=list)
    published: VersionInfo | None = None

    @property
    def profiles_per_second(self) -> float:
        return self.profiles / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "release_id": self.release_id,
            "version": self.version,
            "sink": self.sink,
            "runner": self.runner,
            "profiles": self.profiles,
            "rows": self.rows,
            "k": self.k,
            "model": self.model,
            "seconds": round(self.seconds, 3),
            "compute_seconds": round(self.compute_seconds, 3),
            "write_seconds": round(self.write_seconds, 3),
            "profiles_per_second": round(self.profiles_per_second, 1),
            "table": self.published.table if self.published else None,
            "dropped": self.dropped,
        }


def run_job(
    spec: JobSpec,
    sink: Sink | str | None = None,
    runner: Runner | None = None,
    *,
    keep: int | None = None,
    on_block: Callable[[BlockResult], None] | None = None,
    block_delay: float = 0.0,
) -> JobReport:
    """Compute every block on ``runner`` (default: local threads), write the rows into ``sink``'s
    staging table as blocks arrive, publish the version (count check + rename + pointer flip in one
    transaction), then drop versions beyond the ``keep`` newest. ``block_delay`` (seconds, tests and
    demos only) sleeps after each written block."""
    from recstack._progress import progress_bar
    from recstack.batch.runners import LocalRunner

    t0 = time.perf_counter()
    runner = runner or LocalRunner()
    own_sink = not isinstance(sink, Sink)
    snk = open_sink(sink) if not isinstance(sink, Sink) else sink
    scorer = get_scorer(spec)
    release_id = scorer.pipeline.release.id
    total, blocks = plan(spec)
    version = make_version(release_id, datetime.now(UTC))
    encoder = RowEncoder(scorer, release_id)
    write_s = 0.0
    compute_s = 0.0
    try:
        snk.begin(spec.kind, version)
        written = 0
        with progress_bar() as prog:
            task = prog.add_task(f"batch {spec.kind} [{runner.name}]", total=total, status="")
            results: Iterator[BlockResult] = runner.map(spec, blocks)
            for res in results:
                compute_s += res.seconds
                tw = time.perf_counter()
                rows = encoder.rows(spec.kind, res)
                snk.write(rows)
                written += len(rows)
                write_s += time.perf_counter() - tw
                if on_block is not None:
                    on_block(res)
                prog.update(task, advance=res.block.size, status=f"{written:,} rows")
                if block_delay > 0:
                    time.sleep(block_delay)
        tw = time.perf_counter()
        info = snk.publish(version, release_id, spec.k, total)
        dropped = snk.prune(spec.kind, keep) if keep is not None else []
        write_s += time.perf_counter() - tw
    except BaseException:
        snk.abort()
        raise
    finally:
        if own_sink:
            snk.close()
    return JobReport(
        kind=spec.kind,
        release_id=release_id,
        version=version,
        sink=snk.url,
        runner=runner.name,
        profiles=total,
        rows=info.rows,
        k=spec.k,
        model=scorer.model,
        seconds=time.perf_counter() - t0,
        compute_seconds=compute_s,
        write_seconds=write_s,
        dropped=dropped,
        published=info,
    )


def default_sink_path() -> Path:
    return Path("recstack_batch.db")
