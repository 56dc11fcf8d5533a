"""The first run of a new user: ``make demo`` from a clean clone, with its output in a log file.

Protocol.

1. ``git clone`` of this checkout (its last commit) into a temporary directory.
2. ``make demo PORT=<free port> > demo.log 2>&1`` in the clone, in its own process group: it creates
   the clone's ``.venv``, installs the package (pip, from the local wheel cache when warm), builds a
   release of the default pipeline on the bundled MovieLens latest-small, prints the evaluation
   table and serves the API and web UI.
3. The log is polled every 0.2 s: the time each line appears is recorded, so the log gives the
   install time (until the ``recstack demo: building`` rule), the build time (until the ``serving
   on`` rule; the build's own figure is in the manifest's stage timings) and the longest silence
   during the build. ``/readyz`` is polled once the server starts; when it answers 200 the process
   group is stopped (SIGTERM, then SIGKILL).
4. ``pip wheel . --no-deps --no-build-isolation`` with the clone's venv; the wheel's file list
   (``unzip -l`` in JSON: count, size, the bundled data entries, any MovieLens 100K/1M/10M/20M/25M
   file).

Writes ``benchmarks/results/first_run.json`` (and the log beside it as ``first_run_demo.log``)::

    nice -n 10 python benchmarks/bench_first_run.py [--repo .] [--work /tmp/first-run] [--timeout 3600]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any

import httpx

from recstack.data.paths import NOT_REDISTRIBUTABLE
from recstack.testing import free_port

HERE = Path(__file__).resolve().parent
PROGRESS = re.compile(r"^\[progress\] ")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """Stop the demo's process group (make, recstack, uvicorn), gently first."""
    for sig, wait in ((signal.SIGTERM, 20.0), (signal.SIGKILL, 10.0)):
        if proc.poll() is not None:
            break
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            continue


def run_demo(clone: Path, port: int, timeout: float) -> dict[str, Any]:
    log_path = clone / "demo.log"
    lines: list[tuple[float, str]] = []
    t0 = time.monotonic()
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            ["make", "demo", f"PORT={port}"],
            cwd=clone,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    ready_at: float | None = None
    seen = b""
    try:
        while time.monotonic() - t0 < timeout:
            data = log_path.read_bytes()
            if len(data) > len(seen):
                now = time.monotonic() - t0
                new = data[len(seen) :]
                complete = new[: new.rfind(b"\n") + 1]
                for line in complete.decode(errors="replace").splitlines():
                    lines.append((now, line))
                seen += complete
            if any("serving on http" in ln for _, ln in lines):
                try:
                    if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1.0).status_code == 200:
                        ready_at = time.monotonic() - t0
                        break
                except httpx.HTTPError:
                    pass
            if proc.poll() is not None:
                break
            time.sleep(0.2)
    finally:
        _stop(proc)

    def first(pattern: str) -> float | None:
        return next((t for t, ln in lines if pattern in ln), None)

    build_start, served = first("recstack demo: building"), first("serving on http")
    build_lines = [
        (t, ln) for t, ln in lines if build_start is not None and build_start <= t <= (served or 1e18)
    ]
    gaps = [(b[0] - a[0], a[1]) for a, b in itertools.pairwise(build_lines)]
    silence = max(gaps, default=None)
    table_start = next((i for i, (_, ln) in enumerate(lines) if " · protocol " in ln), None)
    table: list[str] = []
    if table_start is not None:
        for _, ln in lines[table_start:]:
            if "serving on http" in ln or "promoted" in ln or PROGRESS.match(ln):
                break
            table.append(ln)
    progress = [ln for _, ln in lines if PROGRESS.match(ln)]
    return {
        "exit_code_before_stop": proc.returncode if ready_at is None else None,
        "seconds_to_build_start": build_start,
        "build_seconds": (served - build_start) if served is not None and build_start is not None else None,
        "seconds_to_readyz": ready_at,
        "readyz_after_serve_seconds": (ready_at - served)
        if ready_at is not None and served is not None
        else None,
        "log_lines": len(lines),
        "progress_lines": len(progress),
        "progress_line_examples": progress[:3] + progress[-3:],
        "longest_silence_during_build_seconds": round(silence[0], 1) if silence else None,
        "longest_silence_after_line": silence[1] if silence else None,
        "evaluation_table": table,
        "log": log_path,
    }


