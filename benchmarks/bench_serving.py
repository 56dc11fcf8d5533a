"""Benchmark: the full recommendation pipeline over HTTP (BENCHMARKS.md "serving").

`recstack serve --workers 2` on a release (default: the ``production`` channel of the releases dir;
without one a quick ML-100K release with pop + itemknn + ease is built into a temp dir), and a load
generator in another process on the same machine (``wrk`` when installed, else benchmarks/_loadgen.py):

1. recommendations, closed loop (C connections): requests/s, p50 / p99 latency;
2. ``/healthz`` (a trivial endpoint of the same server), closed loop: requests/s; the ratio
   recommendations/s / healthz/s (target >= 25%);
3. recommendations, open loop at ``--rate`` requests/s (latency from the scheduled send time, so
   queueing is counted): p50 / p99 (target p99 <= 15 ms at >= 300 requests/s).

Request mix: users cycle over the release's users, k=10; every 4th request adds a genre filter,
every 10th an exclude list. Per-stage mean latencies come from the server's Prometheus histograms.
Writes benchmarks/results/serving.json.

    python benchmarks/bench_serving.py [--seconds 60] [--rate 300] [--connections 8]
                                       [--loadgen auto|wrk|python] [--release ID] [--releases-dir DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table

HERE = Path(__file__).resolve().parent
QUICK_BUILD = """
[dataset]
source = "ml-100k"
[evaluation]
enabled = false
report = false
[[models]]
name = "pop"
[[models]]
name = "itemknn"
[[models]]
name = "ease"
[index]
backend = "none"
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def prepare_release(releases_dir: Path | None, target: str, tmp: Path) -> tuple[Path, str]:
    from recstack.config import get_settings
    from recstack.errors import RecstackError
    from recstack.release.registry import Registry

    root = releases_dir or get_settings().releases_path()
    try:
        return root, Registry(root).resolve(target)
    except (RecstackError, OSError):
        pass
    from recstack.release.build import BuildConfig, build

    root = tmp / "releases"
    cfg = tmp / "build.toml"
    cfg.write_text(QUICK_BUILD)
    manifest = build(BuildConfig.from_toml(cfg), root)
    Registry(root).promote(manifest.id, "production")
    return root, manifest.id


def request_paths(root: Path, rid: str, n: int = 4000) -> list[str]:
    from recstack.release.loader import load

    rel = load(rid, root, verify=False)
    users = rel.dataset.user_vocab.ids.to_list()
    genres = sorted({g for gs in rel.dataset.item_genres() for g in gs if g and g != "unknown"})
    items = rel.dataset.item_vocab.ids.to_list()
    out = []
    for i in range(n):
        p = f"/v1/users/{users[(i * 7919) % len(users)]}/recommendations?k=10"
        if i % 4 == 1 and len(genres) >= 2:
            p += f"&genres={genres[i % len(genres)]},{genres[(i + 3) % len(genres)]}"
        if i % 10 == 3:
            p += f"&exclude={items[i % len(items)]},{items[(i * 31) % len(items)]}"
        out.append(p)
    return out


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 6e4}


