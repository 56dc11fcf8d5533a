"""Benchmark: a replayed A/B test through the real HTTP API, its A/A calibration over 20 seeds, and
the assignment's split (BENCHMARKS.md "replay A/B").

1. **Release.** A temporal split of ``--dataset`` (the last 10% of interactions by time are the
   future, `recstack.experiments.replay.Population`); the default pipeline of ``recstack build``
   (two-stage NCF over its recall sources) is built from the train part only, so the future is unknown
   to it. Built once into ``--work`` and reused.
2. **A/B.** ``recstack serve`` (a real server, its own process group) with the event log and the
   experiments directory; ``POST /admin/experiments`` creates two arms of 50%: ``popularity`` (model
   ``recall`` over a popular-only pipeline) and ``two_stage`` (the default). Every test user visits
   ``--visits`` times (k = 10), examines position p with probability 1/p and clicks the items of their
   future, then rates them; clicks and ratings go through ``POST /v1/events``. The report comes from
   ``GET /v1/experiments/NAME/report`` (JSON and HTML: benchmarks/results/ab_report.html).
3. **A/A.** ``--aa-seeds`` (20) experiments whose two arms are both the default, each with its own salt
   and click randomness, each on a fresh event log, run in process against the same app
   (``TestClient``: the ASGI app without sockets; 20 servers would not fit the shared 2-core machine).
   Counts the seeds whose CTR and hit-rate tests say p < 0.05 (a calibrated test: about 1 in 20).
   ``--aa-resamples`` more A/A splits re-randomise the users of one logged A/A run by new salts (no
   replay: the p-values' distribution, KS-tested against the uniform).
4. **Assignment.** 100,000 user ids split 50/50 and 10% holdout + 30/60: the largest deviation from the
   shares; the arm of every replayed user in the server's answers against a fresh `Assigner`.

Writes benchmarks/results/ab.json.

    python benchmarks/bench_ab.py [--dataset ml-100k] [--work /tmp/bench-ab] [--visits 5]
        [--aa-seeds 20] [--aa-resamples 1000] [--skip-ab] [--skip-aa]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from rich.console import Console

from recstack.data.loading import load_dataset
from recstack.experiments import Assigner, ExperimentConfig
from recstack.experiments.replay import Population, ReplayConfig, replay
from recstack.experiments.report import report_table, verdict
from recstack.testing import ServerProcess, free_port

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
KEY = "bench-key"
POPULAR_ONLY = {
    "sources": [{"name": "popular", "kind": "popular", "quota": 300}],
    "rank": {"ranker": "recall"},
}


def _release(work: Path, dataset: str, pop: Population, console: Console) -> tuple[Path, float]:
    """The default pipeline built from the split's train part (reused when built before)."""
    from recstack.release.build import BuildConfig, build
    from recstack.release.registry import Registry

    releases = work / "releases"
    reg = Registry(releases) if releases.is_dir() else None
    if reg is not None and reg.channel("production").current is not None:
        console.print(f"reusing release {reg.channel('production').current} in {releases}")
        return releases, 0.0
    train_dir = work / "train"
    if train_dir.exists():
        shutil.rmtree(train_dir)
    pop.train.save(train_dir)
    cfg = BuildConfig.default()
    cfg = cfg.model_copy(
        update={
            "dataset": cfg.dataset.model_copy(update={"source": str(train_dir)}),
            "evaluation": cfg.evaluation.model_copy(update={"enabled": False, "report": False}),
        }
    )
    console.print(f"building the default pipeline on the train part of {dataset} (temporal split) ...")
    t0 = time.perf_counter()
    m = build(cfg, releases)
    Registry(releases).promote(m.id, "production")
    return releases, time.perf_counter() - t0


def _port() -> int:
    """A free port of this helper's range (18600-18699), else any free port."""
    import socket

    for port in range(18600, 18700):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    return free_port()


def _experiment(name: str, salt: str, arms: list[dict[str, Any]]) -> dict[str, Any]:
    return {"name": name, "salt": salt, "k": 10, "window_s": 3600, "arms": arms}