def wheel_listing(clone: Path, work: Path) -> dict[str, Any]:
    py = clone / ".venv" / "bin" / "python"
    out = work / "dist"
    t0 = time.monotonic()
    subprocess.run(
        [str(py), "-m", "pip", "wheel", ".", "--no-deps", "--no-build-isolation", "-q", "-w", str(out)],
        cwd=clone,
        check=True,
    )
    seconds = time.monotonic() - t0
    (wheel,) = out.glob("recstack-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        infos = zf.infolist()
        bundled = {i.filename: i.file_size for i in infos if "/_bundled/" in i.filename}
        inner: list[str] = []
        for name in bundled:
            if name.endswith(".zip"):
                with zipfile.ZipFile(zf.open(name)) as z2:
                    inner += [f"{name}!{n}" for n in z2.namelist()]
    names = [i.filename for i in infos] + inner
    listing = subprocess.run(["unzip", "-l", str(wheel)], capture_output=True, text=True).stdout
    return {
        "wheel": wheel.name,
        "wheel_bytes": wheel.stat().st_size,
        "build_seconds": round(seconds, 1),
        "files": len(infos),
        "uncompressed_bytes": sum(i.file_size for i in infos),
        "bundled": bundled,
        "bundled_archive_members": inner,
        "movielens_non_redistributable_files": [n for n in names if NOT_REDISTRIBUTABLE.search(n)],
        "unzip_l_tail": listing.strip().splitlines()[-1] if listing else None,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repo", type=Path, default=HERE.parent, help="the checkout to clone")
    ap.add_argument("--work", type=Path, default=None, help="where to clone (default: a temp dir)")
    ap.add_argument("--timeout", type=float, default=3600.0)
    ap.add_argument("--out", type=Path, default=HERE / "results" / "first_run.json")
    a = ap.parse_args()
    work = a.work or Path(tempfile.mkdtemp(prefix="first-run-"))
    clone = work / "clone"
    if clone.exists():
        shutil.rmtree(clone)
    subprocess.run(["git", "clone", "-q", str(a.repo), str(clone)], check=True)
    commit = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=clone, capture_output=True, text=True, check=True
    ).stdout.strip()
    port = free_port()
    print(f"make demo PORT={port} in {clone} (commit {commit[:10]}), log {clone / 'demo.log'}")
    demo = run_demo(clone, port, a.timeout)
    log = Path(demo.pop("log"))
    shutil.copy(log, a.out.with_name("first_run_demo.log"))
    for key in ("seconds_to_build_start", "build_seconds", "seconds_to_readyz", "readyz_after_serve_seconds"):
        if demo[key] is not None:
            demo[key] = round(demo[key], 1)
    wheel = wheel_listing(clone, work)
    manifest_timings: dict[str, float] = {}
    for mf in sorted((clone / "releases").glob("*/manifest.json")):
        manifest_timings = json.loads(mf.read_text()).get("timings", {})
    result = {
        "protocol": {
            "command": "git clone; make demo PORT=<free> > demo.log 2>&1 (own process group); "
            "stopped when /readyz answers",
            "commit": commit,
            "machine": f"{platform.machine()}, {os.cpu_count()} cores",
            "load_average_1min_at_end": round(os.getloadavg()[0], 1),
            "python": sys.version.split()[0],
        },
        "demo": demo,
        "build_stage_seconds": manifest_timings,
        "wheel": wheel,
    }
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    print("\n".join(demo["evaluation_table"]))
    print(
        f"install {demo['seconds_to_build_start']} s, build {demo['build_seconds']} s, "
        f"/readyz at {demo['seconds_to_readyz']} s; {demo['progress_lines']} progress lines, longest "
        f"silence during the build {demo['longest_silence_during_build_seconds']} s"
    )
    print(
        f"wheel {wheel['wheel']}: {wheel['files']} files, {wheel['wheel_bytes']:,} bytes; bundled "
        f"{sorted(wheel['bundled'])}; non-redistributable MovieLens files: "
        f"{wheel['movielens_non_redistributable_files'] or 'none'}"
    )
    print(f"-> {a.out}")


if __name__ == "__main__":
    main()
