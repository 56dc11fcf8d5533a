"""Batch precomputation figures (issue 7) -> benchmarks/results/batch.json.

1. All ML-100K users, top 100: profiles/s with the local runner (threads) and the Ray runner
   (local Ray, 2 CPUs), written to SQLite.
2. A synthetic set of 1M users (``--synth-users``, ``--synth-items`` items, 20 interactions per user):
   top 100 for every user into SQLite (published tables) with the local runner and with the Ray
   runner (every Ray worker loads the 1M-user release itself, included in its wall time);
   ``--ray-users N`` runs only the first N users on Ray (a stated fraction, staging table dropped).
3. All 499,500 pairs of the top-1000 ML-100K items (top 10 each) into SQLite and into PostgreSQL
   (``--postgres``, skipped when it does not answer): wall time and rows.

Releases are built with `recstack.release.build` (pop, itemknn, ease; no evaluation, no index) into a
temp dir. The serving pipeline is the default `PipelineConfig` (itemknn + ease + popular recall,
genre cap 3, no ranker in these releases), so users get the merged recall score. Every row records
``os.getloadavg()`` before and after: the machine is shared, figures taken while others work are
"under load". Usage: ``python benchmarks/bench_batch.py [--quick] [--no-ray]``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

OUT = Path(__file__).resolve().parent / "results" / "batch.json"


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def _build(source: str, root: Path) -> str:
    from recstack.release.build import BuildConfig, build

    cfg = BuildConfig.from_config(
        {
            "dataset": {"source": source},
            "evaluation": {"enabled": False},
            "features": {"enabled": False},
            "models": [{"name": "pop"}, {"name": "itemknn"}, {"name": "ease"}],
            "index": {"backend": "none"},
        }
    )
    return build(cfg, root).id


def _job(label: str, spec: Any, sink: str, runner: Any, **kw: Any) -> dict[str, Any]:
    from recstack.batch import run_job

    before = _load()
    rep = run_job(spec, sink, runner, **kw)
    return {"job": label, **rep.as_dict(), "loadavg_before": before, "loadavg_after": _load()}


def _partial(label: str, spec: Any, sink_url: str, runner: Any, n_profiles: int) -> dict[str, Any]:
    """The first ``n_profiles`` of a job on ``runner``, rows encoded and written into a staging
    table (dropped at the end: a fraction is never published)."""
    from recstack.batch import get_scorer, open_sink, plan
    from recstack.batch.jobs import RowEncoder
    from recstack.store.tables import make_version

    scorer = get_scorer(spec)
    _, blocks = plan(spec)
    blocks = [b for b in blocks if b.start < n_profiles]
    n = sum(b.size for b in blocks)
    enc = RowEncoder(scorer, scorer.pipeline.release.id)
    snk = open_sink(sink_url)
    before = _load()
    t0 = time.perf_counter()
    compute = 0.0
    rows = 0
    try:
        snk.begin(spec.kind, make_version(scorer.pipeline.release.id))
        for res in runner.map(spec, blocks):
            compute += res.seconds
            r = enc.rows(spec.kind, res)
            snk.write(r)
            rows += len(r)
        secs = time.perf_counter() - t0
    finally:
        snk.abort()
        snk.close()
    return {
        "job": label,
        "kind": spec.kind,
        "runner": runner.name,
        "profiles": n,
        "rows": rows,
        "k": spec.k,
        "seconds": round(secs, 3),
        "compute_seconds": round(compute, 3),
        "profiles_per_second": round(n / secs, 1),
        "fraction": f"first {n:,} users of the job (staging table, not published)",
        "loadavg_before": before,
        "loadavg_after": _load(),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="50,000 synthetic users and 200 top items")
    ap.add_argument("--synth-users", type=int, default=1_000_000)
    ap.add_argument("--synth-items", type=int, default=2000)
    ap.add_argument("--ray-users", type=int, default=None, help="only this many synthetic users on Ray")
    ap.add_argument("--top", type=int, default=1000)
    ap.add_argument(
        "--postgres",
        default=os.environ.get("RECSTACK_TEST_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/test"),
    )
    ap.add_argument("--no-ray", action="store_true")
    args = ap.parse_args()
    if args.quick:
        args.synth_users, args.top = 50_000, 200

    from recstack.batch import JobSpec, LocalRunner, RayRunner, get_scorer
    from recstack.batch.tasks import clear_scorers

    tmp = Path(tempfile.mkdtemp(prefix="bench-batch-"))
    root = tmp / "releases"
    results: dict[str, Any] = {"cpus": os.cpu_count(), "loadavg_start": _load(), "rows": []}
    rows: list[dict[str, Any]] = results["rows"]
    t_all = time.perf_counter()

    t0 = time.perf_counter()
    rid = _build("ml-100k", root)
    results["ml100k_release_build_seconds"] = round(time.perf_counter() - t0, 1)
    ray_runner = None if args.no_ray else RayRunner(num_cpus=2)
    try:
        # 1. ML-100K users, top 100
        spec = JobSpec(kind="users", release=rid, releases_dir=str(root), k=100, block_size=256)
        for name, runner in [("local", LocalRunner()), ("ray", ray_runner)]:
            if runner is not None:
                rows.append(
                    _job("ml-100k users top-100 -> sqlite", spec, f"sqlite:///{tmp / f'u-{name}.db'}", runner)
                )

        # 3. pairs of the top-N items into SQLite and PostgreSQL
        pspec = JobSpec(
            kind="pairs", release=rid, releases_dir=str(root), k=10, top=args.top, block_size=4096
        )
        rows.append(
            _job(f"pairs top-{args.top} -> sqlite", pspec, f"sqlite:///{tmp / 'pairs.db'}", LocalRunner())
        )
        try:
            rows.append(
                _job(f"pairs top-{args.top} -> postgresql", pspec, args.postgres, LocalRunner(), keep=1)
            )
        except Exception as exc:
            rows.append({"job": f"pairs top-{args.top} -> postgresql", "error": str(exc)})
        clear_scorers()

        # 2. synthetic 1M users
        from recstack.data.synthetic import synthesize

        t0 = time.perf_counter()
        ds = synthesize(args.synth_users, args.synth_items, 20 * args.synth_users, seed=1)
        data = ds.save(tmp / "synth")
        del ds
        srid = _build(str(data), root)
        results["synthetic_build_seconds"] = round(time.perf_counter() - t0, 1)
        sspec = JobSpec(kind="users", release=srid, releases_dir=str(root), k=100, block_size=2048)
        t0 = time.perf_counter()
        get_scorer(sspec)  # load + serving state, once per process (every Ray worker does the same)
        results["synthetic_release_load_seconds"] = round(time.perf_counter() - t0, 1)
        label = f"synthetic {args.synth_users:,} users x {args.synth_items} items, top-100 -> sqlite"
        rows.append(_job(label, sspec, f"sqlite:///{tmp / 'synth-local.db'}", LocalRunner()))
        if ray_runner is not None:
            note = "wall time includes every Ray worker loading the release (synthetic_release_load_seconds)"
            url = f"sqlite:///{tmp / 'synth-ray.db'}"
            if args.ray_users is not None and args.ray_users < args.synth_users:
                rows.append({**_partial(label, sspec, url, ray_runner, args.ray_users), "note": note})
            else:
                rows.append({**_job(label, sspec, url, ray_runner), "note": note})
        clear_scorers()
    finally:
        if ray_runner is not None:
            ray_runner.close()
        shutil.rmtree(tmp, ignore_errors=True)

    results["loadavg_end"] = _load()
    results["total_seconds"] = round(time.perf_counter() - t_all, 1)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(results, indent=2))
    table = Table(title=f"batch precomputation ({results['cpus']} CPUs)")
    for col in ("job", "runner", "profiles", "rows", "seconds", "profiles/s", "load before"):
        table.add_column(col, justify="left" if col == "job" else "right")
    for r in rows:
        table.add_row(
            r["job"],
            str(r.get("runner", "-")),
            f"{r.get('profiles', 0):,}",
            f"{r.get('rows', 0):,}" if "rows" in r else "-",
            str(r.get("seconds", r.get("error", "-"))),
            f"{r.get('profiles_per_second', 0):,.0f}",
            str(r.get("loadavg_before", "-")),
        )
    Console().print(table)
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
