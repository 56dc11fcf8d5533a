"""`recstack build` with its output in a pipe (a log file, CI): the long steps show up as progress
lines (step, done/total, rate) instead of nothing."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

from recstack.testing import recstack_command

LINE = re.compile(r"^\[progress\] (?P<step>.+?) (?P<done>\d+)/(?P<total>\d+) \d+% \S+/(s|min) elapsed ")


def test_build_writes_progress_lines_to_a_pipe(tiny_dataset_dir: Path, tmp_path: Path) -> None:
    cfg = tmp_path / "build.toml"
    cfg.write_text(
        f'[dataset]\nsource = "{tiny_dataset_dir}"\n'
        "[evaluation]\nreport = false\nmax_k = 10\n[features]\nenabled = false\n"
        '[[models]]\nname = "pop"\n[[models]]\nname = "als"\nparams = { factors = 4, iterations = 3 }\n'
        '[index]\nbackend = "none"\n'
    )
    env = {k: v for k, v in os.environ.items() if k not in ("RECSTACK_PROGRESS", "RECSTACK_QUIET")}
    env["RECSTACK_PROGRESS_INTERVAL"] = "0"  # every update: the build is too quick for 5 s intervals
    res = subprocess.run(
        [*recstack_command(), "build", "--config", str(cfg), "--releases-dir", str(tmp_path / "rel")],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        stdin=subprocess.DEVNULL,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    lines = [m for m in map(LINE.match, res.stderr.splitlines()) if m]
    steps = {m["step"] for m in lines}
    # the build's stages and the ALS iterations (evaluation fit + refit)
    assert steps == {"build", "fit als"}, res.stderr
    build = [m for m in lines if m["step"] == "build"]
    done = [int(m["done"]) for m in build]
    assert done == sorted(done) and done[-1] == int(build[-1]["total"])  # counts up to its total
    assert "| done | release " in build[-1].string
    statuses = [m.string.split(" | ")[-1] for m in build]
    for status in (
        "data: tiny",
        "evaluate als (stratified)",
        "evaluated als",
        "fit als",
        "fitted als",
        "writing",
    ):
        assert status in statuses, statuses
    als = [m for m in lines if m["step"] == "fit als"]
    assert {int(m["total"]) for m in als} == {3} and len([m for m in als if "| done" in m.string]) == 2
    assert "\x1b[" not in res.stderr  # plain lines, no terminal control codes
