"""Running a batch job: top k for every known user, or for every pair of the top-N popular items.

`run_job` (on the driver) plans the job's blocks (`recstack.batch.tasks`), has a runner compute them
(`recstack.batch.runners`: local threads or Ray), encodes the rows, writes them into a sink's staging
table as they arrive and publishes the version atomically (`recstack.store.tables`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from recstack.batch._pipeline import BatchScorer
from recstack.batch.runners import LocalRunner, Runner
from recstack.batch.tasks import BlockResult, JobSpec, get_scorer, plan
from recstack.store.tables import Row, Sink, VersionInfo, make_version, open_sink

__all__ = ["JobReport", "RowEncoder", "encode_rows", "run_job"]

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float32]


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
