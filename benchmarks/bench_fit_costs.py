"""Benchmark: what each retriever's fit costs at ML-25M size (issue 23): the temporal train part (90%) of a
synthetic set, each model of ``--models`` fitted in turn in one process; fit seconds and the process's
peak RSS after it. It is what the default pipeline's ``[large]`` table was chosen from.
Writes ``benchmarks/results/fit_costs_25m.json`` (each model as soon as it is done).

    python benchmarks/bench_fit_costs.py /work/data23/synth25m \
        pop,recent_pop,trending,genre_trending,window_pop,als,itemknn,rp3beta,seqknn,ease,time_ease
"""

from __future__ import annotations

import gc
import json
import os
import resource
import sys
import time
from pathlib import Path

from recstack.data.dataset import Dataset
from recstack.data.splits import split
from recstack.models.registry import create

OUT = Path(__file__).parent / "results" / "fit_costs_25m.json"


def main() -> None:
    data, models = sys.argv[1], sys.argv[2].split(",")
    out: dict[str, object] = {"data": data, "load_avg_at_start": os.getloadavg(), "fits": {}}
    t0 = time.perf_counter()
    ds = Dataset.load(data)
    sp = split(ds, "temporal", seed=42)
    out["split_seconds"] = round(time.perf_counter() - t0, 1)
    out["train_interactions"] = sp.train.n_interactions
    fits: dict[str, object] = {}
    out["fits"] = fits
    for name in models:
        gc.collect()
        t0 = time.perf_counter()
        create(name).fit(sp.train)
        fits[name] = {
            "fit_seconds": round(time.perf_counter() - t0, 1),
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024,
            "load_avg": os.getloadavg()[0],
        }
        print(name, fits[name], flush=True)
        OUT.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
