"""Benchmark `recstack build`: the default pipeline on MovieLens 100K (``--dataset``, read from the
data directory: `recstack.data.paths`; the recorded build.json is ML-100K; ``--dataset
ml-latest-small`` times the bundled default data set into build_ml-latest-small.json).

Reports wall time per stage and in total, peak RSS of the process and the release size on disk, and
writes them to benchmarks/results/build.json. Target (BENCHMARKS.md, 2 cores): under 3 minutes for the
full default pipeline, two-stage ranker included.

    .venv/bin/python benchmarks/bench_build.py [--config recstack.toml] [--dataset ml-100k] [--threads 2]
        [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

RESULTS = Path(__file__).resolve().parent / "results" / "build.json"


def _fit_seconds(root: Path, rid: str) -> dict[str, float]:
    data = json.loads((root / rid / "metrics.json").read_text())
    return {k: v.get("fit_seconds") for k, v in data.get("results", {}).items()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", type=Path, default=None, help="pipeline TOML (default: the bundled one)")
    ap.add_argument("--threads", type=int, default=2, help="torch / BLAS threads")
    ap.add_argument("--keep", type=Path, default=None, help="write the release here instead of a temp dir")
    ap.add_argument("--dataset", default="ml-100k", help="the [dataset] source (default: ml-100k)")
    ap.add_argument(
        "--out", type=Path, default=None, help="default: build.json (ML-100K), else build_<dataset>.json"
    )
    args = ap.parse_args()

    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, str(args.threads))
    import torch

    torch.set_num_threads(args.threads)

    from recstack.release.build import BuildConfig, build

    cfg = BuildConfig.from_toml(args.config) if args.config else BuildConfig.default()
    cfg = cfg.model_copy(update={"dataset": cfg.dataset.model_copy(update={"source": args.dataset})})
    if args.out is None:
        args.out = (
            RESULTS
            if args.dataset == "ml-100k"
            else RESULTS.with_name(f"build_{Path(args.dataset).name}.json")
        )
    root = args.keep or Path(tempfile.mkdtemp(prefix="recstack-bench-build-"))
    t0 = time.perf_counter()
    try:
        manifest = build(cfg, root)
        total = time.perf_counter() - t0
        ru = resource.getrusage(resource.RUSAGE_SELF)
        cpu = ru.ru_utime + ru.ru_stime
        peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB
        size = manifest.total_size() + (root / manifest.id / "manifest.json").stat().st_size
        fit_seconds = _fit_seconds(root, manifest.id)
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)

    result = {
        "benchmark": "build",
        "dataset": manifest.dataset.name,
        "counts": manifest.dataset.counts,
        "protocol": cfg.split.protocol,
        "models": list(manifest.artifacts.retrievers),
        "skipped": manifest.skipped,
        "index": manifest.artifacts.index.backend if manifest.artifacts.index else None,
        "stage_seconds": manifest.timings,
        "total_seconds": round(total, 2),
        "cpu_seconds": round(cpu, 2),
        "fit_seconds": fit_seconds,
        "peak_rss_mb": round(peak_rss_mb, 1),
        "release_bytes": size,
        "release_mb": round(size / 2**20, 2),
        "files": len(manifest.files),
        "headline": {
            "model": manifest.headline.model if manifest.headline else None,
            "metric": manifest.headline.metric if manifest.headline else None,
            "value": manifest.headline_value(),
        },
        "ndcg@10": {k: v.get("ndcg@10") for k, v in manifest.metrics.items()},
        "threads": args.threads,
        "load_average_1m": round(os.getloadavg()[0], 2),
        "cpus": os.cpu_count(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "target_seconds": 180,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")

    con = Console()
    t = Table(title=f"recstack build · default pipeline on {manifest.dataset.name}")
    t.add_column("stage")
    t.add_column("seconds", justify="right")
    for stage, sec in manifest.timings.items():
        t.add_row(stage, f"{sec:.1f}")
    t.add_row("[bold]total[/bold]", f"[bold]{total:.1f}[/bold]")
    t.add_row("cpu (user+sys)", f"{cpu:.1f}")
    con.print(t)
    con.print(
        f"models {', '.join(result['models'])}"
        + (f" (skipped: {', '.join(manifest.skipped)})" if manifest.skipped else "")
        + f" · peak RSS {peak_rss_mb:.0f} MB · release {size / 2**20:.1f} MB in {len(manifest.files)} files"
    )
    con.print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
