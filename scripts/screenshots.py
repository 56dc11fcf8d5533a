"""Refresh docs/screenshots/ with Playwright and headless Chromium.

The screenshots are taken by the browser tests that already drive every page against a real server
(`tests/e2e/test_web_ui.py::test_screenshots`, `tests/e2e/test_experiments_ui.py`); this script runs
them with ``RECSTACK_UPDATE_SCREENSHOTS=1`` so that they write into docs/screenshots/ instead of a
temporary directory. Usage (from the repository root, after `make install`):

    .venv/bin/python scripts/screenshots.py

Needs /usr/bin/chromium (`make sysdeps`); the first run builds the e2e release (a few minutes).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TESTS = [
    "tests/e2e/test_web_ui.py::test_screenshots",
    "tests/e2e/test_experiments_ui.py::test_experiments_page_and_report",
]


def main() -> int:
    env = {**os.environ, "RECSTACK_UPDATE_SCREENSHOTS": "1"}
    cmd = [sys.executable, "-m", "pytest", "-q", "-x", *TESTS]
    done = subprocess.run(cmd, cwd=REPO, env=env, check=False)
    if done.returncode == 0:
        shots = sorted((REPO / "docs" / "screenshots").glob("*.png"))
        print("\n".join(f"{p.relative_to(REPO)}  {p.stat().st_size:,} bytes" for p in shots))
    return done.returncode


if __name__ == "__main__":
    raise SystemExit(main())
