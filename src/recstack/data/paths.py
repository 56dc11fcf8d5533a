"""Where named data sets are found on disk: the one place that resolves ``ml-100k`` & co.

The package bundles MovieLens latest-small only (its licence allows redistribution; its README, with
the licence, is inside the archive): `bundled_path`. Every other MovieLens set (ML-100K, 1M, 10M,
20M, 25M, latest) must not be redistributed, so it is read from a *data directory*, the first of:

1. ``$RECSTACK_DATA_DIR`` (``Settings.data_dir``), where ``recstack data fetch`` unpacks by default;
2. ``./data`` (``Settings.home / "data"``);
3. ``../shared/data`` relative to the current directory, then ``./data`` and ``../shared/data``
   relative to the repository checkout (when recstack runs from a source tree);
4. ``/work/shared/data``.

that holds ``<name>/`` or ``<name>.zip``. `find_dataset` raises a `NotFoundError` that lists the
directories searched and says how to fetch the set (``recstack data fetch <name>``).
"""

from __future__ import annotations

import importlib.resources
import re
from pathlib import Path

from recstack.config import get_settings
from recstack.errors import NotFoundError

__all__ = ["BUNDLED", "NOT_REDISTRIBUTABLE", "bundled_path", "data_dirs", "fetch_hint", "find_dataset"]

#: The data set shipped inside the package (read offline, no data dir needed).
BUNDLED = "ml-latest-small"

#: A path inside a MovieLens set that may not be redistributed (100K, 1M, 10M, 20M, 25M): its folder or
#: archive name, or a file only those layouts have. Nothing the project ships may match it.
NOT_REDISTRIBUTABLE = re.compile(
    r"ml-(100k|1m|10m|10m100k|20m|25m)\b|(^|/)(u\.data|u\.item|u\.user|ratings\.dat)$", re.IGNORECASE
)

_SHARED = Path("/work/shared/data")


def bundled_path() -> Path:
    """Path of the MovieLens latest-small archive shipped in the package (official files + README)."""
    res = importlib.resources.files("recstack.data") / "_bundled" / f"{BUNDLED}.zip"
    with importlib.resources.as_file(res) as p:
        return Path(p)


def _repo_root() -> Path | None:
    """The source checkout recstack runs from (``src/recstack/data/paths.py`` -> repo), if any."""
    root = Path(__file__).resolve().parents[3]
    return root if (root / "pyproject.toml").is_file() else None


def data_dirs() -> list[Path]:
    """The data directories, in resolution order (see the module docstring); duplicates removed."""
    settings = get_settings()
    cands: list[Path] = []
    if settings.data_dir is not None:
        cands.append(settings.data_dir)
    cands += [settings.home / "data", Path.cwd() / "data", Path.cwd().parent / "shared" / "data"]
    repo = _repo_root()
    if repo is not None:
        cands += [repo / "data", repo.parent / "shared" / "data"]
    cands.append(_SHARED)
    out: list[Path] = []
    seen: set[Path] = set()
    for c in cands:
        key = c.absolute()
        if key not in seen:
            seen.add(key)
            out.append(c)
    return out


def fetch_hint(name: str) -> str:
    """How to get data set ``name`` when it is not found."""
    base = get_settings().data_path().absolute()
    return (
        f"download it (checksum-verified) with `recstack data fetch {name}` (into {base}; "
        f"`--dir DIR` elsewhere), or set RECSTACK_DATA_DIR to a directory holding {name}/"
    )


def find_dataset(name: str) -> Path:
    """The directory (or .zip) of data set ``name`` (``ml-100k``, ``ml-1m``...) in the first data
    directory holding it; `NotFoundError` naming the directories searched and how to fetch it."""
    dirs = data_dirs()
    for d in dirs:
        for cand in (d / name, d / f"{name}.zip"):
            if cand.exists():
                return cand
    searched = ", ".join(str(d.absolute()) for d in dirs)
    raise NotFoundError(
        f"dataset {name!r} not found in the data directories ({searched}); {fetch_hint(name)}"
    )
