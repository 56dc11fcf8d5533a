"""The release manifest: what a release holds, how it was built and the sha256 of every file.

A release is a directory ``releases/<id>/`` with ``manifest.json`` plus files. The manifest is the
only entry point: loaders read nothing that the manifest does not list, and verify each listed file's
size and sha256 before using it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from recstack.errors import ArtifactError
from recstack.events.dataset import EventsLineage

__all__ = [
    "MANIFEST_NAME",
    "RELEASE_ID_RE",
    "ArtifactsInfo",
    "DatasetInfo",
    "FileEntry",
    "HeadlineInfo",
    "IndexInfo",
    "Manifest",
    "git_commit",
    "hash_files",
    "new_release_id",
    "sha256_file",
]

MANIFEST_NAME = "manifest.json"
#: ``20261123T101500Z-3f9a2c1``: UTC time to the second, then 7 hex digits of a content hash.
RELEASE_ID_RE = re.compile(r"^\d{8}T\d{6}Z-[0-9a-f]{7}$")
_CHUNK = 1 << 20


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FileEntry(_Strict):
    """One file of a release: path relative to the release dir (POSIX), size in bytes, sha256 hex."""

    path: str
    size: int = Field(ge=0)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")

    @field_validator("path")
    @classmethod
    def _relative(cls, v: str) -> str:
        p = Path(v)
        if not v or p.is_absolute() or ".." in p.parts or v == MANIFEST_NAME or "\\" in v:
            raise ValueError(f"file path {v!r} must be relative to the release dir, without '..'")
        return v


class DatasetInfo(_Strict):
    """The dataset a release was built from: name, content fingerprint (sha256) and counts."""

    name: str
    fingerprint: str
    counts: dict[str, int]


class HeadlineInfo(_Strict):
    """The metric `promote` gates on: ``metrics[model][metric]``."""

    model: str
    metric: str = "ndcg@10"


class IndexInfo(_Strict):
    """The ANN index over item embeddings: backend, dimension, metric, the model it indexes."""

    backend: str
    path: str
    dim: int
    metric: str
    source: str


class ArtifactsInfo(_Strict):
    """Where each component lives inside the release (paths relative to the release dir)."""

    dataset: str = "dataset"
    #: model alias -> save dir of the Retriever (config.json + arrays)
    retrievers: dict[str, str] = Field(default_factory=dict)
    #: model alias -> registry name (``ease``, ``two_stage:deepfm``)
    retriever_models: dict[str, str] = Field(default_factory=dict)
    #: ranker name -> ONNX file
    rankers: dict[str, str] = Field(default_factory=dict)
    #: model alias -> ONNX user tower (user features -> embedding; score = embedding @ item embeddings)
    user_towers: dict[str, str] = Field(default_factory=dict)
    #: the saved FeatureTables dir (Parquet tables + features.json), when built
    features: str | None = None
    #: model alias -> .npy file of item embeddings [n_items, dim] float32
    embeddings: dict[str, str] = Field(default_factory=dict)
    #: which embeddings `Release.item_embeddings` returns (the ones the index holds)
    primary_embeddings: str | None = None
    index: IndexInfo | None = None
    metrics: str = "metrics.json"
    report: str | None = "report.html"


class Manifest(_Strict):
    """Everything a release says about itself. Serialised as ``manifest.json``."""

    format: int = 1
    id: str
    created_at: datetime
    dataset: DatasetInfo
    config: dict[str, Any]
    package_version: str
    git_commit: str | None = None
    parent: str | None = None
    #: what the release took from the event log (None: built without it); serving replays the log
    #: after ``events.last_offset`` into the histories
    events: EventsLineage | None = None
    #: the data checks of the build (`recstack.data.checks.check_report`): results, and the failures
    #: allowed with their reason (None: built without checks)
    data_checks: dict[str, Any] | None = None
    headline: HeadlineInfo | None = None
    #: model alias -> metric name (``ndcg@10``) -> value, measured on the holdout split
    metrics: dict[str, dict[str, float]] = Field(default_factory=dict)
    #: stage -> wall seconds
    timings: dict[str, float] = Field(default_factory=dict)
    #: stage -> the build process's peak RSS in MB up to the end of that stage (its high-water mark;
    #: Ray workers not included)
    peak_rss_mb: dict[str, int] = Field(default_factory=dict)
    #: optional models of the config that were not built, with the reason
    skipped: dict[str, str] = Field(default_factory=dict)
    artifacts: ArtifactsInfo = Field(default_factory=ArtifactsInfo)
    files: list[FileEntry]

    @field_validator("id")
    @classmethod
    def _id_format(cls, v: str) -> str:
        if not RELEASE_ID_RE.match(v):
            raise ValueError(f"release id {v!r} is not of the form 20261123T101500Z-3f9a2c1")
        return v

    @field_validator("created_at")
    @classmethod
    def _utc(cls, v: datetime) -> datetime:
        if v.tzinfo is None:
            raise ValueError("created_at must carry a time zone (UTC)")
        return v.astimezone(UTC)

    # ------------------------------------------------------------- helpers
    def headline_value(self) -> float | None:
        """The headline metric's value, or None when the release has none."""
        if self.headline is None:
            return None
        return self.metrics.get(self.headline.model, {}).get(self.headline.metric)

    def file(self, path: str) -> FileEntry:
        for f in self.files:
            if f.path == path:
                return f
        raise ArtifactError(f"{path}: not listed in the release manifest of {self.id}")

    def total_size(self) -> int:
        """Bytes of all listed files (manifest excluded)."""
        return sum(f.size for f in self.files)

    # -------------------------------------------------------------- storage
    def to_json(self) -> str:
        return json.dumps(self.model_dump(mode="json"), indent=2, sort_keys=False) + "\n"

    def write(self, directory: str | Path) -> Path:
        """Write ``manifest.json`` into ``directory`` (fsynced)."""
        path = Path(directory) / MANIFEST_NAME
        with path.open("w", encoding="utf-8") as fh:
            fh.write(self.to_json())
            fh.flush()
            os.fsync(fh.fileno())
        return path

    @classmethod
    def read(cls, directory: str | Path) -> Manifest:
        """Read and validate ``<directory>/manifest.json``; any problem is an ArtifactError naming it."""
        path = Path(directory) / MANIFEST_NAME
        if not path.is_file():
            raise ArtifactError(
                f"{path}: manifest missing; this is not a complete release (rebuild it with `recstack build`)"
            )
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ArtifactError(f"{path}: malformed manifest (not valid JSON: {exc})") from exc
        try:
            manifest = cls.model_validate(data)
        except ValidationError as exc:
            errs = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or '<root>'}: {e['msg']}" for e in exc.errors()[:5]
            )
            raise ArtifactError(f"{path}: malformed manifest ({errs})") from exc
        if manifest.id != Path(directory).name and not Path(directory).name.startswith(".tmp-"):
            raise ArtifactError(
                f"{path}: manifest id {manifest.id!r} does not match its directory name "
                f"{Path(directory).name!r}; a release directory must not be renamed"
            )
        return manifest

    def verify(self, directory: str | Path) -> None:
        """Check every listed file exists with the listed size and sha256; raise ArtifactError
        naming the first file that does not."""
        root = Path(directory)
        for entry in self.files:
            p = root / entry.path
            if not p.is_file():
                raise ArtifactError(f"{p}: listed in the manifest of release {self.id} but missing")
            size = p.stat().st_size
            if size != entry.size:
                raise ArtifactError(
                    f"{p}: size {size} bytes differs from the manifest ({entry.size}); the release "
                    "was modified after it was built — rebuild it or restore the file"
                )
            if sha256_file(p) != entry.sha256:
                raise ArtifactError(
                    f"{p}: sha256 does not match the manifest of release {self.id}; the file was "
                    "tampered with or corrupted — rebuild the release or restore the file"
                )


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with Path(path).open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def hash_files(directory: str | Path) -> list[FileEntry]:
    """A FileEntry for every regular file under ``directory`` except the manifest, sorted by path."""
    root = Path(directory)
    out: list[FileEntry] = []
    for p in sorted(root.rglob("*")):
        if p.is_symlink():
            raise ArtifactError(f"{p}: symlinks are not allowed in a release")
        if not p.is_file():
            continue
        rel = p.relative_to(root).as_posix()
        if rel == MANIFEST_NAME:
            continue
        out.append(FileEntry(path=rel, size=p.stat().st_size, sha256=sha256_file(p)))
    return out


def new_release_id(created_at: datetime, content: Any) -> str:
    """``<UTC time to the second>Z-<7 hex of sha256(created_at with microseconds + content)>``.

    ``content`` is anything JSON-serialisable that identifies the release's content (config, file
    hashes); including the microsecond time keeps two builds of the same content distinct.
    """
    ts = created_at.astimezone(UTC)
    payload = json.dumps({"t": ts.isoformat(), "c": content}, sort_keys=True, default=str)
    return f"{ts:%Y%m%dT%H%M%SZ}-{hashlib.sha256(payload.encode()).hexdigest()[:7]}"


def git_commit(cwd: str | Path | None = None) -> str | None:
    """``git rev-parse HEAD`` in ``cwd`` (default: the process cwd), or None outside a git repo or
    without git."""
    try:
        res = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    sha = res.stdout.strip()
    return sha if res.returncode == 0 and re.fullmatch(r"[0-9a-f]{40,64}", sha) else None