#: the treatment arm of ``--treatment``: the default two-stage model, or recent popularity (the
#: strongest baseline of the temporal protocol: a known-better arm that checks the test's power)
TREATMENTS: dict[str, dict[str, Any]] = {
    "two_stage": {"name": "two_stage", "share": 1},
    "trending": {
        "name": "trending",
        "share": 1,
        "model": "recall",
        "pipeline": {
            "sources": [{"name": "trending", "kind": "trending", "quota": 300}],
            "trending_days": 30,
        },
    },
}


def _ab(
    work: Path,
    releases: Path,
    pop: Population,
    rcfg: ReplayConfig,
    console: Console,
    treatment: str = "two_stage",
) -> dict[str, Any]:
    for d in ("events", "experiments"):
        shutil.rmtree(work / d, ignore_errors=True)
    exp = _experiment(
        f"ab-popularity-vs-{treatment.replace('_', '-')}",
        "ab-1",
        [
            {"name": "popularity", "share": 1, "model": "recall", "pipeline": POPULAR_ONLY},
            TREATMENTS[treatment],
        ],
    )
    port = _port()
    with (
        ServerProcess(releases, port=port, args=["--api-key", KEY], timeout=600) as srv,
        httpx.Client(base_url=srv.url, timeout=60.0) as c,
    ):
        r = c.post("/admin/experiments", json=exp, headers={"X-API-Key": KEY})
        r.raise_for_status()
        if not r.json()["live"]:
            raise RuntimeError(f"experiment not live: {r.json()['error']}")
        console.print(f"A/B through {srv.url}: {len(pop.future)} users x {rcfg.visits} visits ...")
        stats = replay(c, pop, rcfg)
        time.sleep(1.0)  # the last impressions reach the log (the writer thread)
        rep = c.get(f"/v1/experiments/{exp['name']}/report").json()
        html = c.get(f"/v1/experiments/{exp['name']}/report", params={"format": "html"}).text
        metrics = c.get("/metrics").text
    suffix = "" if treatment == "two_stage" else f"_{treatment}"
    (RESULTS / f"ab_report{suffix}.html").write_text(html, encoding="utf-8")
    cfg = ExperimentConfig.from_config(exp)
    assign = Assigner(cfg)
    mismatch = sum(stats.arms[u] != assign(u) for u in stats.arms)
    console.print(report_table(rep))
    console.print(verdict(rep))
    drift = [ln for ln in metrics.splitlines() if ln.startswith("recstack_drift_psi")]
    return {
        "server": "recstack serve (1 worker), real HTTP",
        "experiment": exp,
        "replay": stats.as_dict(),
        "arm_mismatches_vs_assigner": mismatch,
        "report": {
            k: rep.get(k)
            for k in (
                "arms",
                "tests",
                "winner",
                "secondary",
                "segments",
                "srm",
                "verdict",
                "control",
                "level",
            )
        },
        "drift_after_ab": drift,
    }


