"""Benchmark: the full recommendation pipeline over HTTP (BENCHMARKS.md "serving") and the
batch-served endpoints (issue 7).

``recstack serve --workers 2`` on a release (default: the ``production`` channel of
``--releases-dir``; build the default pipeline once with ``recstack build --releases-dir DIR
--promote`` and reuse it: its serving model is the two-stage NCF ranker), and a load generator in
other processes on the same machine (``wrk`` when installed, else benchmarks/_loadgen.py: asyncio
protocols on uvloop, a few tens of microseconds of CPU per request, its own CPU time reported).

Before the server starts, ``recstack batch users --k 100`` and ``recstack batch pairs --top 200
--k 10`` write the batch tables of the release into a SQLite file (``--batch-sink``; the server
reads it through ``RECSTACK_BATCH_SINK``). Phases, ``--seconds`` each:

0. the load generator alone against a canned-response stub server (its ceiling on this machine);
1. recommendations (the release's default model), closed loop, ``--connections`` connections;
2. ``/healthz`` (a trivial endpoint of the same server), closed loop: the ratio
   recommendations/s / healthz/s (target >= 25%); every phase also records the server's CPU time
   per request (its processes' user + system time from /proc), whose healthz / recommendations
   quotient is the same ratio without the machine's other work in it;
3. recommendations, open loop at ``--rate`` requests/s (latency from each request's due time, so
   queueing is counted): p50 / p99 (target p99 <= 15 ms at >= 300 requests/s);
4. ``model=recall`` (no ranker), closed loop (an extra row);
4b. recommendations again on a second server whose pipeline has the recall memo off
   (``recall_memo_mb = 0``: every request scores its history sources and searches the ANN index),
   closed loop: what the memo saves, for workloads where users rarely repeat (an extra row);
5. ``GET /v1/users/{id}/recommendations?source=batch``, closed loop, then open loop at ``--rate``;
6. ``GET /v1/pairs?a=&b=``, closed loop, then open loop at ``--rate`` (target p99 <= 5 ms);
7. (``--sequential``) recommendations on a third server whose pipeline adds the SASRec source (the
   release's ``sasrec`` retriever as a ``history`` source: its ONNX graph over the user's latest 50
   items from the history store, in time order) to the default sources, closed loop then open loop at
   ``--rate``. The release must hold a ``sasrec`` model (the quick fallback release gets one).

Request mix of the pipeline phases: users cycle over the release's users, k=10; every 4th request
adds a genre filter, every 10th an exclude list. Per-stage mean latencies come from the server's
Prometheus histograms. The machine's load average is recorded (other work on a shared machine makes
every figure slower). Writes benchmarks/results/serving.json.

    python benchmarks/bench_serving.py --releases-dir /tmp/bench-releases [--seconds 60] [--rate 300]
        [--connections 8] [--workers 2] [--loadgen auto|wrk|python] [--release ID|CHANNEL]
        [--batch-sink sqlite:///path.db [--reuse-batch]] [--skip-batch] [--skip-recall] [--sequential]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table

from recstack.testing import SMALL_MODELS, ServerProcess, build_small_release, free_port, recstack_command

HERE = Path(__file__).resolve().parent
TARGETS = {"p99_ms_at_rate": 15.0, "rate": 300.0, "ratio": 0.25, "batch_p99_ms": 5.0}


def prepare_release(
    releases_dir: Path | None, target: str, tmp: Path, extra_models: tuple[str, ...] = ()
) -> tuple[Path, str]:
    """(releases dir, release id): ``target`` in ``releases_dir`` (default: the Settings' dir), else
    a quick pop + itemknn + ease (+ ``extra_models``) release built into ``tmp`` (not the full pipeline:
    said in the JSON)."""
    from recstack.config import get_settings
    from recstack.errors import RecstackError
    from recstack.release.registry import Registry

    root = releases_dir or get_settings().releases_path()
    try:
        return root, Registry(root).resolve(target)
    except (RecstackError, OSError):
        if releases_dir is not None:
            raise
    root = tmp / "releases"
    return root, build_small_release(root, (*SMALL_MODELS, *extra_models))


def sequential_pipeline_toml(path: Path) -> Path:
    """A pipeline TOML: the default sources plus the SASRec history source (phase 7)."""
    from recstack.serving.pipeline import PipelineConfig

    text = ""
    for src in PipelineConfig().sources:
        text += f'[[sources]]\nname = "{src.name}"\nkind = "{src.kind}"\nquota = {src.quota}\n'
        text += f"recent = {src.recent}\n"
    text += '[[sources]]\nname = "sasrec"\nkind = "history"\nquota = 200\nrecent = 50\n'
    path.write_text(text)
    return path


def request_paths(root: Path, rid: str, n: int = 4000) -> dict[str, list[str]]:
    """Request paths of every phase: ``recs``, ``recall``, ``batch_users``, ``pairs`` (top-200 items)."""
    from recstack.release.loader import load
    from recstack.serving._catalog import build_catalog

    rel = load(rid, root, verify=False)
    ds = rel.dataset
    users = ds.user_vocab.ids.to_list()
    genres = sorted({g for gs in ds.item_genres() for g in gs if g and g != "unknown"})
    items = ds.item_vocab.ids.to_list()
    recs = []
    for i in range(n):
        p = f"/v1/users/{users[(i * 7919) % len(users)]}/recommendations?k=10"
        if i % 4 == 1 and len(genres) >= 2:
            p += f"&genres={genres[i % len(genres)]},{genres[(i + 3) % len(genres)]}"
        if i % 10 == 3:
            p += f"&exclude={items[i % len(items)]},{items[(i * 31) % len(items)]}"
        recs.append(p)
    top = [items[i] for i in build_catalog(ds).pop_order[:200].tolist()]
    pairs = []
    for i in range(n):
        a, b = top[(i * 37) % len(top)], top[(i * 101 + 1) % len(top)]
        if a == b:
            b = top[(top.index(a) + 1) % len(top)]
        pairs.append(f"/v1/pairs?a={a}&b={b}&k=10")
    batch_users = [f"/v1/users/{users[(i * 7919) % len(users)]}/recommendations?source=batch&k=10"
                   for i in range(n)]  # fmt: skip
    return {
        "recs": recs,
        "recall": [p + "&model=recall" for p in recs],
        "batch_users": batch_users,
        "pairs": pairs,
        "healthz": ["/healthz"],
    }


def write_batch_tables(root: Path, rid: str, sink: str) -> dict[str, Any]:
    """``recstack batch users --k 100`` and ``recstack batch pairs --top 200 --k 10`` into ``sink``."""
    out: dict[str, Any] = {}
    for kind, extra in (("users", ["--k", "100"]), ("pairs", ["--top", "200", "--k", "10"])):
        cmd = [*recstack_command(), "-q", "batch", kind, "--releases-dir", str(root), "--release", rid]
        cmd += [*extra, "--sink", sink]
        t0 = time.perf_counter()
        res = subprocess.run(cmd, capture_output=True, text=True)
        if res.returncode != 0:
            raise SystemExit(f"{' '.join(cmd)} failed:\n{res.stdout[-2000:]}\n{res.stderr[-2000:]}")
        line = next((ln for ln in reversed(res.stdout.splitlines()) if ln.startswith("{")), "{}")
        out[kind] = {**json.loads(line), "wall_seconds": round(time.perf_counter() - t0, 2)}
    return out


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 6e4}


def run_wrk(url: str, paths_file: Path, seconds: float, connections: int) -> dict[str, Any]:
    script = paths_file.with_suffix(".lua")
    script.write_text(
        f'local paths = {{}}\nfor line in io.lines("{paths_file}") do paths[#paths + 1] = line end\n'
        "local i = 0\nrequest = function()\n  i = i + 1\n"
        '  return wrk.format("GET", paths[(i % #paths) + 1])\nend\n'
    )
    cmd = ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--latency", "-s", str(script)]
    out = subprocess.run([*cmd, url], capture_output=True, text=True, check=True).stdout
    res: dict[str, Any] = {"tool": "wrk"}
    for q in ("50", "90", "99"):
        m = re.search(rf"^\s+{q}%\s+([\d.]+)(us|ms|s|m)\s*$", out, re.M)
        if m:
            res[f"p{q}_ms"] = float(m.group(1)) * _UNITS[m.group(2)]
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    res["requests_per_s"] = float(m.group(1)) if m else float("nan")
    m = re.search(r"(\d+) requests in", out)
    res["count"] = int(m.group(1)) if m else 0
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    res["non_2xx"] = int(m.group(1)) if m else 0
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    res["errors"] = sum(int(x) for x in m.groups()) if m else 0
    return res


def run_py(
    url: str, paths_file: Path, seconds: float, connections: int, rate: float | None, procs: int = 1
) -> dict[str, Any]:
    cmd = [sys.executable, str(HERE / "_loadgen.py"), "--url", url, "--paths", str(paths_file)]
    cmd += ["--seconds", str(seconds), "--connections", str(connections), "--procs", str(procs)]
    if rate is not None:
        cmd += ["--rate", str(rate)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return {"tool": "python-uvloop", **json.loads(out.strip().splitlines()[-1])}


def loadgen_ceiling(tmp: Path, seconds: float, connections: int) -> dict[str, Any]:
    """The Python generator alone: closed loop against a canned-response stub (own process)."""
    port = free_port()
    stub = subprocess.Popen(
        [sys.executable, str(HERE / "_loadgen.py"), "--stub-port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        pf = tmp / "stub.txt"
        pf.write_text("/healthz\n")
        return run_py(f"http://127.0.0.1:{port}", pf, seconds, connections, None)
    finally:
        stub.terminate()
        stub.wait(timeout=10)


def session_cpu_by_process(sid: int) -> dict[int, float]:
    """CPU seconds (user + system) used so far by each live process of session ``sid`` (the server
    and its workers: `ServerProcess` starts it in a new session), from /proc; empty elsewhere."""
    tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    out: dict[int, float] = {}
    for d in Path("/proc").glob("[0-9]*"):
        try:
            stat = (d / "stat").read_text()
        except OSError:
            continue
        f = stat[stat.rindex(")") + 2 :].split()  # fields after "pid (comm) "
        if int(f[3]) == sid:  # field 6: session id
            out[int(d.name)] = (int(f[11]) + int(f[12])) / tick  # fields 14, 15: utime, stime
    return out


def session_cpu_seconds(sid: int) -> float:
    """CPU seconds used so far by the live processes of session ``sid``; NaN elsewhere."""
    by = session_cpu_by_process(sid)
    return sum(by.values()) if by else float("nan")


def wait_idle(sid: int, *, threshold: float = 0.05, timeout: float = 300.0) -> float:
    """Wait until the processes of session ``sid`` use under ``threshold`` CPU seconds per second
    (two seconds in a row); returns the seconds waited."""
    t0 = time.monotonic()
    prev, quiet = session_cpu_seconds(sid), 0
    while time.monotonic() - t0 < timeout and quiet < 2:
        time.sleep(1.0)
        cur = session_cpu_seconds(sid)
        quiet = quiet + 1 if cur - prev < threshold else 0
        prev = cur
    return time.monotonic() - t0


def stage_means(metrics_text: str) -> dict[str, float]:
    sums: dict[str, float] = {}
    counts: dict[str, float] = {}
    for ln in metrics_text.splitlines():
        m = re.match(r'recstack_pipeline_stage_duration_seconds_(sum|count)\{stage="(\w+)"\} ([\d.e+-]+)', ln)
        if m:
            (sums if m.group(1) == "sum" else counts)[m.group(2)] = float(m.group(3))
    return {s: 1e3 * sums[s] / counts[s] for s in sums if counts.get(s)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=60.0, help="duration of each phase")
    ap.add_argument("--rate", type=float, default=300.0, help="open-loop request rate")
    ap.add_argument("--connections", type=int, default=8, help="closed-loop connections")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--release", default="production", help="release id or channel")
    ap.add_argument("--releases-dir", type=Path, default=None)
    ap.add_argument("--loadgen", choices=["auto", "wrk", "python"], default="auto")
    ap.add_argument("--batch-sink", default=None, help="sqlite:///path.db (default: a temp file)")
    ap.add_argument("--reuse-batch", action="store_true", help="do not rewrite the batch tables")
    ap.add_argument("--skip-batch", action="store_true")
    ap.add_argument("--skip-recall", action="store_true")
    ap.add_argument("--skip-memo-off", action="store_true", help="skip phase 4b (recall memo off)")
    ap.add_argument("--sequential", action="store_true", help="phase 7: with the SASRec source on")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "serving.json")
    a = ap.parse_args()
    con = Console(width=150)
    use_wrk = a.loadgen == "wrk" or (a.loadgen == "auto" and shutil.which("wrk") is not None)
    load_start = os.getloadavg()
    rows: list[tuple[str, dict[str, Any]]] = []
    result: dict[str, Any] = {}

    with tempfile.TemporaryDirectory(prefix="bench-serving-") as tmp_s:
        tmp = Path(tmp_s)
        root, rid = prepare_release(a.releases_dir, a.release, tmp, ("sasrec",) if a.sequential else ())
        files: dict[str, Path] = {}
        for name, paths in request_paths(root, rid).items():
            files[name] = tmp / f"{name}.txt"
            files[name].write_text("\n".join(paths) + "\n")
        sink = a.batch_sink or f"sqlite:///{tmp / 'batch.db'}"
        batch_jobs: dict[str, Any] = {}
        if not a.skip_batch and not a.reuse_batch:
            con.print(f"writing batch tables into {sink} (users top-100, pairs of the top-200 items)")
            batch_jobs = write_batch_tables(root, rid, sink)

        ceiling: dict[str, Any] | None = None
        if not use_wrk:
            con.print(f"phase 0: load generator alone vs a stub server, {min(a.seconds, 10):.0f} s")
            ceiling = loadgen_ceiling(tmp, min(a.seconds, 10.0), a.connections)

        prom = tmp / "prom"
        prom.mkdir()
        env = {"PROMETHEUS_MULTIPROC_DIR": str(prom), "RECSTACK_BATCH_SINK": sink}
        with ServerProcess(root, release=rid, workers=a.workers, env=env) as srv:
            url = srv.url
            info = httpx.get(f"{url}/v1/release").json()
            con.print(f"release {rid}: sources {info['sources']}, model {info['default_model']}, "
                      f"{a.workers} workers")  # fmt: skip

            assert srv.proc is not None
            sid = srv.proc.pid

            def server_cpu(run: Any) -> dict[str, Any]:
                """``run()``'s result plus the server's CPU microseconds per request (load-independent:
                other work on the machine slows requests down but does not add to their CPU time)."""
                c0 = session_cpu_by_process(sid)
                res: dict[str, Any] = run()
                c1 = session_cpu_by_process(sid)
                per = sorted((c1[p] - c0.get(p, 0.0) for p in c1), reverse=True)
                used = sum(per) if per else float("nan")
                res["server_cpu_us_per_request"] = 1e6 * used / max(int(res.get("count", 0)), 1)
                # how the work spread over the server's processes (SO_REUSEPORT hashes each connection
                # to a worker: an uneven split of the closed loop's connections shows here)
                res["server_cpu_share_by_process"] = [round(c / used, 3) for c in per] if used else []
                return res

            def closed(name: str) -> dict[str, Any]:
                if use_wrk:
                    return server_cpu(lambda: run_wrk(url, files[name], a.seconds, a.connections))
                return server_cpu(lambda: run_py(url, files[name], a.seconds, a.connections, None))

            def paced(name: str) -> dict[str, Any]:
                return server_cpu(lambda: run_py(url, files[name], a.seconds, max(a.connections, 32), a.rate))

            # the workers fill their ranker memo in the background after loading (prewarm): wait
            # until the server is idle so that no phase pays for it
            waited = wait_idle(sid)
            con.print(f"server idle after {waited:.0f} s (background prewarm done)")
            # warm-up: every worker touches every code path
            for name in ("recs", "recall", *(() if a.skip_batch else ("batch_users", "pairs"))):
                run_py(url, files[name], min(3.0, a.seconds), a.connections, None)

            model = info["default_model"]
            con.print(f"phase 1: recommendations ({model}), closed loop, {a.connections} connections")
            recs = closed("recs")
            rows.append((f"recommendations ({model}), {a.connections} conns", recs))
            con.print("phase 2: /healthz, closed loop")
            health = closed("healthz")
            rows.append((f"/healthz, {a.connections} conns", health))
            con.print(f"phase 3: recommendations ({model}), open loop at {a.rate:.0f} req/s")
            recs_paced = paced("recs")
            rows.append((f"recommendations ({model}) @ {a.rate:.0f}/s open loop", recs_paced))
            result.update(
                recommendations_closed_loop=recs,
                healthz_closed_loop=health,
                recommendations_open_loop={"target_rate": a.rate, **recs_paced},
            )
            metrics_text = httpx.get(f"{url}/metrics").text
            stages = stage_means(metrics_text)
            memo_re = r'recstack_ranker_memo_lookups_total\{outcome="(\w+)"\} ([\d.e+-]+)'
            memo = {m.group(1): float(m.group(2)) for m in re.finditer(memo_re, metrics_text)}
            if not a.skip_recall:
                con.print("phase 4: recommendations (model=recall), closed loop")
                recall = closed("recall")
                rows.append((f"recommendations (model=recall), {a.connections} conns", recall))
                result["recall_only_closed_loop"] = recall
            if not a.skip_batch:
                batch: dict[str, Any] = {}
                for name, label in (("batch_users", "users/{id}/recommendations?source=batch"),
                                    ("pairs", "/v1/pairs?a=&b=")):  # fmt: skip
                    con.print(f"phase 5/6: {label}, closed loop then open loop at {a.rate:.0f} req/s")
                    c = closed(name)
                    o = paced(name)
                    rows.append((f"{label}, {a.connections} conns", c))
                    rows.append((f"{label} @ {a.rate:.0f}/s open loop", o))
                    batch[name] = {"closed_loop": c, "open_loop": {"target_rate": a.rate, **o}}
                result["batch_endpoints"] = batch
                result["batch_jobs"] = batch_jobs
                result["batch_sink"] = "temporary sqlite file" if a.batch_sink is None else a.batch_sink

        if not a.skip_memo_off:
            con.print("phase 4b: recommendations with the recall memo off (a second server), closed loop")
            toml = tmp / "recall_memo_off.toml"
            toml.write_text("recall_memo_mb = 0\n")
            env_off = {**env, "RECSTACK_SERVE_PIPELINE": str(toml)}
            with ServerProcess(root, release=rid, workers=a.workers, env=env_off) as srv:
                # closed() / server_cpu() read url and sid: from here on they measure this server
                assert srv.proc is not None
                url, sid = srv.url, srv.proc.pid
                wait_idle(sid)
                run_py(url, files["recs"], min(3.0, a.seconds), a.connections, None)
                off = closed("recs")
                off["recommendations_to_healthz_ratio"] = off["requests_per_s"] / health["requests_per_s"]
                off["server_cpu_ratio"] = (
                    health["server_cpu_us_per_request"] / off["server_cpu_us_per_request"]
                )
                rows.append((f"recommendations ({model}), recall memo off, {a.connections} conns", off))
                result["recommendations_recall_memo_off_closed_loop"] = off

        if a.sequential:
            con.print("phase 7: recommendations with the SASRec source on (a third server)")
            env_seq = {**env, "RECSTACK_SERVE_PIPELINE": str(sequential_pipeline_toml(tmp / "seq.toml"))}
            with ServerProcess(root, release=rid, workers=a.workers, env=env_seq) as srv:
                assert srv.proc is not None
                url, sid = srv.url, srv.proc.pid
                sources = httpx.get(f"{url}/v1/release").json()["sources"]
                if "sasrec" not in str(sources):
                    raise SystemExit(
                        f"release {rid} has no sasrec model (sources {sources}): build one with it"
                    )
                wait_idle(sid)
                run_py(url, files["recs"], min(3.0, a.seconds), a.connections, None)
                seq_c = closed("recs")
                seq_o = paced("recs")
                rows.append((f"recommendations ({model}) + SASRec source, {a.connections} conns", seq_c))
                rows.append((f"recommendations ({model}) + SASRec source @ {a.rate:.0f}/s open loop", seq_o))
                result["sequential_source"] = {
                    "sources": sources,
                    "closed_loop": seq_c,
                    "open_loop": {"target_rate": a.rate, **seq_o},
                }

    load_end = os.getloadavg()
    ratio = recs["requests_per_s"] / health["requests_per_s"] if health["requests_per_s"] else float("nan")
    # the same ratio from server CPU per request (what it would be with the server alone on its cores)
    cpu_ratio = health["server_cpu_us_per_request"] / recs["server_cpu_us_per_request"]
    met = {
        "p99_at_rate": recs_paced["p99_ms"] <= TARGETS["p99_ms_at_rate"]
        and recs_paced["requests_per_s"] >= 0.98 * TARGETS["rate"]
        and a.rate >= TARGETS["rate"],
        "ratio": ratio >= TARGETS["ratio"],
    }
    if "batch_endpoints" in result:
        for name, r in result["batch_endpoints"].items():
            met[f"{name}_p99"] = r["open_loop"]["p99_ms"] <= TARGETS["batch_p99_ms"]
    out = {
        "benchmark": "serving",
        "protocol": (
            "BENCHMARKS.md serving: full pipeline over HTTP (recstack serve, uvicorn workers), load "
            "generator on the same machine; closed loop = C keep-alive connections back to back; open "
            "loop = requests due every 1/rate s, latency from the due time"
        ),
        "release": rid,
        "sources": info["sources"],
        "model": info["default_model"],
        "workers": a.workers,
        "seconds_per_phase": a.seconds,
        "connections": a.connections,
        "load_generator": "wrk" if use_wrk else "python-uvloop (benchmarks/_loadgen.py)",
        "load_generator_ceiling": ceiling,
        **result,
        "recommendations_to_healthz_ratio": ratio,
        "server_cpu_ratio": cpu_ratio,
        "stage_mean_ms": stages,
        "ranker_memo_lookups": memo,
        "targets": TARGETS,
        "targets_met": met,
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "loadavg_start": [round(x, 2) for x in load_start],
            "loadavg_end": [round(x, 2) for x in load_end],
            "under_load": max(load_start[0], load_end[0]) > 1.5,
        },
        "note": (
            "2 cores shared by the server workers, the load generator and, on a shared machine, other "
            "work: the load average is recorded at start and end (above ~1.5 the figures are 'under load')"
        ),
    }
    t = Table(title=f"serving ({a.workers} workers, {a.seconds:.0f} s per phase, {out['load_generator']})")
    cols = ("phase", "requests/s", "p50 ms", "p90 ms", "p99 ms", "errors", "non-2xx")
    cols += ("gen µs/req", "server µs/req")
    for col in cols:
        t.add_column(col, justify="right" if col != "phase" else "left")
    if ceiling is not None:
        rows.insert(0, ("load generator alone vs stub", ceiling))
    for name, r in rows:
        t.add_row(
            name,
            f"{r['requests_per_s']:.0f}",
            f"{r.get('p50_ms', float('nan')):.2f}",
            f"{r.get('p90_ms', float('nan')):.2f}",
            f"{r.get('p99_ms', float('nan')):.2f}",
            str(r.get("errors", 0)),
            str(r.get("non_2xx", 0)),
            f"{r.get('cpu_us_per_request', float('nan')):.0f}",
            f"{r.get('server_cpu_us_per_request', float('nan')):.0f}",
        )
    con.print(t)
    con.print(f"recommendations/s / healthz/s = {ratio:.1%} (target >= 25%); from server CPU per "
              f"request: {cpu_ratio:.1%}")  # fmt: skip
    if "recommendations_recall_memo_off_closed_loop" in result:
        off = result["recommendations_recall_memo_off_closed_loop"]
        con.print(f"with the recall memo off: {off['recommendations_to_healthz_ratio']:.1%} (server CPU: "
                  f"{off['server_cpu_ratio']:.1%})")  # fmt: skip
    share = result["recommendations_closed_loop"].get("server_cpu_share_by_process") or []
    con.print("server CPU share by process, recommendations closed loop: "
              + ", ".join(f"{x:.0%}" for x in share))  # fmt: skip
    con.print("stage mean ms: " + ", ".join(f"{k} {v:.3f}" for k, v in stages.items()))
    if memo:
        hit = memo.get("hit", 0) / max(sum(memo.values()), 1)
        con.print(f"ranker memo lookups: {memo} (hit rate {hit:.1%})")
    con.print(f"targets met: {met}; load average start {load_start[0]:.2f}, end {load_end[0]:.2f}")
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(out, indent=2) + "\n")
    con.print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
