"""Manifest: id format, hashing, strict reading (missing / malformed -> ArtifactError naming the file),
verification of every file (tampered / missing / resized -> ArtifactError naming the file)."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from recstack.errors import ArtifactError
from recstack.release.manifest import (
    RELEASE_ID_RE,
    Manifest,
    git_commit,
    hash_files,
    new_release_id,
    sha256_file,
)

MakeRelease = Callable[..., Manifest]


def test_release_id_is_sortable_time_plus_short_hash() -> None:
    t = datetime(2026, 11, 23, 10, 15, 0, 123456, tzinfo=UTC)
    rid = new_release_id(t, {"config": 1})
    assert re.fullmatch(r"20261123T101500Z-[0-9a-f]{7}", rid)
    assert RELEASE_ID_RE.match(rid)
    # same content one second later sorts after; different content at the same time differs
    later = new_release_id(datetime(2026, 11, 23, 10, 15, 1, tzinfo=UTC), {"config": 1})
    assert later > rid
    assert new_release_id(t, {"config": 2}) != rid


def test_sha256_and_hash_files(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.bin").write_bytes(b"abc")
    (tmp_path / "manifest.json").write_text("{}")  # never listed
    entries = hash_files(tmp_path)
    # sha256("abc") is the FIPS 180-2 test vector
    assert [(e.path, e.size, e.sha256) for e in entries] == [
        ("a/x.bin", 3, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
    ]
    assert sha256_file(tmp_path / "a" / "x.bin") == hashlib.sha256(b"abc").hexdigest()


def test_manifest_round_trip(make_release: MakeRelease, tmp_path: Path) -> None:
    m = make_release(0.3)
    back = Manifest.read(tmp_path / "releases" / m.id)
    assert back == m
    assert back.headline_value() == 0.3
    assert back.total_size() == sum(f.size for f in m.files) > 0


def test_missing_manifest_is_refused_naming_it(tmp_path: Path) -> None:
    d = tmp_path / "20261123T101500Z-3f9a2c1"
    d.mkdir()
    with pytest.raises(ArtifactError, match=r"manifest\.json: manifest missing"):
        Manifest.read(d)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: "{not json", "not valid JSON"),
        (lambda d: json.dumps({**d, "files": "nope"}), "files"),
        (lambda d: json.dumps({k: v for k, v in d.items() if k != "dataset"}), "dataset"),
        (lambda d: json.dumps({**d, "surprise": 1}), "surprise"),
        (lambda d: json.dumps({**d, "id": "latest"}), "id"),
        (
            lambda d: json.dumps({**d, "files": [{**d["files"][0], "path": "../../etc/passwd"}]}),
            "files.0.path",
        ),
        (lambda d: json.dumps({**d, "files": [{**d["files"][0], "sha256": "xyz"}]}), "sha256"),
    ],
)
def test_malformed_manifest_is_refused_naming_it(
    make_release: MakeRelease, tmp_path: Path, mutate: object, message: str
) -> None:
    m = make_release(0.3)
    path = tmp_path / "releases" / m.id / "manifest.json"
    data = json.loads(path.read_text())
    path.write_text(mutate(data))  # type: ignore[operator]
    with pytest.raises(ArtifactError) as info:
        Manifest.read(path.parent)
    assert str(path) in str(info.value)
    assert message in str(info.value)


def test_renamed_release_dir_is_refused(make_release: MakeRelease, tmp_path: Path) -> None:
    m = make_release(0.3)
    moved = tmp_path / "releases" / "20300101T000000Z-0000000"
    (tmp_path / "releases" / m.id).rename(moved)
    with pytest.raises(ArtifactError, match="does not match its directory name"):
        Manifest.read(moved)


def test_verify_refuses_tampered_missing_and_resized_files(make_release: MakeRelease, tmp_path: Path) -> None:
    m = make_release(0.3)
    d = tmp_path / "releases" / m.id
    m.verify(d)  # intact: passes
    target = d / "models" / "weights.npy"
    original = target.read_bytes()
    # same size, one byte flipped: only the sha256 can tell
    target.write_bytes(bytes([original[0] ^ 1]) + original[1:])
    with pytest.raises(ArtifactError, match=r"models/weights\.npy: sha256 does not match"):
        m.verify(d)
    target.write_bytes(original + b"!")
    with pytest.raises(ArtifactError, match=r"models/weights\.npy: size \d+ bytes differs"):
        m.verify(d)
    target.unlink()
    with pytest.raises(ArtifactError, match=r"models/weights\.npy: listed in the manifest .* but missing"):
        m.verify(d)


def test_git_commit_tolerates_absence(tmp_path: Path) -> None:
    assert git_commit(tmp_path) is None  # not a git repo
    assert git_commit(tmp_path / "does-not-exist") is None
