"""Benchmark: the synthetic generator at ML-25M's shape (162,541 users, 62,423 items, 25M interactions).

Measures wall time of `synthesize` and of `Dataset.save` (Parquet), and the process's peak RSS
(resource.getrusage ru_maxrss) after each step. Writes benchmarks/results/synth.json.

    python benchmarks/bench_synth.py [--users N --items N --interactions N --seed S --save DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from recstack.data.synthetic import synthesize


def peak_rss_mb() -> float:
    """Peak resident set size of this process in MiB (Linux reports ru_maxrss in KiB)."""
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kb / 1024 if sys.platform != "darwin" else kb / 1024 / 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--users", type=int, default=162_541)
    ap.add_argument("--items", type=int, default=62_423)
    ap.add_argument("--interactions", type=int, default=25_000_000)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--save", type=str, default=None, help="directory for Dataset.save (default: a temp dir)")
    ap.add_argument("--out", type=str, default=str(Path(__file__).parent / "results" / "synth.json"))
    args = ap.parse_args()

    rss0 = peak_rss_mb()
    t = time.perf_counter()
    ds = synthesize(args.users, args.items, args.interactions, seed=args.seed)
    synth_s = time.perf_counter() - t
    rss_synth = peak_rss_mb()
    with tempfile.TemporaryDirectory() as tmp:
        target = Path(args.save or tmp) / "synthetic"
        t = time.perf_counter()
        ds.save(target)
        save_s = time.perf_counter() - t
        size_mb = sum(f.stat().st_size for f in target.iterdir()) / 2**20
    rss_save = peak_rss_mb()
    result = {
        "benchmark": "synth",
        "protocol": "synthesize(users, items, interactions, seed) wall time, then Dataset.save (Parquet, "
        "includes the sha256 fingerprint); peak RSS = getrusage ru_maxrss of the process",
        "users": ds.n_users,
        "items": ds.n_items,
        "interactions": ds.n_interactions,
        "seed": args.seed,
        "synthesize_seconds": round(synth_s, 2),
        "save_seconds": round(save_s, 2),
        "saved_mb": round(size_mb, 1),
        "peak_rss_mb_start": round(rss0, 1),
        "peak_rss_mb_after_synthesize": round(rss_synth, 1),
        "peak_rss_mb_after_save": round(rss_save, 1),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "note": "measured on a shared 2-core machine; noisy",
    }
    table = Table(title="synthetic generator")
    table.add_column("measure")
    table.add_column("value", justify="right")
    for key in ("users", "items", "interactions", "synthesize_seconds", "save_seconds", "saved_mb",
                "peak_rss_mb_after_synthesize", "peak_rss_mb_after_save"):
        table.add_row(key, f"{result[key]:,}" if isinstance(result[key], int) else str(result[key]))
    Console().print(table)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