def run_wrk(url: str, paths_file: Path, seconds: float, connections: int) -> dict[str, Any]:
    script = paths_file.with_suffix(".lua")
    script.write_text(
        f'local paths = {{}}\nfor line in io.lines("{paths_file}") do paths[#paths + 1] = line end\n'
        "local i = 0\nrequest = function()\n  i = i + 1\n"
        '  return wrk.format("GET", paths[(i % #paths) + 1])\nend\n'
    )
    out = subprocess.run(
        [
            "wrk",
            "-t1",
            f"-c{connections}",
            f"-d{max(1, round(seconds))}s",
            "--latency",
            "-s",
            str(script),
            url,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
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
    url: str, paths_file: Path, seconds: float, connections: int, rate: float | None
) -> dict[str, Any]:
    cmd = [sys.executable, str(HERE / "_loadgen.py"), "--url", url, "--paths", str(paths_file)]
    cmd += ["--seconds", str(seconds), "--connections", str(connections)]
    if rate is not None:
        cmd += ["--rate", str(rate)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return {"tool": "python-asyncio", **json.loads(out.strip().splitlines()[-1])}


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
    ap.add_argument("--seconds", type=float, default=60.0, help="duration of each of the 3 phases")
    ap.add_argument("--rate", type=float, default=300.0, help="open-loop request rate of phase 3")
    ap.add_argument("--connections", type=int, default=8)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--release", default="production", help="release id or channel")
    ap.add_argument("--releases-dir", type=Path, default=None)
    ap.add_argument("--loadgen", choices=["auto", "wrk", "python"], default="auto")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "serving.json")
    a = ap.parse_args()
    con = Console()
    use_wrk = a.loadgen == "wrk" or (a.loadgen == "auto" and shutil.which("wrk") is not None)

    with tempfile.TemporaryDirectory(prefix="bench-serving-") as tmp_s:
        tmp = Path(tmp_s)
        root, rid = prepare_release(a.releases_dir, a.release, tmp)
        paths_file = tmp / "paths.txt"
        paths_file.write_text("\n".join(request_paths(root, rid)) + "\n")
        (tmp / "health.txt").write_text("/healthz\n")
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        prom = tmp / "prom"
        prom.mkdir()
        env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(prom), "RECSTACK_SERVE_LOG_JSON": "false"}
        exe = Path(sys.executable).parent / "recstack"
        cmd = [str(exe), "-q", "serve", "--releases-dir", str(root), "--release", rid]
        cmd += ["--port", str(port), "--workers", str(a.workers)]
        server = subprocess.Popen(
            cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True
        )
        try:
            deadline = time.monotonic() + 180
            while True:
                try:
                    if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if server.poll() is not None or time.monotonic() > deadline:
                    err = server.stderr.read().decode()[-2000:] if server.stderr else ""
                    raise SystemExit(f"server did not start: {err}")
                time.sleep(0.3)
            info = httpx.get(f"{url}/v1/release").json()
            src, model = info["sources"], info["default_model"]
            con.print(f"release {rid}: sources {src}, model {model}, {a.workers} workers")
            # warm-up: every worker has loaded the release; touch the code paths
            run_py(url, paths_file, min(3.0, a.seconds), a.connections, None)

            def closed(pf: Path) -> dict[str, Any]:
                return (
                    run_wrk(url, pf, a.seconds, a.connections)
                    if use_wrk
                    else run_py(url, pf, a.seconds, a.connections, None)
                )

            con.print(
                f"phase 1: recommendations, closed loop, {a.connections} connections, {a.seconds:.0f} s"
            )
            recs = closed(paths_file)
            con.print(f"phase 2: /healthz, closed loop, {a.seconds:.0f} s")
            health = closed(tmp / "health.txt")
            con.print(f"phase 3: recommendations, open loop at {a.rate:.0f} req/s, {a.seconds:.0f} s")
            paced = run_py(url, paths_file, a.seconds, max(a.connections, 32), a.rate)
            stages = stage_means(httpx.get(f"{url}/metrics").text)
        finally:
            os.killpg(server.pid, signal.SIGTERM)
            try:
                server.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)
                server.wait()

    ratio = recs["requests_per_s"] / health["requests_per_s"] if health["requests_per_s"] else float("nan")
    result = {
        "benchmark": "serving",
        "protocol": "BENCHMARKS.md serving: full pipeline over HTTP, load generator on the same machine",
        "release": rid,
        "sources": info["sources"],
        "model": info["default_model"],
        "workers": a.workers,
        "seconds_per_phase": a.seconds,
        "connections": a.connections,
        "load_generator": "wrk" if use_wrk else "python-asyncio",
        "recommendations_closed_loop": recs,
        "healthz_closed_loop": health,
        "recommendations_open_loop": {"target_rate": a.rate, **paced},
        "recommendations_to_healthz_ratio": ratio,
        "stage_mean_ms": stages,
        "targets": {"p99_ms_at_rate": 15.0, "rate": 300.0, "ratio": 0.25},
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "note": "2 cores shared with other work while measured: absolute figures are noisy",
    }
    t = Table(title=f"serving ({a.workers} workers, {a.seconds:.0f} s per phase, {result['load_generator']})")
    for col in ("phase", "requests/s", "p50 ms", "p90 ms", "p99 ms", "errors", "non-2xx"):
        t.add_column(col, justify="right" if col != "phase" else "left")
    for name, r in (
        (f"recommendations, {a.connections} conns", recs),
        (f"/healthz, {a.connections} conns", health),
        (f"recommendations @ {a.rate:.0f}/s open loop", paced),
    ):
        t.add_row(
            name,
            f"{r['requests_per_s']:.0f}",
            f"{r.get('p50_ms', float('nan')):.2f}",
            f"{r.get('p90_ms', float('nan')):.2f}",
            f"{r.get('p99_ms', float('nan')):.2f}",
            str(r.get("errors", 0)),
            str(r.get("non_2xx", 0)),
        )
    con.print(t)
    con.print(f"recommendations/s / healthz/s = {ratio:.1%} (target >= 25%)")
    con.print("stage mean ms: " + ", ".join(f"{k} {v:.3f}" for k, v in stages.items()))
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(result, indent=2) + "\n")
    con.print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
