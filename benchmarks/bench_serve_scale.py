"""Benchmark (issue 23): serving a 62k-item release with Redis as the feature store and a Milvus
server as the index, 2 workers, at 100 requests/s.

Protocol. A synthetic set of ML-25M's catalogue shape (``recstack data synth``: 62,423 items,
162,541 users; ``--interactions`` pairs, 2M by default so that the build takes minutes, not the
25M set's half hour: the serving path depends on the catalogue and the number of users, which
are the 25M set's). A release of pop + ALS (64 factors) whose ANN index (HNSW over the ALS item
factors) is built into a Milvus server (`recstack.testing.MilvusServer`: milvus-lite's gRPC
server on a TCP port, no Docker). Then, in the same run, two servers of 2 workers each:

- ``redis``: ``--store redis`` (a private ``redis-server`` on ``--redis-port``) + the Milvus
  server index (every worker attaches to the build's collection);
- ``embedded``: ``--store embedded`` (each worker holds the release's arrays) + the same index.

Each gets ``--warmup`` s of load, then ``--seconds`` s of an open loop of ``--rate`` requests/s of
``GET /v1/users/{u}/recommendations?k=10`` for random known users. Reported: p50 / p99 / max
latency, failures, and the RSS (MB) of each process of the server's group (the supervisor and
the 2 workers) after the load, and its anonymous part (``RssAnon``: heap and arrays, whatever the
kernel does with the file-backed pages of the libraries under memory pressure). Writes
benchmarks/results/serve_scale.json.

    nice -n 10 python benchmarks/bench_serve_scale.py --work /tmp/serve-scale [--interactions 2000000]

An existing dataset dir (a saved `Dataset`, e.g. ``recstack data synth`` output) is taken with
``--data DIR``. ``--build-only`` builds the release (into ``--work``/releases, Milvus data under
``--work``/milvus) and stops; ``--release-dir ROOT`` serves the production release of an existing
releases root instead of building one (a Milvus server index: a server is started on the release's
URI port over ``--milvus-dir``, default ``--work``/milvus, unless one answers there already).
``--skip-cold-validation`` builds without the cold-users validation (the verdict of a release
without one; it took 20 GB at this size before main's 54a8e36 / 2e1b47e, 1.4 GB peak since).
``--label NAME`` writes the run under ``NAME`` in the JSON and keeps
the other labels there (e.g. ``before`` / ``after`` a change); without it the file is replaced.
``--breakdown`` adds, per store, what one worker's serving state holds (`_breakdown`: a child
process builds the state as a worker does and reports its RSS, the tracemalloc peak / current of the
load and the bytes of the catalogue's arrays, the dataset's frames and each model's arrays).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import numpy as np
from _openloop import group_pids, open_loop, rss_mb, status_mb, summary
from _results import write_results
from bench_faults import start_redis

from recstack import __version__
from recstack.testing import MilvusServer, ServerProcess, build_release, recstack_command

RESULTS = Path(__file__).parent / "results" / "serve_scale.json"


def _toml(data: Path, uri: str) -> str:
    return f"""
