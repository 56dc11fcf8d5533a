"""The web UI's server side (no browser): page shells, static assets, the user-id redirect and the
release-page routes (lineage, evaluation, report, plots) over the tiny catalogue of conftest.py."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from recstack.release.manifest import DatasetInfo, Manifest
from recstack.release.registry import Registry
from recstack.serving._release import MemoryRelease
from recstack.serving.api.app import create_app
from recstack.serving.settings import ServingSettings

# the smallest valid PNG (1x1, grey): 67 bytes
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAAAAAA6fptVAAAACklEQVR4nGNgAAAAAgABSK+kcQAAAABJRU5ErkJggg=="
)


def _client(release: MemoryRelease) -> TestClient:
    return TestClient(create_app(ServingSettings(), release=release))


@pytest.fixture
def client(tiny_release: MemoryRelease) -> Iterator[TestClient]:
    with _client(tiny_release) as c:
        yield c


def _manifest(rid: str, parent: str | None) -> Manifest:
    return Manifest(
        id=rid,
        created_at=datetime(2026, 11, 23, 10, 15, tzinfo=UTC),
        dataset=DatasetInfo(name="tiny", fingerprint="0" * 64, counts={"interactions": 66}),
        config={},
        package_version="0.1.0",
        parent=parent,
        metrics={"pop": {"ndcg@10": 0.25}},
        files=[],
    )


@pytest.fixture
def built(tiny_release: MemoryRelease, tmp_path: Path) -> MemoryRelease:
    """The tiny release as if built into releases/<child>/ (parent <- child, child in production),
    with metrics.json and a report.html holding two inline plots."""
    parent, child = "20261123T101500Z-aaaaaaa", "20261123T111500Z-bbbbbbb"
    for rid, par in ((parent, None), (child, parent)):
        d = tmp_path / rid
        d.mkdir()
        _manifest(rid, par).write(d)
    d = tmp_path / child
    (d / "metrics.json").write_text(
        json.dumps(
            {
                "dataset": "tiny",
                "protocol": "stratified",
                "seed": 42,
                "counts": {"train": 50, "test": 16},
                "results": {"pop": {"ndcg@10": 0.25, "fit_seconds": 0.01, "note": "text is dropped"}},
                "comparisons": {"warm": [{"a": "pop", "b": "ease", "diff": 0.1, "ci95": [0.05, 0.15]}]},
            }
        )
    )
    b64 = base64.b64encode(PNG).decode()
    (d / "report.html").write_text(
        f'<html><body><table></table><img alt="curves" src="data:image/png;base64,{b64}">'
        f'<p>x</p><img alt="long tail" src="data:image/png;base64,{b64[:20]}\n{b64[20:]}"></body></html>'
    )
    Registry(tmp_path).promote(child, "production")
    return replace(tiny_release, id=child, path=d)


@pytest.mark.parametrize(
    ("path", "page"),
    [
        ("/", "home"),
        ("/movies/100", "movie"),
        ("/users/1", "user"),
        ("/start", "start"),
        ("/release", "release"),
    ],
)
def test_pages_are_html_shells(client: TestClient, path: str, page: str) -> None:
    r = client.get(path)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert f'data-page="{page}"' in r.text
    assert '<script src="/static/app.js' in r.text and 'href="/static/app.css' in r.text
    assert "http://" not in r.text and "https://" not in r.text  # no CDN: everything is local


def test_ids_are_escaped_into_the_page(client: TestClient) -> None:
    r = client.get("/users/%22%3E%3Cscript%3Ex")  # the id '"><script>x'
    assert r.status_code == 200
    assert "<script>x" not in r.text and 'data-user-id="&#34;&gt;&lt;script&gt;x"' in r.text


def test_static_assets_are_served(client: TestClient) -> None:
    for name, ctype in (("app.js", "javascript"), ("app.css", "text/css"), ("favicon.svg", "image/svg")):
        r = client.get(f"/static/{name}")
        assert r.status_code == 200 and ctype in r.headers["content-type"]


def test_user_id_form_redirects(client: TestClient) -> None:
    r = client.get("/users/", params={"id": " 42 "}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/users/42"
    r = client.get("/users/", params={"id": "a/b"}, follow_redirects=False)
    assert r.headers["location"] == "/users/a%2Fb"
    assert client.get("/users/", follow_redirects=False).headers["location"] == "/"


def test_memory_release_has_no_lineage_or_report(client: TestClient) -> None:
    body = client.get("/v1/release/lineage").json()
    assert body["lineage"] == [{"release_id": "tiny-a", "available": False, "channels": []}]
    assert body["channels"] == {}
    for path in ("/v1/release/evaluation", "/v1/release/report", "/v1/release/report/plots/0"):
        r = client.get(path)
        assert r.status_code == 404 and "tiny-a" in r.json()["error"]["message"]


def test_lineage_of_a_built_release(built: MemoryRelease) -> None:
    with _client(built) as c:
        body = c.get("/v1/release/lineage").json()
    assert body["channels"] == {"production": built.id}
    chain = body["lineage"]
    assert [e["release_id"] for e in chain] == [built.id, "20261123T101500Z-aaaaaaa"]
    assert chain[0]["channels"] == ["production"] and chain[1]["channels"] == []
    assert chain[0]["created_at"] == "2026-11-23T10:15:00+00:00" and chain[0]["models"] == ["pop"]


def test_evaluation_report_and_plots(built: MemoryRelease) -> None:
    with _client(built) as c:
        ev = c.get("/v1/release/evaluation").json()
        assert ev["results"] == {"pop": {"ndcg@10": 0.25, "fit_seconds": 0.01}}  # numbers only
        assert (ev["protocol"], ev["counts"]) == ("stratified", {"train": 50, "test": 16})
        assert ev["comparisons"]["warm"][0]["ci95"] == [0.05, 0.15] and ev["windows"] == []
        assert ev["plots"] == [
            {"alt": "curves", "url": "/v1/release/report/plots/0"},
            {"alt": "long tail", "url": "/v1/release/report/plots/1"},
        ]
        assert ev["report_url"] == "/v1/release/report"
        report = c.get("/v1/release/report")
        assert report.status_code == 200 and report.text.startswith("<html>")
        for n in (0, 1):  # the second image's base64 is split over two lines
            img = c.get(f"/v1/release/report/plots/{n}")
            assert img.headers["content-type"] == "image/png" and img.content == PNG
        r = c.get("/v1/release/report/plots/2")
        assert r.status_code == 404 and "has 2 plots" in r.json()["error"]["message"]
