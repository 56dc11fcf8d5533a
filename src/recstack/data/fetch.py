"""Download an official MovieLens archive from GroupLens, verify its checksum, unpack it.

`fetch_movielens("ml-1m", "data")` streams ``<base_url>/ml-1m.zip`` (httpx, with a rich progress bar)
into a temporary file, checks it against the expected checksum and unpacks it to ``data/ml-1m/``.
The expected checksum is, in order: the ``sha256`` / ``md5`` argument, the published MD5 of the
archive in `KNOWN_MD5` (whatever the base URL: a mirror must serve the same bytes), or the
``<url>.md5`` file that GroupLens publishes next to each archive (the ``latest`` archives change
over time, so they have no fixed checksum). On a mismatch or any error
nothing is left behind: the partial download and the partial unpack are removed.

The base URL can be overridden with ``base_url=`` or the environment variable
``RECSTACK_MOVIELENS_URL`` (a mirror, or a local server in tests).
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
import zipfile
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import httpx

from recstack._progress import progress_bar
from recstack.config import get_settings
from recstack.errors import ArtifactError, NotFoundError, UnavailableError

__all__ = ["GROUPLENS_URL", "KNOWN_MD5", "MOVIELENS_ARCHIVES", "fetch_movielens"]

GROUPLENS_URL = "https://files.grouplens.org/datasets/movielens"

#: MD5 of the official archives, as published in GroupLens' ``<archive>.zip.md5`` files.
KNOWN_MD5: dict[str, str] = {
    "ml-100k": "0e33842e24a9c977be4e0107933c0723",
    "ml-1m": "c4d9eecfca2ab87c1945afe126590906",
    "ml-10m": "ce571fd55effeba0271552578f2648bd",
    "ml-20m": "cd245b17a1ae2cc31bb14903e1204af3",
    "ml-25m": "6b51fb2759a8657d3bfcbfc42b592ada",
}
MOVIELENS_ARCHIVES: tuple[str, ...] = (*KNOWN_MD5, "ml-latest-small", "ml-latest")
_HEX = re.compile(r"\b([0-9a-fA-F]{32}|[0-9a-fA-F]{64})\b")


def _parse_checksum_file(text: str) -> str | None:
    """The hex digest in an ``md5sum`` / BSD ``MD5 (file) = digest`` style file."""
    m = _HEX.search(text)
    return m.group(1).lower() if m else None


def _expected(
    client: httpx.Client, name: str, url: str, md5: str | None, sha256: str | None
) -> tuple[str, str]:
    if sha256:
        return "sha256", sha256.lower()
    if md5:
        return "md5", md5.lower()
    if name in KNOWN_MD5:
        return "md5", KNOWN_MD5[name]
    import httpx

    try:
        resp = client.get(url + ".md5")
    except httpx.HTTPError as exc:
        raise UnavailableError(f"could not fetch the checksum file {url}.md5: {exc}") from exc
    digest = _parse_checksum_file(resp.text) if resp.status_code == 200 else None
    if digest is None:
        raise ArtifactError(
            f"no checksum known for {name} and {url}.md5 is not available (HTTP {resp.status_code}); "
            "pass the expected checksum with --md5 or --sha256"
        )
    return "md5", digest


def _safe_extract(zf: zipfile.ZipFile, target: Path) -> None:
    for info in zf.infolist():
        p = PurePosixPath(info.filename)
        if p.is_absolute() or ".." in p.parts:
            raise ArtifactError(f"archive member {info.filename!r} would be written outside {target}")
    zf.extractall(target)


def fetch_movielens(
    name: str,
    directory: str | Path | None = None,
    *,
    base_url: str | None = None,
    md5: str | None = None,
    sha256: str | None = None,
    force: bool = False,
    keep_archive: bool = False,
    timeout: float = 60.0,
) -> Path:
    """Download, verify and unpack the MovieLens archive ``name`` (e.g. ``ml-25m``) into
    ``directory/name`` (default: ``Settings.data_path()``). Returns that directory. An existing
    ``directory/name`` is returned as is unless ``force``."""
    import httpx

    name = name.lower().strip()
    if name.endswith(".zip"):
        name = name[:-4]
    if name not in MOVIELENS_ARCHIVES:
        raise NotFoundError(
            f"unknown MovieLens archive {name!r}; choose one of {', '.join(MOVIELENS_ARCHIVES)}"
        )
    root = Path(directory) if directory is not None else get_settings().data_path()
    target = root / name
    if target.exists() and not force:
        return target
    root.mkdir(parents=True, exist_ok=True)
    base = (base_url or os.environ.get("RECSTACK_MOVIELENS_URL") or GROUPLENS_URL).rstrip("/")
    url = f"{base}/{name}.zip"

    part = Path(tempfile.mkstemp(prefix=f".{name}-", suffix=".zip.part", dir=root)[1])
    unpack = Path(tempfile.mkdtemp(prefix=f".{name}-unpack-", dir=root))
    try:
        with httpx.Client(timeout=timeout, follow_redirects=True) as client:
            algo, expected = _expected(client, name, url, md5, sha256)
            h = hashlib.new(algo)
            try:
                with client.stream("GET", url) as resp:
                    if resp.status_code == 404:
                        raise NotFoundError(f"{url} does not exist (HTTP 404); check the name or --base-url")
                    if resp.status_code != 200:
                        raise UnavailableError(f"downloading {url} failed: HTTP {resp.status_code}")
                    total = int(resp.headers.get("content-length") or 0) or None
                    with part.open("wb") as fh, progress_bar() as prog:
                        task = prog.add_task(f"{name}.zip", total=total, status="")
                        for chunk in resp.iter_bytes(1 << 20):
                            fh.write(chunk)
                            h.update(chunk)
                            prog.advance(task, len(chunk))
            except httpx.HTTPError as exc:
                raise UnavailableError(
                    f"downloading {url} failed: {exc}; check the network or use --base-url for a mirror"
                ) from exc
        got = h.hexdigest()
        if got != expected:
            raise ArtifactError(
                f"checksum mismatch for {url}: expected {algo} {expected}, got {got}. The download is "
                "corrupt or the archive changed upstream; nothing was kept. Retry, or pass the "
                "expected checksum with --md5/--sha256 if you trust the new archive."
            )
        try:
            with zipfile.ZipFile(part) as zf:
                _safe_extract(zf, unpack)
        except zipfile.BadZipFile as exc:
            raise ArtifactError(f"{url} is not a valid zip archive: {exc}") from exc
        entries = [p for p in unpack.iterdir() if p.name != "__MACOSX"]
        src = entries[0] if len(entries) == 1 and entries[0].is_dir() else unpack
        if target.exists():
            shutil.rmtree(target)
        os.replace(src, target)
        if keep_archive:
            os.replace(part, root / f"{name}.zip")
    finally:
        part.unlink(missing_ok=True)
        shutil.rmtree(unpack, ignore_errors=True)
    return target
