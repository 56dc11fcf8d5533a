"""The built wheel ships MovieLens latest-small (with its README and licence) and none of the
MovieLens sets whose licence forbids redistribution (100K, 1M, 10M, 20M, 25M)."""

from __future__ import annotations

import io
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from recstack.data.paths import NOT_REDISTRIBUTABLE

REPO = Path(__file__).resolve().parents[2]


def _source_copy(dst: Path) -> Path:
    """The files of the checkout (tracked + untracked not ignored), so that no stale build/ or
    egg-info of the working tree can reach the wheel."""
    out = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        check=True,
    ).stdout
    for rel in filter(None, out.decode().split("\0")):
        src = REPO / rel
        if src.is_file():
            (dst / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst / rel)
    return dst


def _members(data: bytes, prefix: str = "") -> list[str]:
    """Every member name of a zip, recursing into the zips it holds (``outer.zip!inner/file``)."""
    names: list[str] = []
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        for name in zf.namelist():
            names.append(prefix + name)
            if name.endswith(".zip"):
                names += _members(zf.read(name), f"{prefix}{name}!")
    return names


def test_wheel_ships_latest_small_only(tmp_path: Path) -> None:
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("needs the git checkout to list the source files")
    src = _source_copy(tmp_path / "src")
    out = tmp_path / "dist"
    cmd = [sys.executable, "-m", "pip", "wheel", ".", "--no-deps", "--no-build-isolation", "-q"]
    cmd += ["-w", str(out)]
    res = subprocess.run(cmd, cwd=src, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout + res.stderr
    (wheel,) = out.glob("recstack-*.whl")
    names = _members(wheel.read_bytes())
    bundled = [n for n in names if n.startswith("recstack/data/_bundled/")]
    assert bundled == ["recstack/data/_bundled/ml-latest-small.zip"] + [
        f"recstack/data/_bundled/ml-latest-small.zip!ml-latest-small/{f}"
        for f in ("README.txt", "links.csv", "movies.csv", "ratings.csv", "tags.csv")
    ]
    assert [n for n in names if NOT_REDISTRIBUTABLE.search(n)] == []
    # the package itself is there (the check above looked at a real wheel)
    assert "recstack/data/paths.py" in names and "recstack/release/default.toml" in names
