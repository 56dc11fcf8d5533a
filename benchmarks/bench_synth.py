"""Benchmark: the synthetic generator at ML-25M's shape (162,541 users, 62,423 items, 25M interactions).

Measures wall time of `synthesize` and of `Dataset.save` (Parquet), and the process's peak RSS
(resource.getrusage ru_maxrss) after each step. Then (unless --skip-load) writes the synthetic set
in the MovieLens 25M CSV layout (ratings.csv, movies.csv, links.csv, tags.csv with 1M tags, and
genome-scores.csv / genome-tags.csv with 13,816 x 1,128 scores like ML-25M) and times
`load_movielens` on it: the ML-25M loading figure without downloading ML-25M.
Writes benchmarks/results/synth.json.

    python benchmarks/bench_synth.py [--users N --items N --interactions N --seed S --skip-load]
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
from typing import Any

import numpy as np
import polars as pl
from rich.console import Console
from rich.table import Table

from recstack.data import Dataset
from recstack.data.movielens import load_movielens
from recstack.data.synthetic import synthesize


def peak_rss_mb() -> float:
    """Peak resident set size of this process in MiB (Linux reports ru_maxrss in KiB)."""
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kb / 1024 if sys.platform != "darwin" else kb / 1024 / 1024


def cpu_seconds() -> float:
    """User + system CPU time of this process so far (contention-free cost, unlike wall time)."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def write_movielens_csv(ds: Dataset, d: Path) -> None:
    """Write ``ds`` in the MovieLens 25M CSV layout into ``d`` (synthetic tags and genome scores)."""
    d.mkdir(parents=True, exist_ok=True)
    ext_u = ds.user_vocab.ids.to_numpy()
    ext_i = ds.item_vocab.ids.to_numpy()
    pl.DataFrame(
        {
            "userId": ext_u[ds.interactions["user"].to_numpy()],
            "movieId": ext_i[ds.interactions["item"].to_numpy()],
            "rating": ds.interactions["rating"],
            "timestamp": ds.interactions["timestamp"],
        }
    ).write_csv(d / "ratings.csv")
    ds.items.select(
        pl.col("external_id").alias("movieId"),
        (pl.col("title") + " (" + pl.col("year").cast(pl.String) + ")").alias("title"),
        pl.col("genres").list.join("|").alias("genres"),
    ).write_csv(d / "movies.csv")
    ds.items.select(
        pl.col("external_id").alias("movieId"),
        (pl.col("external_id") + 100000).cast(pl.String).str.zfill(7).alias("imdbId"),
        (pl.col("external_id") + 7).alias("tmdbId"),
    ).write_csv(d / "links.csv")
    rng = np.random.default_rng(0)
    n = 1_000_000
    pl.DataFrame(
        {
            "userId": rng.integers(1, ds.n_users + 1, n),
            "movieId": rng.integers(1, ds.n_items + 1, n),
            "tag": pl.Series(rng.integers(0, 5000, n)).cast(pl.String),
            "timestamp": rng.integers(1_000_000_000, 1_500_000_000, n),
        }
    ).write_csv(d / "tags.csv")
    n_movies, n_tags = min(13_816, ds.n_items), 1_128
    pl.DataFrame(
        {"tagId": np.arange(1, n_tags + 1), "tag": [f"tag {t}" for t in range(1, n_tags + 1)]}
    ).write_csv(d / "genome-tags.csv")
    pl.DataFrame(
        {
            "movieId": np.repeat(np.arange(1, n_movies + 1), n_tags),
            "tagId": np.tile(np.arange(1, n_tags + 1), n_movies),
            "relevance": rng.random(n_movies * n_tags).round(5),
        }
    ).write_csv(d / "genome-scores.csv")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--users", type=int, default=162_541)
    ap.add_argument("--items", type=int, default=62_423)
    ap.add_argument("--interactions", type=int, default=25_000_000)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--skip-load", action="store_true", help="skip the MovieLens-25M-layout load timing")
    ap.add_argument("--out", type=str, default=str(Path(__file__).parent / "results" / "synth.json"))
    args = ap.parse_args()

    rss0 = peak_rss_mb()
    t, c = time.perf_counter(), cpu_seconds()
    ds = synthesize(args.users, args.items, args.interactions, seed=args.seed)
    synth_s, synth_cpu = time.perf_counter() - t, cpu_seconds() - c
    rss_synth = peak_rss_mb()
    n_users, n_items, n_inter = ds.n_users, ds.n_items, ds.n_interactions
    with tempfile.TemporaryDirectory() as tmp:
        target = Path(tmp) / "synthetic"
        t = time.perf_counter()
        ds.save(target)
        save_s = time.perf_counter() - t
        size_mb = sum(f.stat().st_size for f in target.iterdir()) / 2**20
    rss_save = peak_rss_mb()
    load: dict[str, Any] = {}
    if not args.skip_load:
        with tempfile.TemporaryDirectory() as tmp:
            d = Path(tmp) / "ml-25m"
            write_movielens_csv(ds, d)
            del ds
            t, c = time.perf_counter(), cpu_seconds()
            loaded = load_movielens(d)
            load["movielens_25m_layout_load_seconds"] = round(time.perf_counter() - t, 2)
            load["movielens_25m_layout_load_cpu_seconds"] = round(cpu_seconds() - c, 2)
            load["movielens_25m_layout_interactions"] = loaded.n_interactions
            del loaded
            t = time.perf_counter()
            load_movielens(d, genome=False)
            load["movielens_25m_layout_load_seconds_without_genome"] = round(time.perf_counter() - t, 2)
        load["peak_rss_mb_after_load"] = round(peak_rss_mb(), 1)
    result: dict[str, Any] = {
        "benchmark": "synth",
        "protocol": "synthesize(users, items, interactions, seed) wall time, then Dataset.save (Parquet, "
        "includes the sha256 fingerprint); peak RSS = getrusage ru_maxrss of the process; then "
        "load_movielens on the same data written in the ML-25M CSV layout (with and without genome)",
        "users": n_users,
        "items": n_items,
        "interactions": n_inter,
        "seed": args.seed,
        "synthesize_seconds": round(synth_s, 2),
        "synthesize_cpu_seconds": round(synth_cpu, 2),
        "save_seconds": round(save_s, 2),
        "saved_mb": round(size_mb, 1),
        "peak_rss_mb_start": round(rss0, 1),
        "peak_rss_mb_after_synthesize": round(rss_synth, 1),
        "peak_rss_mb_after_save": round(rss_save, 1),
        **load,
        "load_average_1m": round(os.getloadavg()[0], 1),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "note": "measured on a shared 2-core machine; noisy (see load_average_1m)",
    }
    table = Table(title="synthetic generator")
    table.add_column("measure")
    table.add_column("value", justify="right")
    skip = {"benchmark", "protocol", "note", "python", "seed"}
    for key, value in result.items():
        if key not in skip:
            table.add_row(key, f"{value:,}" if isinstance(value, int) else str(value))
    Console().print(table)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
