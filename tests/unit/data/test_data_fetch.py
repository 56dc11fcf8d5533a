"""`fetch_movielens` against a local HTTP server (127.0.0.1) serving fixture archives. No internet."""

from __future__ import annotations

import hashlib
import threading
import zipfile
from collections.abc import Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import pytest
from typer.testing import CliRunner

from recstack.data.fetch import KNOWN_MD5, _parse_checksum_file, fetch_movielens
from recstack.data.movielens import load_movielens
from recstack.errors import ArtifactError, NotFoundError

ML = Path(__file__).parents[2] / "fixtures" / "movielens"


class _Handler(SimpleHTTPRequestHandler):
    requests: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        _Handler.requests.append(self.path)
        super().do_GET()

    def log_message(self, format: str, *args: object) -> None:
        pass


def _zip_dir(src: Path, dest: Path, top: str) -> Path:
    with zipfile.ZipFile(dest, "w", zipfile.ZIP_DEFLATED) as zf:
        for f in sorted(src.iterdir()):
            zf.write(f, f"{top}/{f.name}")
    return dest


@pytest.fixture()
def server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """Serves tmp_path/www on an ephemeral loopback port; yields (base_url, www)."""
    www = tmp_path / "www"
    www.mkdir()
    _zip_dir(ML / "ml-100k", www / "ml-100k.zip", "ml-100k")
    small = _zip_dir(ML / "ml-latest-small", www / "ml-latest-small.zip", "ml-latest-small")
    digest = hashlib.md5(small.read_bytes()).hexdigest()
    (www / "ml-latest-small.zip.md5").write_text(f"MD5 (ml-latest-small.zip) = {digest}\n")
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), partial(_Handler, directory=str(www)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    _Handler.requests = []
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", www
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


def test_good_checksum_unpacks_and_loads(server: tuple[str, Path], tmp_path: Path) -> None:
    url, www = server
    sha = hashlib.sha256((www / "ml-100k.zip").read_bytes()).hexdigest()
    out = fetch_movielens("ml-100k", tmp_path / "data", base_url=url, sha256=sha)
    assert out == tmp_path / "data" / "ml-100k"
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["ml-100k"]  # no .part, no temp dir
    ds = load_movielens(out)
    assert (ds.n_users, ds.n_items, ds.n_interactions) == (4, 5, 8)
    # already there: returned without a request
    before = len(_Handler.requests)
    assert fetch_movielens("ml-100k", tmp_path / "data", base_url=url, sha256=sha) == out
    assert len(_Handler.requests) == before


def test_bad_checksum_leaves_nothing(server: tuple[str, Path], tmp_path: Path) -> None:
    url, _ = server
    data = tmp_path / "data"
    with pytest.raises(ArtifactError, match="checksum mismatch") as err:
        fetch_movielens("ml-100k", data, base_url=url, md5="0" * 32)
    assert "expected md5 " + "0" * 32 in str(err.value)
    assert list(data.iterdir()) == []


def test_published_md5_is_used_by_default(server: tuple[str, Path], tmp_path: Path) -> None:
    # the fixture archive is not the official ml-100k.zip, so the table's MD5 must reject it
    url, _ = server
    with pytest.raises(ArtifactError, match=KNOWN_MD5["ml-100k"]):
        fetch_movielens("ml-100k", tmp_path / "d", base_url=url)
    assert list((tmp_path / "d").iterdir()) == []


def test_latest_uses_the_md5_file_next_to_the_archive(server: tuple[str, Path], tmp_path: Path) -> None:
    url, _ = server
    out = fetch_movielens("ml-latest-small", tmp_path / "d", base_url=url)
    assert "/ml-latest-small.zip.md5" in _Handler.requests
    assert load_movielens(out).meta["format"] == "movielens-latest-small"


def test_missing_archive_and_unknown_name(server: tuple[str, Path], tmp_path: Path) -> None:
    url, www = server
    (www / "ml-1m.zip").unlink(missing_ok=True)
    with pytest.raises(NotFoundError, match="404"):
        fetch_movielens("ml-1m", tmp_path / "d", base_url=url)
    assert list((tmp_path / "d").iterdir()) == []
    with pytest.raises(NotFoundError, match="unknown MovieLens archive"):
        fetch_movielens("ml-3m", tmp_path / "d", base_url=url)


def test_zip_slip_is_refused(server: tuple[str, Path], tmp_path: Path) -> None:
    url, www = server
    evil = www / "ml-1m.zip"
    with zipfile.ZipFile(evil, "w") as zf:
        zf.writestr("../escape.txt", "x")
    md5 = hashlib.md5(evil.read_bytes()).hexdigest()
    with pytest.raises(ArtifactError, match="outside"):
        fetch_movielens("ml-1m", tmp_path / "d", base_url=url, md5=md5)
    assert not (tmp_path / "escape.txt").exists() and list((tmp_path / "d").iterdir()) == []


def test_cli_fetch(server: tuple[str, Path], tmp_path: Path) -> None:
    from recstack.cli import app

    url, _ = server
    result = CliRunner().invoke(
        app, ["data", "fetch", "ml-latest-small", "--dir", str(tmp_path / "d"), "--base-url", url]
    )
    assert result.exit_code == 0, result.output
    assert (tmp_path / "d" / "ml-latest-small" / "ratings.csv").is_file()


def test_checksum_file_formats() -> None:
    d = "6b51fb2759a8657d3bfcbfc42b592ada"
    assert _parse_checksum_file(f"MD5 (ml-25m.zip) = {d}\n") == d
    assert _parse_checksum_file(f"{d.upper()}  ml-25m.zip\n") == d
    assert _parse_checksum_file("not found") is None