def _aa(releases: Path, pop: Population, rcfg: ReplayConfig, seeds: int, console: Console) -> dict[str, Any]:
    from fastapi.testclient import TestClient

    from recstack.events import open_log
    from recstack.serving.api.app import create_app
    from recstack.serving.settings import ServingSettings

    rows = []
    events_last = None
    for seed in range(seeds):
        with tempfile.TemporaryDirectory(prefix="bench-aa-") as tmp:
            settings = ServingSettings(
                releases_dir=releases,
                api_key=KEY,
                event_log=f"sqlite:///{tmp}/events.db",
                experiments_dir=Path(tmp) / "experiments",
                ranker_prewarm=False,
                threads=1,
            )
            exp = _experiment(f"aa-{seed}", f"aa-salt-{seed}", [{"name": "a"}, {"name": "b"}])
            t0 = time.perf_counter()
            with TestClient(create_app(settings)) as c:
                r = c.post("/admin/experiments", json=exp, headers={"X-API-Key": KEY})
                assert r.status_code == 201 and r.json()["live"], r.text
                stats = replay(
                    c,
                    pop,
                    ReplayConfig(visits=rcfg.visits, k=rcfg.k, eta=rcfg.eta, seed=1000 + seed, concurrency=1),
                )
                deadline = time.monotonic() + 10
                log = open_log(settings.event_log)
                assert log is not None
                while time.monotonic() < deadline:  # every impression written
                    if log.to_frame().filter(log.to_frame()["type"] == "impression").height >= stats.requests:
                        break
                    time.sleep(0.1)
                rep = c.get(f"/v1/experiments/{exp['name']}/report").json()
                if seed == seeds - 1:
                    events_last = log.to_frame()
            row = {
                "seed": seed,
                "users": {a: rep["arms"][a]["users"] for a in ("a", "b")},
                "ctr": {a: rep["arms"][a]["ctr"]["value"] for a in ("a", "b")},
                "p_ctr": rep["tests"]["b"]["ctr"]["p_value"],
                "p_hit_rate": rep["tests"]["b"]["hit_rate"]["p_value"],
                "p_mean_rating": rep["tests"]["b"]["mean_rating"]["p_value"],
                "srm_p": rep["srm"]["p_value"],
                "seconds": round(time.perf_counter() - t0, 1),
            }
            rows.append(row)
            console.print(
                f"A/A seed {seed:2d}: CTR a {row['ctr']['a']:.4f} b {row['ctr']['b']:.4f}  "
                f"p(CTR) {row['p_ctr']:.3f}  p(hit-rate) {row['p_hit_rate']:.3f}  ({row['seconds']} s)"
            )
    fp_ctr = sum(r["p_ctr"] < 0.05 for r in rows)
    fp_hit = sum(r["p_hit_rate"] < 0.05 for r in rows)
    return {
        "seeds": seeds,
        "runner": "in process (starlette TestClient over the ASGI app), a fresh event log per seed",
        "false_positives_ctr": fp_ctr,
        "false_positives_hit_rate": fp_hit,
        "no_difference_ctr": seeds - fp_ctr,
        "no_difference_hit_rate": seeds - fp_hit,
        "rows": rows,
        "_events_last": events_last,
    }


