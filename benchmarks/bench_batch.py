"""Batch precomputation figures (issue 7) -> benchmarks/results/batch.json.

1. All ML-100K users, top 100: profiles/s with the local runner (threads) and the Ray runner
   (local Ray, 2 CPUs), written to SQLite.
2. A synthetic set of 1M users (``--synth-users``, 2,000 items, ~20 interactions/user): profiles/s of
   the compute (no sink) over ``--synth-profiles`` users, local vs Ray.
3. All 499,500 pairs of the top-1000 ML-100K items (top 10 each) into SQLite and into PostgreSQL
   (``--postgres``, skipped when it does not answer): wall time and rows.

Releases are built with `recstack.release.build` (pop, itemknn, ease; no evaluation, no index) into a
temp dir. The serving pipeline is the default `PipelineConfig` (itemknn + ease + popular recall,
genre cap 3, no ranker in these releases). Usage: ``python benchmarks/bench_batch.py [--quick]``.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

OUT = Path(__file__).resolve().parent / "results" / "batch.json"


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


def _compute_only(spec: Any, runner: Any, n_profiles: int) -> dict[str, Any]:
    from recstack.batch import plan

    _, blocks = plan(spec)
    blocks = [b for b in blocks if b.start < n_profiles]
    t0 = time.perf_counter()
    n = sum(r.block.size for r in runner.map(spec, blocks))
    secs = time.perf_counter() - t0
    return {"profiles": n, "seconds": round(secs, 2), "profiles_per_second": round(n / secs, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small synthetic set and 200 top items")
    ap.add_argument("--synth-users", type=int, default=1_000_000)
    ap.add_argument("--synth-profiles", type=int, default=100_000, help="users timed of the synthetic set")
    ap.add_argument("--top", type=int, default=1000)
    ap.add_argument(
        "--postgres",
        default=os.environ.get("RECSTACK_TEST_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/test"),
    )
    ap.add_argument("--no-ray", action="store_true")
    args = ap.parse_args()
    if args.quick:
        args.synth_users, args.synth_profiles, args.top = 50_000, 20_000, 200

    from recstack.batch import JobSpec, LocalRunner, RayRunner, run_job
    from recstack.batch.jobs import clear_scorers

    tmp = Path(tempfile.mkdtemp(prefix="bench-batch-"))
    root = tmp / "releases"
    results: dict[str, Any] = {"cpus": os.cpu_count(), "rows": []}
    rows: list[dict[str, Any]] = results["rows"]

    t0 = time.perf_counter()
    rid = _build("ml-100k", root)
    results["ml100k_release_build_seconds"] = round(time.perf_counter() - t0, 1)
    ray_runner = None if args.no_ray else RayRunner(num_cpus=2)
    try:
        # 1. ML-100K users, top 100
        spec = JobSpec(kind="users", release=rid, releases_dir=str(root), k=100, block_size=256)
        for name, runner in [("local", LocalRunner()), ("ray", ray_runner)]:
            if runner is None:
                continue
            rep = run_job(spec, f"sqlite:///{tmp / f'users-{name}.db'}", runner)
            rows.append({"job": "ml-100k users top-100 -> sqlite", **rep.as_dict()})

        # 2. synthetic 1M users
        from recstack.data.synthetic import synthesize

        t0 = time.perf_counter()
        ds = synthesize(args.synth_users, 2000, 20 * args.synth_users, seed=1)
        data = ds.save(tmp / "synth")
        del ds
        srid = _build(str(data), root)
        results["synthetic_build_seconds"] = round(time.perf_counter() - t0, 1)
        sspec = JobSpec(kind="users", release=srid, releases_dir=str(root), k=100, block_size=2048)
        for name, runner in [("local", LocalRunner()), ("ray", ray_runner)]:
            if runner is None:
                continue
            r = _compute_only(sspec, runner, args.synth_profiles)
            rows.append(
                {
                    "job": f"synthetic {args.synth_users:,} users x 2000 items, top-100 (compute only)",
                    "runner": name,
                    **r,
                }
            )
        clear_scorers()

        # 3. pairs of the top-N items into SQLite and PostgreSQL
        pspec = JobSpec(
            kind="pairs", release=rid, releases_dir=str(root), k=10, top=args.top, block_size=4096
        )
        rep = run_job(pspec, f"sqlite:///{tmp / 'pairs.db'}")
        rows.append({"job": f"pairs top-{args.top} -> sqlite", **rep.as_dict()})
        try:
            rep = run_job(pspec, args.postgres, keep=1)
            rows.append({"job": f"pairs top-{args.top} -> postgresql", **rep.as_dict()})
        except Exception as exc:
            rows.append({"job": f"pairs top-{args.top} -> postgresql", "error": str(exc)})
    finally:
        if ray_runner is not None:
            ray_runner.close()

    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(results, indent=2))
    table = Table(title=f"batch precomputation ({results['cpus']} CPUs)")
    for col in ("job", "runner", "profiles", "rows", "seconds", "profiles/s"):
        table.add_column(col, justify="left" if col == "job" else "right")
    for r in rows:
        table.add_row(
            r["job"],
            str(r.get("runner", "-")),
            f"{r.get('profiles', 0):,}",
            f"{r.get('rows', 0):,}" if "rows" in r else "-",
            str(r.get("seconds", r.get("error", "-"))),
            f"{r.get('profiles_per_second', 0):,.0f}",
        )
    Console().print(table)
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
