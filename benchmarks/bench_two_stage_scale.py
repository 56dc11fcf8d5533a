"""Benchmark (issue 23): fit time and peak RSS of the default serving model ``two_stage:ncf`` (the build's
parameters: ``ranker_grid = [{id_features = false}]``) on synthetic sets of growing size, with the peak
RSS of each phase of the fit (each recall source's fit, one 256-user block of candidate features, a
whole holdout fold, the ranker's training).

Each fit runs in a child process (``nice -n 10``); the peak of a phase is the kernel's RSS high-water
mark (``VmHWM``), reset (``/proc/self/clear_refs``) when the phase starts and read when it ends; the
whole fit's peak is the largest of them (the process's own ``ru_maxrss`` is reset with it). The load
average (1 min) before and after each fit is recorded: the machine has 2 cores shared with other jobs.

``--pythonpath`` runs the child on another source tree (e.g. a checkout of the commit before the change,
``--label before``); rows are merged into ``--out`` by (label, dataset, model, params).

    recstack data synth --out /work/data23/synth1m --users 16250 --items 12000 --interactions 1000000
    python benchmarks/bench_two_stage_scale.py --datasets /work/data23/synth1m,/work/data23/synth2m \\
        [--label after] [--pythonpath OLD/src] [--model two_stage:ncf] [--params '{"ranker_data": "memory"}']
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "results" / "two_stage_scale.json"
BUILD_PARAMS: dict[str, Any] = {"ranker_grid": [{"id_features": False}]}


def _status(key: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key):
                return int(line.split()[1]) / 1024
    return float("nan")


def _reset_hwm() -> None:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


class _Phases:
    """Peak RSS (MB) and seconds of nested, repeated phases."""

    def __init__(self) -> None:
        self.peak: dict[str, float] = {}
        self.seconds: dict[str, float] = {}
        self.active: list[str] = []

    def _bump(self) -> None:
        hwm = _status("VmHWM")
        for a in self.active:
            self.peak[a] = max(self.peak.get(a, 0.0), hwm)

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        self._bump()
        self.active.append(name)
        _reset_hwm()
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self._bump()
            self.active.remove(name)
            secs = time.perf_counter() - t0
            self.seconds[name] = self.seconds.get(name, 0.0) + secs
            # as it goes (a fit stopped before the end still tells where the memory went)
            print(f"PHASE {name} peak {self.peak[name]:.0f} MB {secs:.1f} s", file=sys.stderr, flush=True)
            _reset_hwm()

    def wrap(self, obj: Any, attr: str, name: str) -> None:
        orig: Callable[..., Any] = getattr(obj, attr)

        def wrapped(*args: Any, **kwargs: Any) -> Any:
            with self(name):
                return orig(*args, **kwargs)

        setattr(obj, attr, wrapped)


def child(path: str, model: str, params: dict[str, Any]) -> dict[str, Any]:
    """Fit ``model`` on the dataset at ``path`` in this process; the figures."""
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    import recstack.models.ranking.two_stage as ts
    from recstack.data.loading import load_dataset
    from recstack.models.ranking._base import NeuralRanker
    from recstack.models.registry import create

    phases = _Phases()

    def fit_sources(cfg: Any, dataset: Any) -> tuple[dict[str, Any], dict[str, float], list[str]]:
        out: dict[str, Any] = {}
        secs: dict[str, float] = {}
        for name in cfg.sources:
            t0 = time.perf_counter()
            with phases(f"source:{name}"):
                out[name] = create(name, **cfg.source_params.get(name, {})).fit(dataset)
            secs[name] = time.perf_counter() - t0
        return out, secs, []  # no shared fits outside a build

    ts._fit_sources = fit_sources  # type: ignore[assignment]  # the same loop, each fit a phase
    phases.wrap(ts.CandidateFeaturizer, "build", "candidates_block")
    phases.wrap(ts.TwoStage, "_fold", "holdout_fold")
    phases.wrap(NeuralRanker, "fit", "ranker_fit")
    phases.wrap(ts, "build_features", "feature_tables")
    t0 = time.perf_counter()
    ds = load_dataset(path)
    load_rss = _status("VmHWM")
    t1 = time.perf_counter()
    m = create(model, **params)
    with phases("fit"):
        m.fit(ds)
    fit_s = time.perf_counter() - t1
    fr: dict[str, Any] = dict(getattr(m, "fit_result", {}) or {})
    return {
        "n_users": ds.n_users,
        "n_items": ds.n_items,
        "n_interactions": ds.n_interactions,
        "load_s": round(t1 - t0, 1),
        "fit_s": round(fit_s, 1),
        "peak_rss_mb": round(max([load_rss, *phases.peak.values()])),
        "load_rss_mb": round(load_rss),
        "phase_peak_rss_mb": {k: round(v) for k, v in phases.peak.items()},
        "phase_seconds": {k: round(v, 1) for k, v in phases.seconds.items()},
        "ranker_val_ndcg@10": fr.get("ranker_val_ndcg@10"),
        "ranker_fit": fr.get("ranker_fit"),
        "holdout_lists": fr.get("holdout_lists"),
        "candidates_per_user": fr.get("candidates_per_user"),
        "two_tower_fit": fr if model == "two_tower" else None,
    }


def run_one(
    path: str, model: str, params: dict[str, Any], pythonpath: str | None, log: Path
) -> dict[str, Any]:
    """One fit in a child process; its stderr (progress, the phases as they end) goes to ``log``."""
    env = dict(os.environ)
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    cmd = ["nice", "-n", "10", sys.executable, __file__, "--child", path, "--model", model]
    cmd += ["--params", json.dumps(params)]
    load_before = os.getloadavg()[0]
    t0 = time.perf_counter()
    with log.open("w") as err:
        proc = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=err, text=True, check=False)
    wall = time.perf_counter() - t0
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        tail = log.read_text()[-2000:]
        return {"error": proc.returncode, "stderr_tail": tail, "wall_s": round(wall, 1)}
    row: dict[str, Any] = json.loads(lines[-1][len("RESULT ") :])
    row.update(wall_s=round(wall, 1), load1_before=load_before, load1_after=os.getloadavg()[0])
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", default="/work/data23/synth1m,/work/data23/synth2m")
    ap.add_argument("--model", default="two_stage:ncf")
    ap.add_argument("--params", default="{}", help="JSON, on top of the build's parameters for two_stage")
    ap.add_argument("--label", default="after")
    ap.add_argument("--pythonpath", default=None, help="run the fits on this source tree")
    ap.add_argument("--out", default=str(RESULTS))
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    extra = json.loads(args.params)
    params = {**(BUILD_PARAMS if args.model.startswith("two_stage") else {}), **extra}
    if args.child:
        print("RESULT " + json.dumps(child(args.child, args.model, params), default=str), flush=True)
        return
    out = Path(args.out)
    doc: dict[str, Any] = json.loads(out.read_text()) if out.is_file() else {"rows": []}
    doc["machine"] = {"cpus": os.cpu_count(), "platform": platform.platform()}
    for path in args.datasets.split(","):
        tag = f"{args.label}-{args.model.replace(':', '_')}-{Path(path).name}"
        log = Path(tempfile.gettempdir()) / f"bench_two_stage_scale-{tag}.log"
        print(f"{path}: child stderr in {log}", flush=True)
        row = run_one(path, args.model, params, args.pythonpath, log)
        key = {"label": args.label, "dataset": Path(path).name, "model": args.model, "params": extra}
        row = {**key, **row, "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        print(json.dumps(row, default=str), flush=True)
        doc["rows"] = [r for r in doc["rows"] if {k: r.get(k) for k in key} != key] + [row]
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(doc, indent=2, default=str) + "\n")


if __name__ == "__main__":
    main()