def _resample(events: Any, n: int, console: Console) -> dict[str, Any]:
    """Re-randomise the users of one logged A/A run by ``n`` new salts: both arms served the same
    pipeline, so a user's impressions and clicks do not depend on the arm; each salt re-draws the arms
    from the users' hashes and tests the CTR difference (the per-user sums are computed once)."""
    from scipy import stats

    from recstack.experiments.analysis import attribute, per_user, ratio_estimate, shown_items

    shown = shown_items(events)
    att = attribute(events, shown, 3600)
    users = per_user(shown.with_columns(arm=None), att.with_columns(arm=None), 10)
    ids = users["user_id"].to_list()
    shown_n, clicks = users["shown"].to_numpy(), users["clicks"].to_numpy()
    ps = []
    for s in range(n):
        cfg = ExperimentConfig.from_config(
            _experiment("resample", f"resample-{s}", [{"name": "a"}, {"name": "b"}])
        )
        assign = Assigner(cfg)
        in_b = np.array([assign(u) == "b" for u in ids])
        ea = ratio_estimate(clicks[~in_b], shown_n[~in_b])
        eb = ratio_estimate(clicks[in_b], shown_n[in_b])
        z = (eb.value - ea.value) / math.hypot(ea.se, eb.se)
        ps.append(float(2 * stats.norm.sf(abs(z))))
    arr = np.asarray(ps)
    out = {
        "resamples": n,
        "users": len(ids),
        "false_positive_rate_ctr": float(np.mean(arr < 0.05)),
        "ks_uniform_p": float(stats.kstest(arr, "uniform").pvalue),
        "p_deciles": np.histogram(arr, bins=10, range=(0, 1))[0].tolist(),
    }
    console.print(
        f"A/A re-randomisation x{n}: p < 0.05 in {out['false_positive_rate_ctr']:.1%}, "
        f"KS p {out['ks_uniform_p']:.3f}"
    )
    return out


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _memory_probe(releases: Path) -> dict[str, Any]:
    """RSS of one worker's serving state, of an arm on the same release with its own pipeline, and
    of a second copy of the release (what an arm on another release costs per worker)."""
    import gc

    from recstack.experiments import ExperimentConfig
    from recstack.serving._experiments import OnlineRuntime
    from recstack.serving._state import StateHolder, default_loader
    from recstack.serving.settings import ServingSettings

    settings = ServingSettings(releases_dir=releases, ranker_prewarm=False, event_log=None, threads=1)
    holder = StateHolder(settings, default_loader(settings))
    r0 = _rss_mb()
    base = holder.load("production")
    r1 = _rss_mb()
    rt = OnlineRuntime(holder=holder, store=None)
    exp = ExperimentConfig.from_config(
        _experiment("m", "m", [{"name": "pop", "model": "recall", "pipeline": POPULAR_ONLY}, {"name": "b"}])
    )
    rt._build_arm(exp, exp.arms[0], base)
    r2 = _rss_mb()
    from recstack.serving._state import build_state

    second = build_state(holder.loader("production"), settings, None)
    gc.collect()
    r3 = _rss_mb()
    del second
    # per-answer cost of the experiment / monitoring layer (route + metrics + impression queued)
    from recstack.events import open_log
    from recstack.serving._events import EventSink
    from recstack.serving.pipeline import RecRequest

    with tempfile.TemporaryDirectory() as tmp:
        sink = EventSink(open_log(f"sqlite:///{tmp}/ev.db"))  # type: ignore[arg-type]
        store_dir = Path(tmp) / "exp"
        from recstack.experiments import ExperimentStore

        ExperimentStore(store_dir).create(exp)
        rt2 = OnlineRuntime(holder=holder, store=ExperimentStore(store_dir))
        rt2.refresh()
        users = [str(u) for u in base.pipeline.catalog.dataset.user_vocab.ids.to_list()[:500]]
        results = [base.pipeline.recommend(RecRequest(user_id=u, k=10, model="recall")) for u in users]
        t0 = time.perf_counter()
        for u, res in zip(users * 4, results * 4, strict=True):
            req = RecRequest(user_id=u, k=10)
            routed = rt2.route(base, req)
            rt2.answered(base, res, user_id=u, request_id="r", routed=routed, sink=sink)
        per_answer = (time.perf_counter() - t0) / (4 * len(users))
        t0 = time.perf_counter()
        for u in users:
            base.pipeline.recommend(RecRequest(user_id=u, k=10))
        per_rec = (time.perf_counter() - t0) / len(users)
        sink.close()
    return {
        "answer_overhead_us": round(per_answer * 1e6, 1),
        "recommend_default_model_us": round(per_rec * 1e6, 1),
        "worker_with_release_mb": round(r1, 1),
        "release_state_mb": round(r1 - r0, 1),
        "arm_same_release_own_pipeline_mb": round(r2 - r1, 1),
        "arm_second_release_copy_mb": round(r3 - r2, 1),
        "note": "RSS of one process (VmRSS); the ranker memo (ranker_memo_mb) grows on top with traffic",
    }