[dataset]
source = "{data}"
[evaluation]
enabled = false
[index]
backend = "milvus"
source = "als"
params = {{ uri = "{uri}", collection = "serve_scale" }}
[[models]]
name = "pop"
[[models]]
name = "als"
params = {{ factors = 64, iterations = 10 }}
"""


def anon_mb(pids: list[int]) -> dict[int, float]:
    """Anonymous resident memory (``RssAnon``, MB) of each live pid, from /proc."""
    return status_mb(pids, "RssAnon")


def _cpu_seconds(pids: list[int]) -> dict[int, float]:
    """User + system CPU seconds of each live pid, from /proc."""
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[int, float] = {}
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            out[pid] = (int(fields[11]) + int(fields[12])) / tick
        except (OSError, IndexError, ValueError):
            continue
    return out


def _serve(
    name: str,
    root: Path,
    args: list[str],
    port: int,
    n_users: int,
    rate: float,
    seconds: float,
    warmup: float,
    model: str | None = None,
) -> dict[str, Any]:
    rng = np.random.default_rng(0)
    users = rng.integers(1, n_users + 1, size=int(rate * (seconds + warmup)) + 10)

    def mix(i: int) -> tuple[str, str, str, Any]:
        query = "k=10" + (f"&model={model}" if model else "")
        return "rec", "GET", f"/v1/users/{users[i % len(users)]}/recommendations?{query}", None

    t0 = time.perf_counter()
    with ServerProcess(root, workers=2, port=port, args=args, timeout=900) as server:
        ready = time.perf_counter() - t0
        assert server.proc is not None
        pgid = os.getpgid(server.proc.pid)
        cpu0 = _cpu_seconds(group_pids(pgid))
        # a new connection per request, as many users' requests arrive: the workers' sockets
        # (SO_REUSEPORT) spread connections, and one client reusing its latest keep-alive connection
        # sent nearly every request to one worker (at 20 requests/s: 751 against 9 CPU ticks)
        open_loop(server.url, rate, warmup, mix, timeout=10.0, keep_alive=False)
        run = open_loop(server.url, rate, seconds, mix, timeout=10.0, keep_alive=False)
        cpu = _cpu_seconds(group_pids(pgid))
        pids = group_pids(pgid)
        cpu = {p: round(cpu.get(p, 0.0) - cpu0.get(p, 0.0), 1) for p in cpu}
        rss = rss_mb(pids)
        anon = anon_mb(pids)
        leader = server.proc.pid
    out = {
        "config": name,
        "args": args,
        "ready_seconds": round(ready, 1),
        "recommendations": summary(run.samples),
        # CPU seconds of each worker over the warm-up and the timed run (load spread, cost/request)
        "worker_cpu_seconds": sorted(v for p, v in cpu.items() if p != leader),
        "requests_sent": len(run.samples) + int(rate * warmup),
        "rss_mb": {
            "supervisor": round(rss.get(leader, 0.0), 1),
            "workers": sorted(round(v, 1) for p, v in rss.items() if p != leader),
        },
        # the anonymous part (heap, arrays): what the process itself holds, whatever the kernel did
        # with the file-backed pages (libraries) under memory pressure from other processes
        "rss_anon_mb": {
            "supervisor": round(anon.get(leader, 0.0), 1),
            "workers": sorted(round(v, 1) for p, v in anon.items() if p != leader),
        },
    }
    print(json.dumps(out), flush=True)
    return out


def _nbytes(obj: Any, depth: int = 0) -> int:
    """Bytes of the numpy arrays, scipy sparse matrices and polars frames reachable from ``obj``
    (attributes, dicts, lists; 3 levels)."""
    import polars as pl
    import scipy.sparse as sp

    if isinstance(obj, np.ndarray):
        return int(obj.nbytes)
    if isinstance(obj, sp.spmatrix | sp.sparray):
        return sum(int(getattr(obj, a).nbytes) for a in ("data", "indices", "indptr") if hasattr(obj, a))
    if isinstance(obj, pl.DataFrame | pl.Series):
        return int(obj.estimated_size())
    if depth >= 3:
        return 0
    if isinstance(obj, dict):
        return sum(_nbytes(v, depth + 1) for v in obj.values())
    if isinstance(obj, list | tuple):
        return sum(_nbytes(v, depth + 1) for v in obj[:64])
    attrs = getattr(obj, "__dict__", None)
    if attrs is None and hasattr(obj, "__dataclass_fields__"):
        attrs = {f: getattr(obj, f, None) for f in obj.__dataclass_fields__}
    return sum(_nbytes(v, depth + 1) for v in (attrs or {}).values())


def _breakdown_child(root: str, store: str, redis_url: str, out: str) -> None:
    """In a fresh process: build the serving state of ``root``'s production release as a worker
    does; write the figures to ``out``."""
    import gc
    import tracemalloc
    from dataclasses import fields

    import recstack.serving.api.app  # noqa: F401 - what a worker imports before it loads a release
    from recstack.release import load
    from recstack.serving._state import _trim_memory, build_state
    from recstack.serving.settings import ServingSettings

    rss0 = rss_mb([os.getpid()])[os.getpid()]
    tracemalloc.start()
    release = load("production", root, verify=False)
    settings = ServingSettings(releases_dir=root, store=store, redis_url=redis_url, redis_prefix="h23sbench")
    state = build_state(release, settings)
    gc.collect()
    cur, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    rss_built = rss_mb([os.getpid()])[os.getpid()]
    _trim_memory()  # what is left for a full collection and another trim
    p = state.pipeline
    cat = p.catalog
    ds = release.__dict__.get("dataset")
    fig: dict[str, Any] = {
        "store": store,
        "rss_mb": round(rss_built, 1),
        "rss_mb_after_malloc_trim": round(rss_mb([os.getpid()])[os.getpid()], 1),
        "rss_mb_imports_only": round(rss0, 1),
        "tracemalloc_current_mb": round(cur / 2**20, 1),
        "tracemalloc_peak_mb": round(peak / 2**20, 1),
        "catalog_mb": {
            f.name: round(_nbytes(getattr(cat, f.name)) / 2**20, 2)
            for f in fields(cat)
            if f.name != "dataset" and _nbytes(getattr(cat, f.name)) >= 2**16
        },
        "release_dataset_mb": {
            k: round(_nbytes(getattr(ds, k)) / 2**20, 1) for k in ("interactions", "users", "items")
        }
        if ds is not None
        else None,
        "catalog_dataset_is_release_dataset": cat.dataset is ds,
        "catalog_dataset_mb": {
            k: round(_nbytes(getattr(cat.dataset, k)) / 2**20, 1) for k in ("interactions", "users", "items")
        },
        # every retriever of the release (a worker loads them all), and the part of it that is the
        # training user x item matrix (`Retriever._train`)
        "models_mb": {n: round(_nbytes(release.retriever(n)) / 2**20, 1) for n in release.retriever_names},
        "models_train_matrix_mb": {
            n: round(_nbytes(getattr(release.retriever(n), "_train", None)) / 2**20, 1)
            for n in release.retriever_names
        },
        "rankers_mb": {n: round(_nbytes(r) / 2**20, 1) for n, r in p.rankers.items()},
        "features_mb": round(_nbytes(p.features) / 2**20, 1) if p.features is not None else 0.0,
        "store_mb": round(_nbytes(getattr(p.history, "store", None)) / 2**20, 1),
        "segments_mb": round(_nbytes(p.segments) / 2**20, 1) if p.segments is not None else 0.0,
    }
    Path(out).write_text(json.dumps(fig))


def _breakdown(root: Path, store: str, redis_url: str) -> dict[str, Any]:
    import sys
    import tempfile

    with tempfile.NamedTemporaryFile(suffix=".json") as f:
        code = "import sys; sys.path.insert(0, sys.argv[1]); import bench_serve_scale as b; "
        code += "b._breakdown_child(*sys.argv[2:])"
        here = str(Path(__file__).parent)
        subprocess.run([sys.executable, "-c", code, here, str(root), store, redis_url, f.name], check=True)
        fig: dict[str, Any] = json.loads(Path(f.name).read_text())
    print(json.dumps(fig), flush=True)
    return fig


def _port_open(port: int) -> bool:
    import socket

    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def _index_backend(root: Path) -> str:
    """The ANN index backend of the production release of ``root`` (``none`` without one)."""
    from recstack.release import load

    info = load("production", root, verify=False).manifest.artifacts.index
    return "none" if info is None else info.backend


def _milvus_uri(root: Path) -> str | None:
    """The Milvus server URI the production release of ``root`` attaches to (None: another index)."""
    from recstack.release import load

    rel = load("production", root, verify=False)
    info = rel.manifest.artifacts.index
    if info is None or info.backend != "milvus" or rel.index_path is None:
        return None
    text = "".join(p.read_text(errors="replace") for p in Path(rel.index_path).glob("*.json"))
    text += Path(rel.index_path).read_text(errors="replace") if Path(rel.index_path).is_file() else ""
    for word in text.replace('"', " ").split():
        if word.startswith(("http://", "https://", "tcp://")):
            return word.rstrip(",}")
    return None


def _skip_cold_validation() -> None:
    """The build's cold-start verdict without its cold-users validation (`choose_profile_model`; it
    was OOM-killed at 20 GB on 162k users x 62k items before it ranked each distinct segment once):
    the verdict of a release without one (profiles not used)."""
    from recstack.evaluation import cold_users

    def verdict(dataset: Any, **_: Any) -> dict[str, Any]:
        return {"model": "popular", "personal": False, "params": {}, "reason": "validation skipped (bench)"}

    cold_users.choose_profile_model = verdict  # type: ignore[assignment]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, default=Path("/tmp/recstack-serve-scale"))
    ap.add_argument("--data", type=Path, default=None, help="an existing dataset dir (default: synth)")
    ap.add_argument("--release-dir", type=Path, default=None, help="serve this releases root's production")
    ap.add_argument("--milvus-dir", type=Path, default=None, help="Milvus data (default: WORK/milvus)")
    ap.add_argument("--build-only", action="store_true")
    ap.add_argument("--breakdown", action="store_true", help="per store, what one worker's state holds")
    ap.add_argument("--stores", default="redis,embedded")
    ap.add_argument("--skip-cold-validation", action="store_true", help="build without it")
    ap.add_argument("--label", default=None, help="write the run under this key, keep the others")
    ap.add_argument("--users", type=int, default=162_541)
    ap.add_argument("--items", type=int, default=62_423)
    ap.add_argument("--interactions", type=int, default=2_000_000)
    ap.add_argument("--rate", type=float, default=100.0)
    ap.add_argument("--model", default=None, help="model= of every request (default: the release's)")
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--warmup", type=float, default=10.0)
    ap.add_argument("--port", type=int, default=8550)
    ap.add_argument("--redis-port", type=int, default=8551)
    ap.add_argument("--milvus-port", type=int, default=19650)
    ap.add_argument("--out", type=Path, default=RESULTS)
    a = ap.parse_args()
    a.work.mkdir(parents=True, exist_ok=True)
    milvus_dir = a.milvus_dir or a.work / "milvus"
    results: dict[str, Any] = {
        "benchmark": "serve_scale",
        "rate": a.rate,
        "model": a.model or "default",
        "seconds": a.seconds,
        "load_average_start": os.getloadavg(),
        "versions": {"recstack": __version__, "python": platform.python_version()},
        "runs": [],
    }
    if a.release_dir is None:
        data = a.data or a.work / f"synth-{a.users}x{a.items}x{a.interactions}"
        t = time.perf_counter()
        if not (data / "interactions.parquet").exists():
            cmd = [*recstack_command(), "-q", "data", "synth", "--out", str(data), "--users", str(a.users)]
            cmd += ["--items", str(a.items), "--interactions", str(a.interactions)]
            subprocess.run(cmd, check=True)
        results["synth_seconds"] = round(time.perf_counter() - t, 1)
    root = a.release_dir or a.work / "releases"
    redis = start_redis(a.redis_port)
    redis_url = f"redis://127.0.0.1:{a.redis_port}/0"
    try:
        uri = _milvus_uri(root) if a.release_dir is not None else None
        port = int(uri.rsplit(":", 1)[1].split("/")[0]) if uri else a.milvus_port
        running = uri is not None and _port_open(port)  # the release's server is up already
        # a given release with another index (faiss) needs no Milvus server
        other_index = a.release_dir is not None and uri is None
        server: Any = (
            contextlib.nullcontext()
            if running or other_index
            else MilvusServer(data_dir=milvus_dir, port=port)
        )
        with server as milvus:
            if a.release_dir is None:
                t = time.perf_counter()
                if a.skip_cold_validation:
                    _skip_cold_validation()
                results["cold_validation"] = not a.skip_cold_validation
                rid = build_release(root, _toml(data, milvus.uri), force=True)
                results["build_seconds"] = round(time.perf_counter() - t, 1)
                if a.build_only:
                    print(f"built {rid} into {root}")
                    return
            from recstack.release import load

            rel = load("production", root, verify=False)
            results["release"] = rel.id
            ds = rel.dataset
            results["dataset"] = {"users": ds.n_users, "items": ds.n_items, "interactions": ds.n_interactions}
            n_users = ds.n_users
            del rel, ds
            stores = [s for s in a.stores.split(",") if s]
            if a.breakdown:
                results["breakdown"] = [_breakdown(root, s, redis_url) for s in stores]
            args_of = {
                "redis": ["--store", "redis", "--redis-url", redis_url],
                "embedded": ["--store", "embedded"],
            }
            index = _index_backend(root)
            results["index"] = index
            for s in stores:
                name = f"{s}+{'milvus-server' if index == 'milvus' else index}"
                results["runs"].append(
                    _serve(name, root, args_of[s], a.port, n_users, a.rate, a.seconds, a.warmup, a.model)
                )
    finally:
        redis.send_signal(signal.SIGTERM)
        redis.wait(timeout=20)
    results["load_average_end"] = os.getloadavg()
    write_results(a.out, results, a.label)


if __name__ == "__main__":
    main()
