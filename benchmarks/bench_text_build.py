"""Benchmark: build time with text embeddings (issue 21) on ML-100K and ml-latest-small, with a cold and
a warm embedding cache, and the text encoder's throughput (items/s).

- ``build``: `recstack build` of a pipeline with the content models (pop, itemknn, ease, content,
  content_userknn; ``temporal-rolling`` with the build's 2 windows + ``stratified``; the ANN index over
  the content embeddings; the ONNX query encoder in the release). Each build runs in a fresh process
  (the sentence-transformers model load is part of a cold build). ``cold``: an empty text cache (every
  item text is encoded, the ONNX encoder exported); ``warm``: the same cache again (nothing encoded).
  The difference is the cost of the text embeddings in a build. Stage times from the manifest.
- ``throughput``: the encoder alone (all-MiniLM-L6-v2, batch 64, 2 torch threads), model loaded
  first: every item text of ML-100K, and the first ``--mls-items`` item texts of ml-latest-small
  (longer texts: tags), no cache.

The 1-minute load average before and after each measurement is recorded: the machine is shared (2
cores, several jobs); compare cold and warm of one data set (run back to back), not absolute times.

    nice -n 5 .venv/bin/python benchmarks/bench_text_build.py [--data ml-100k,ml-latest-small]
        [--parts throughput,build] [--mls-items 2000]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parent / "results" / "text_build.json"
DATA = {"ml-100k": "/work/shared/data/ml-100k", "ml-latest-small": "/work/shared/data/ml-latest-small"}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _load() -> float:
    return round(os.getloadavg()[0], 1)


def one_build(source: str, cache: str) -> dict[str, Any]:
    """One `recstack build` (in this process) with the text cache ``cache``."""
    import torch

    torch.set_num_threads(2)
    from recstack.release.build import (
        BuildConfig,
        DatasetSpec,
        EvaluationSpec,
        IndexSpec,
        ModelSpec,
        SplitSpec,
        build,
    )

    text = {"cache_dir": cache}
    cfg = BuildConfig(
        dataset=DatasetSpec(source=source),
        split=SplitSpec(protocol="temporal-rolling", windows=2, window_fraction=0.05),
        evaluation=EvaluationSpec(also=["stratified"]),
        models=[
            ModelSpec(name="pop"),
            ModelSpec(name="itemknn"),
            ModelSpec(name="ease"),
            ModelSpec(name="content", params=text),
            ModelSpec(name="content_userknn", params=text),
        ],
        index=IndexSpec(source="content"),
    )
    load0 = _load()
    with tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter()
        man = build(cfg, d)
        total = time.perf_counter() - t0
        size = sum(f.stat().st_size for f in Path(d, man.id).rglob("*") if f.is_file())
    return {
        "total_seconds": round(total, 1),
        "stages": {k: round(float(v), 1) for k, v in man.timings.items()},
        "release_mb": round(size / 2**20, 1),
        "ndcg@10": {k: round(float(v.get("ndcg@10", 0.0)), 4) for k, v in man.metrics.items()},
        "load_average_1min": [load0, _load()],
    }


def one_throughput(source: str, limit: int | None) -> dict[str, Any]:
    import torch

    torch.set_num_threads(2)
    from recstack.data.loading import load_dataset
    from recstack.text import TextEncoder, item_texts

    texts = item_texts(load_dataset(source))
    texts = texts[:limit] if limit else texts
    enc = TextEncoder()
    enc.encode(["warm-up"])  # the model load is not throughput
    load0 = _load()
    t0 = time.perf_counter()
    enc.encode(texts)
    s = time.perf_counter() - t0
    return {
        "items": len(texts),
        "mean_chars": round(sum(map(len, texts)) / max(len(texts), 1), 1),
        "seconds": round(s, 2),
        "items_per_second": round(len(texts) / s, 1),
        "load_average_1min": [load0, _load()],
    }


def _child(*args: str) -> dict[str, Any]:
    """This script run with ``args`` in a fresh process: its last stdout line is the JSON result."""
    env = {**os.environ, "OMP_NUM_THREADS": "2", "OPENBLAS_NUM_THREADS": "2", "MKL_NUM_THREADS": "2"}
    out = subprocess.run(
        [sys.executable, __file__, "--child", *args], check=True, stdout=subprocess.PIPE, text=True, env=env
    )
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="ml-100k,ml-latest-small")
    ap.add_argument("--parts", default="throughput,build")
    ap.add_argument("--mls-items", type=int, default=2000)
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument(
        "--cache",
        type=Path,
        default=None,
        help="build with this text cache (already filled: no cold build) instead of an empty temp one",
    )
    ap.add_argument("--child", nargs=3, metavar=("WHAT", "SOURCE", "ARG"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        what, source, arg = args.child
        res = one_build(source, arg) if what == "build" else one_throughput(source, int(arg) or None)
        print(json.dumps(res))
        return 0
    body: dict[str, Any] = json.loads(args.out.read_text()) if args.out.is_file() else {}
    body.update({"benchmark": "text_build",
                 "machine": {"cpus": os.cpu_count(), "python": platform.python_version()}})  # fmt: skip
    parts = args.parts.split(",")
    for name in [d for d in args.data.split(",") if d]:
        source = DATA.get(name, name)
        if "throughput" in parts:
            limit = args.mls_items if name == "ml-latest-small" else 0
            log(f"{name}: encoder throughput")
            body.setdefault("throughput", {})[name] = _child("throughput", source, str(limit))
            log(f"{name}: {body['throughput'][name]}")
        if "build" in parts:
            with tempfile.TemporaryDirectory() as tmp:
                cache = str(args.cache) if args.cache else tmp
                # a given cache holds the embeddings already: its first build still exports the ONNX
                # query encoder (when the cache has none), the second is fully warm
                states = ("embeddings_cached", "warm") if args.cache else ("cold", "warm")
                runs: dict[str, Any] = {}
                for state in states:
                    log(f"{name}: build, {state} text cache")
                    runs[state] = _child("build", source, cache)
                    log(f"{name} {state}: {runs[state]['total_seconds']} s {runs[state]['stages']}")
            runs[f"text_seconds_{states[0]}_minus_warm"] = round(
                runs[states[0]]["total_seconds"] - runs["warm"]["total_seconds"], 1
            )
            body.setdefault("build", {})[name] = runs
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(body, indent=2) + "\n")
    log(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