def _assignment(console: Console) -> dict[str, Any]:
    ids = [str(i) for i in range(100_000)]
    out: dict[str, Any] = {}
    for name, spec in {
        "50/50": {"arms": [{"name": "a"}, {"name": "b"}]},
        "holdout 10% + 30/60": {
            "arms": [{"name": "a", "share": 1}, {"name": "b", "share": 2}],
            "holdout": 0.1,
        },
    }.items():
        cfg = ExperimentConfig.from_config({"name": "assign", "salt": "bench", **spec})
        t0 = time.perf_counter()
        assign = Assigner(cfg)
        counts = assign.counts(ids)
        secs = time.perf_counter() - t0
        again = Assigner(cfg)
        sticky = all(assign(u) == again(u) for u in ids)
        shares = cfg.shares()
        dev = {a: counts[a] / len(ids) - shares[a] for a in shares}
        out[name] = {
            "counts": counts,
            "shares": shares,
            "max_abs_deviation": max(abs(v) for v in dev.values()),
            "deviation": dev,
            "sticky": sticky,
            "us_per_id": round(secs / len(ids) * 1e6, 2),
        }
        dev_max = out[name]["max_abs_deviation"]
        console.print(f"assignment {name}: {counts}, max deviation {dev_max:.4f}, sticky {sticky}")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="ml-100k")
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "bench-ab")
    ap.add_argument("--visits", type=int, default=5)
    ap.add_argument(
        "--test-fraction",
        type=float,
        default=0.1,
        help="held-out share of the temporal split (protocol: 0.1)",
    )
    ap.add_argument("--eta", type=float, default=1.0)
    ap.add_argument("--aa-seeds", type=int, default=20)
    ap.add_argument("--aa-visits", type=int, default=None, help="visits of the A/A runs (default --visits)")
    ap.add_argument("--aa-resamples", type=int, default=1000)
    ap.add_argument("--skip-ab", action="store_true")
    ap.add_argument("--treatment", choices=sorted(TREATMENTS), default="two_stage")
    ap.add_argument("--skip-aa", action="store_true")
    ap.add_argument("--out", type=Path, default=RESULTS / "ab.json")
    ap.add_argument("--memory-probe", type=Path, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.memory_probe is not None:  # run in a fresh process by main()
        print(json.dumps(_memory_probe(args.memory_probe)))
        return
    console = Console()
    args.work.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()

    ds = load_dataset(args.dataset)
    pop = Population.from_split(ds, test_fraction=args.test_fraction)
    if args.test_fraction != 0.1:
        args.work = args.work.with_name(f"{args.work.name}-tf{args.test_fraction:g}")
        args.work.mkdir(parents=True, exist_ok=True)
    console.print(f"{args.dataset}: {len(pop.future)} test users ({len(pop.warm)} known to the release)")
    releases, build_s = _release(args.work, args.dataset, pop, console)
    rcfg = ReplayConfig(visits=args.visits, k=10, eta=args.eta, seed=0, concurrency=4)

    prev: dict[str, Any] = json.loads(args.out.read_text()) if args.out.is_file() else {}
    result: dict[str, Any] = {
        "benchmark": "replay A/B",
        "dataset": args.dataset,
        "population": {
            "protocol": f"temporal (last {args.test_fraction:.0%} by time held out)",
            "users": len(pop.future),
            "warm_users": len(pop.warm),
            "future_interactions": int(sum(len(f) for f in pop.future.values())),
        },
        "click_model": (
            f"examine position p with probability (1/p)^{args.eta}; click if the item is in the user's "
            "future; then rate it"
        ),
        "visits_per_user": args.visits,
        "k": 10,
        "build_seconds": round(build_s, 1),
    }
    result["assignment"] = _assignment(console)
    import subprocess

    probe = subprocess.run(
        [sys.executable, __file__, "--memory-probe", str(releases)],
        capture_output=True,
        text=True,
        check=False,
    )
    result["memory"] = (
        json.loads(probe.stdout.strip().splitlines()[-1]) if probe.returncode == 0 else probe.stderr[-2000:]
    )
    console.print(f"memory: {result['memory']}")
    if not args.skip_ab:
        result["ab"] = _ab(args.work, releases, pop, rcfg, console, args.treatment)
    elif "ab" in prev:
        result["ab"] = prev["ab"]
    if not args.skip_aa:
        aa_cfg = ReplayConfig(visits=args.aa_visits or args.visits, k=10, eta=args.eta)
        aa = _aa(releases, pop, aa_cfg, args.aa_seeds, console)
        events = aa.pop("_events_last")
        result["aa"] = aa
        if args.aa_resamples and events is not None:
            result["aa_resampling"] = _resample(events, args.aa_resamples, console)
        console.print(
            f"A/A: no difference at 0.05 in {aa['no_difference_ctr']}/{aa['seeds']} seeds (CTR), "
            f"{aa['no_difference_hit_rate']}/{aa['seeds']} (hit-rate)"
        )
    elif "aa" in prev:
        result["aa"], result["aa_resampling"] = prev["aa"], prev.get("aa_resampling")
    result.update(
        seconds=round(time.perf_counter() - t_start, 1),
        cpus=os.cpu_count(),
        load_average_1m=os.getloadavg()[0],
        python=platform.python_version(),
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    from recstack.evaluation.report import to_jsonable

    args.out.write_text(json.dumps(to_jsonable(result), indent=2))
    console.print(f"-> {args.out}")


if __name__ == "__main__":
    sys.exit(main())
