"""Benchmark (issue 23): the default pipeline's ``[large]`` build with and without shared fits.

A build fits a model with the same config on the same data once (`recstack.models.shared`); the
default pipeline's ``[large]`` table gives its time_ease and ALS the two-stage model's source
parameters, so that the two-stage model's source refit is the table models' fit. Two builds of the
bundled default pipeline (default.toml, ``[large]`` forced at ``--threshold`` interactions) on a
``recstack data synth`` set, one after the other:

- ``unshared``: ``[large.models.time_ease]`` / ``[large.models.als]`` removed: the table models keep
  their own defaults, no config matches a source's, every fit happens (what main does);
- ``shared``: default.toml as it is.

Per build: wall and CPU seconds, per-stage seconds, peak RSS, each table model's fit seconds and NDCG@10, and
the two-stage model's ``source_fit_seconds`` / ``shared_sources`` (its ``fit_result.json``). Writes
``benchmarks/results/fit_sharing.json`` (with ``--repeats``, the builds alternate and the summary is the
median).

    nice -n 10 python benchmarks/bench_fit_sharing.py --data /work/data-fit/synth1m [--threshold 500000]
        [--repeats 2]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
from pathlib import Path
from typing import Any

from _results import write_results
from bench_scale import _default_toml, build

RESULTS = Path(__file__).parent / "results" / "fit_sharing.json"

#: the block of default.toml that makes the table's time_ease and ALS the two-stage sources' configs
_SHARED_BLOCK = """# the two-stage sources' parameters (see above: one fit for the table and the recall stage)
[large.models.time_ease]
params = { l2 = 400.0 }

[large.models.als]
params = { regularization = 30.0, alpha = 5.0 }
"""


def _config(data: Path, threshold: int, shared: bool) -> str:
    text = _default_toml(data)
    head, sep, tail = text.partition("interactions = 5_000_000")
    assert sep, "default.toml's [large] threshold line moved"
    text = f"{head}interactions = {threshold}{tail}"
    if not shared:
        assert _SHARED_BLOCK in text, "default.toml's shared-parameters block moved"
        text = text.replace(_SHARED_BLOCK, "")
    return text


def _two_stage(release: Path) -> dict[str, Any]:
    fr = json.loads((release / "models" / "two_stage:ncf" / "fit_result.json").read_text())
    return {
        "source_fit_seconds": {k: round(float(v), 1) for k, v in fr["source_fit_seconds"].items()},
        "shared_sources": fr.get("shared_sources"),
        "seconds": round(float(fr["seconds"]), 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data", required=True, help="a `recstack data synth` directory")
    ap.add_argument("--threshold", type=int, default=500_000, help="[large] interactions")
    ap.add_argument("--work", default="/work/data-fit/bench", help="configs, releases, logs")
    ap.add_argument("--variants", default="unshared,shared")
    ap.add_argument("--repeats", type=int, default=1, help="builds per variant (interleaved)")
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args()
    data = Path(args.data)
    info = json.loads((data / "dataset.json").read_text())
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    out: dict[str, Any] = {
        "meta": {
            "machine": platform.platform(),
            "cpus": os.cpu_count(),
            "load_avg_at_start": os.getloadavg(),
            "data": {"path": str(data), **info.get("meta", {}).get("params", {})},
            "protocol": f"default.toml with [large] forced at {args.threshold:,} interactions, runner local",
            "variants": {
                "unshared": "[large.models.time_ease] / [large.models.als] removed (table models at their "
                "own defaults: nothing shared, main's behaviour)",
                "shared": "default.toml as is (table time_ease / ALS at the two-stage sources' parameters)",
            },
        },
        "builds": {},  # variant -> one result per repeat
    }
    variants = args.variants.split(",")
    for v in variants:
        (work / f"{v}.toml").write_text(_config(data, args.threshold, v == "shared"))
    for rep in range(args.repeats):  # interleaved: the machine's load drifts
        for v in variants:
            t = os.times()
            res = build(
                work / f"{v}.toml", work / f"releases-{v}", "local", None, work / f"build-{v}-{rep}.log"
            )
            # CPU seconds of the build process (and what it waited for): less sensitive than the wall
            # time to the other jobs of a shared machine
            t2 = os.times()
            res["cpu_seconds"] = round(
                t2.children_user + t2.children_system - t.children_user - t.children_system, 1
            )
            if "release" in res:
                release = Path(res["release"])
                metrics = json.loads((release / "metrics.json").read_text())["results"]
                res["fit_seconds"] = {m: r.get("fit_seconds") for m, r in metrics.items()}
                res["shared_fit"] = sorted(m for m, r in metrics.items() if r.get("shared_fit"))
                res["two_stage"] = _two_stage(release)
                res["evaluation"] = {
                    m: {c: r.get(c) for c in ("ndcg@10", "recall@10", "n_users")} for m, r in metrics.items()
                }
            out["builds"].setdefault(v, []).append(res)
            print(json.dumps(res), flush=True)
    ok = {v: [r for r in out["builds"].get(v, []) if "two_stage" in r] for v in ("unshared", "shared")}
    if all(ok.values()):

        def med(v: str, get: Any) -> float:
            return float(statistics.median(get(r) for r in ok[v]))

        figures = {
            "wall_seconds": lambda r: r["wall_seconds"],
            "cpu_seconds": lambda r: r["cpu_seconds"],
            "evaluate_stage_seconds": lambda r: r["stages"]["evaluate"],
            "two_stage_fit_seconds": lambda r: r["fit_seconds"]["two_stage:ncf"],
            "time_ease_fit_seconds": lambda r: r["fit_seconds"]["time_ease"],
            "als_fit_seconds": lambda r: r["fit_seconds"]["als"],
            "peak_rss_mb": lambda r: r["peak_rss_mb"],
        }
        out["median"] = {v: {k: round(med(v, g), 1) for k, g in figures.items()} for v in ok}
        out["saving"] = {
            k: round(out["median"]["unshared"][k] - out["median"]["shared"][k], 1) for k in figures
        }
    write_results(Path(args.out), out)


if __name__ == "__main__":
    main()
