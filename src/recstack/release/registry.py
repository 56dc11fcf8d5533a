"""The release registry: list, show, diff, promote, rollback, lineage and gc over ``releases/``.

Layout::

    releases/
      20261123T101500Z-3f9a2c1/   manifest.json + files (one complete release)
      .tmp-<id>/                  a build in progress (or a killed one; removed by gc / next build)
      channels/production.json    {"channel", "current", "stack": [...], "history": [...]}

Channel pointers are replaced atomically (temp file + ``os.replace``) under an advisory lock, so a
reader sees either the old or the new pointer, never a half-written one.
"""

from __future__ import annotations

import builtins
import contextlib
import fcntl
import json
import logging
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

from recstack.errors import ArtifactError, InvalidArgumentError, NotFoundError, RecstackError
from recstack.release.manifest import MANIFEST_NAME, RELEASE_ID_RE, Manifest

__all__ = [
    "CHANNELS",
    "ChannelState",
    "PromotionRefusedError",
    "Registry",
    "ReleaseDiff",
    "clean_stale_tmp",
]

log = logging.getLogger(__name__)

CHANNELS: tuple[str, ...] = ("production", "staging")
TMP_PREFIX = ".tmp-"
PID_FILE = ".building.pid"
CHANNELS_DIR = "channels"


class PromotionRefusedError(RecstackError):
    """`promote` refused a release whose headline metric is too far below the channel's current one."""

    http_status = 409
    grpc_code = "FAILED_PRECONDITION"
    code = "promotion_refused"

    def __init__(self, message: str, candidate: float | None = None, current: float | None = None) -> None:
        super().__init__(message)
        self.candidate = candidate
        self.current = current


@dataclass
class ChannelState:
    """A channel pointer. ``stack`` holds the promoted releases in effect (current = last);
    ``history`` is the append-only audit log of promotions and rollbacks."""

    channel: str
    current: str | None = None
    updated_at: str | None = None
    stack: list[str] = field(default_factory=list)
    history: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "channel": self.channel,
            "current": self.current,
            "updated_at": self.updated_at,
            "stack": self.stack,
            "history": self.history,
        }

    @classmethod
    def from_json(cls, data: Any, path: Path) -> ChannelState:
        try:
            st = cls(
                channel=str(data["channel"]),
                current=None if data.get("current") is None else str(data["current"]),
                updated_at=data.get("updated_at"),
                stack=[str(x) for x in data.get("stack", [])],
                history=list(data.get("history", [])),
            )
        except (KeyError, TypeError, AttributeError) as exc:
            raise ArtifactError(f"{path}: malformed channel pointer ({exc!r})") from exc
        return st

    @property
    def previous(self) -> str | None:
        return self.stack[-2] if len(self.stack) >= 2 else None


@dataclass
class ReleaseDiff:
    """What changed from release ``a`` to release ``b``."""

    a: str
    b: str
    #: dotted config key -> (value in a, value in b); missing = None
    config: dict[str, tuple[Any, Any]]
    #: (model, metric) -> (value in a, value in b)
    metrics: dict[tuple[str, str], tuple[float | None, float | None]]
    files_added: list[str]
    files_removed: list[str]
    files_changed: list[str]
    dataset_changed: bool


def _now() -> str:
    return datetime.now(UTC).isoformat()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_stale_tmp(root: str | Path) -> list[Path]:
    """Remove ``.tmp-*`` build dirs whose building process is gone (killed builds). Returns them."""
    removed: list[Path] = []
    r = Path(root)
    if not r.is_dir():
        return removed
    for d in r.iterdir():
        if not (d.is_dir() and (d.name.startswith(TMP_PREFIX) or d.name.startswith(".trash-"))):
            continue
        try:
            pid = int((d / PID_FILE).read_text().strip())
        except (OSError, ValueError):
            pid = -1
        if pid > 0 and pid != os.getpid() and _pid_alive(pid):
            continue
        if pid == os.getpid() and d.name.startswith(TMP_PREFIX):
            continue
        shutil.rmtree(d, ignore_errors=True)
        removed.append(d)
    return removed


def _flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(data, dict):
        out: dict[str, Any] = {}
        for k, v in data.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: data}


class Registry:
    """The releases under ``root`` and their channel pointers."""

    channels: ClassVar[tuple[str, ...]] = CHANNELS

    def __init__(self, root: str | Path, *, max_relative_drop: float = 0.02) -> None:
        self.root = Path(root)
        self.max_relative_drop = max_relative_drop

    # ---------------------------------------------------------------- reading
    def ids(self) -> builtins.list[str]:
        """Ids of the complete releases (dirs with a manifest), oldest first (ids sort by time)."""
        if not self.root.is_dir():
            return []
        return sorted(
            d.name
            for d in self.root.iterdir()
            if d.is_dir() and RELEASE_ID_RE.match(d.name) and (d / MANIFEST_NAME).is_file()
        )

    def list(self) -> builtins.list[Manifest]:
        """Manifests of every valid release, oldest first (by created_at, then id). Releases with a
        malformed manifest are skipped with a warning (`show` reports the error)."""
        out: builtins.list[Manifest] = []
        for rid in self.ids():
            try:
                out.append(Manifest.read(self.root / rid))
            except ArtifactError as exc:
                log.warning("skipping release %s: %s", rid, exc)
        out.sort(key=lambda m: (m.created_at, m.id))
        return out

    def latest(self) -> str | None:
        ms = self.list()
        return ms[-1].id if ms else None

    def path(self, release_id: str) -> Path:
        return self.root / release_id

    def resolve(self, ref: str) -> str:
        """A release id from an id, a unique id prefix, a channel name or ``latest``."""
        if ref in self.channels:
            cur = self.channel(ref).current
            if cur is None:
                raise NotFoundError(
                    f"channel {ref!r} points to no release yet; promote one with "
                    f"`recstack releases promote ID --channel {ref}`"
                )
            return cur
        ids = self.ids()
        if ref == "latest":
            latest = self.latest()
            if latest is None:
                raise NotFoundError(f"no releases under {self.root}; build one with `recstack build`")
            return latest
        if ref in ids:
            return ref
        matches = [i for i in ids if i.startswith(ref)] if ref else []
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            raise InvalidArgumentError(f"release prefix {ref!r} is ambiguous: {', '.join(matches[:5])}")
        raise NotFoundError(f"no release {ref!r} under {self.root}; `recstack releases list` shows the ids")

    def show(self, ref: str) -> Manifest:
        return Manifest.read(self.path(self.resolve(ref)))

    # ---------------------------------------------------------------- channels
    def _channel_path(self, channel: str) -> Path:
        return self.root / CHANNELS_DIR / f"{channel}.json"

    def _check_channel(self, channel: str) -> None:
        if channel not in self.channels:
            raise InvalidArgumentError(f"unknown channel {channel!r}; choose from {', '.join(self.channels)}")

    def channel(self, channel: str) -> ChannelState:
        """The pointer of ``channel`` (empty state when never promoted)."""
        path = self._channel_path(channel)
        if not path.is_file():
            return ChannelState(channel=channel)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise ArtifactError(f"{path}: malformed channel pointer ({exc})") from exc
        return ChannelState.from_json(data, path)

    def channel_targets(self) -> dict[str, str]:
        """channel -> current release id, for every channel that points somewhere."""
        out: dict[str, str] = {}
        for ch in self.channels:
            cur = self.channel(ch).current
            if cur is not None:
                out[ch] = cur
        return out

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        d = self.root / CHANNELS_DIR
        d.mkdir(parents=True, exist_ok=True)
        with (d / ".lock").open("a") as fh:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)

    def _write_channel(self, state: ChannelState) -> None:
        """Write the pointer atomically: a temp file in the same dir, fsync, os.replace."""
        path = self._channel_path(state.channel)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            with tmp.open("w", encoding="utf-8") as fh:
                json.dump(state.to_json(), fh, indent=2)
                fh.write("\n")
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        with contextlib.suppress(OSError):  # make the rename durable where the OS allows it
            dfd = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)

    def promote(
        self, ref: str, channel: str = "production", *, force: bool = False, reason: str | None = None
    ) -> ChannelState:
        """Point ``channel`` at release ``ref``.

        Refused (PromotionRefusedError, stating both numbers) when the release's headline metric is
        more than ``max_relative_drop`` (2%) below that of the channel's current release, unless
        ``force``. The candidate's headline (model, metric) is looked up in both releases.
        ``reason`` (with ``force``): the gate that was applied instead, recorded in the history
        (``recstack retrain`` compares both releases on the same recent events).
        """
        self._check_channel(channel)
        rid = self.resolve(ref)
        cand = Manifest.read(self.path(rid))
        with self._lock():
            state = self.channel(channel)
            if state.current == rid:
                return state
            gate = "no current release"
            if state.current is not None and not force:
                gate = self._gate(cand, state.current, channel)
            elif state.current is not None:
                gate = reason or "forced"
            elif reason:
                gate = reason
            state.stack.append(rid)
            state.current = rid
            state.updated_at = _now()
            state.history.append(
                {"action": "promote", "release": rid, "at": state.updated_at, "forced": force, "gate": gate}
            )
            self._write_channel(state)
        return state

    def _gate(self, cand: Manifest, current_id: str, channel: str) -> str:
        try:
            cur = Manifest.read(self.path(current_id))
        except ArtifactError:
            return f"current release {current_id} unreadable; not compared"
        if cand.headline is None:
            raise PromotionRefusedError(
                f"release {cand.id} has no headline metric to compare with {channel}'s current "
                f"{current_id}; rebuild with evaluation enabled or pass --force"
            )
        model, metric = cand.headline.model, cand.headline.metric
        protos = [m.config.get("split", {}).get("protocol") for m in (cand, cur)]
        if protos[0] != protos[1]:
            # figures of two protocols (stratified vs temporal-rolling...) are not comparable
            return f"headline protocol changed ({protos[1]} -> {protos[0]}); not compared"
        new = cand.metrics.get(model, {}).get(metric)
        old = cur.metrics.get(model, {}).get(metric)
        label = f"{metric} of {model}"
        if old is None and cur.headline is not None and cur.headline.metric == metric:
            old = cur.headline_value()
            label = f"{metric} (headline models {model} vs {cur.headline.model})"
        if new is None:
            raise PromotionRefusedError(
                f"release {cand.id} has no {metric} for its headline model {model}; pass --force to "
                "promote it anyway"
            )
        if old is None:
            return f"{channel}'s current {current_id} has no {label}; not compared"
        if old > 0 and (old - new) / old > self.max_relative_drop:
            drop = 100.0 * (old - new) / old
            raise PromotionRefusedError(
                f"refusing to promote {cand.id} to {channel}: {label} is {new:.4f}, {drop:.1f}% below "
                f"the current release {current_id} ({old:.4f}); the limit is "
                f"{100 * self.max_relative_drop:.0f}%. Pass --force to promote anyway.",
                candidate=new,
                current=old,
            )
        return f"{label} {new:.4f} vs current {old:.4f}: ok"

    def rollback(self, channel: str = "production") -> ChannelState:
        """Point ``channel`` back at the release promoted before its current one (skipping releases
        that no longer exist)."""
        self._check_channel(channel)
        with self._lock():
            state = self.channel(channel)
            if state.current is None:
                raise NotFoundError(f"channel {channel!r} points to no release; nothing to roll back")
            stack = list(state.stack)
            old = stack.pop() if stack else state.current
            while stack and not (self.path(stack[-1]) / MANIFEST_NAME).is_file():
                stack.pop()
            if not stack:
                raise NotFoundError(
                    f"channel {channel!r} has no earlier release to roll back to (current {old}); "
                    "promote an older release explicitly with `recstack releases promote ID --force`"
                )
            state.stack = stack
            state.current = stack[-1]
            state.updated_at = _now()
            state.history.append(
                {"action": "rollback", "release": state.current, "from": old, "at": state.updated_at}
            )
            self._write_channel(state)
        return state

    # ---------------------------------------------------------------- history
    def lineage(self, ref: str) -> builtins.list[tuple[str, Manifest | None]]:
        """The parent chain from ``ref`` back to the first build: [(id, manifest or None when that
        release was deleted)], newest first."""
        rid: str | None = self.resolve(ref)
        out: builtins.list[tuple[str, Manifest | None]] = []
        seen: set[str] = set()
        while rid is not None and rid not in seen:
            seen.add(rid)
            try:
                m: Manifest | None = Manifest.read(self.path(rid))
            except ArtifactError:
                m = None
            out.append((rid, m))
            rid = m.parent if m is not None else None
        return out

    def diff(self, a: str, b: str) -> ReleaseDiff:
        ma, mb = self.show(a), self.show(b)
        fa, fb = _flatten(ma.config), _flatten(mb.config)
        config = {k: (fa.get(k), fb.get(k)) for k in sorted(set(fa) | set(fb)) if fa.get(k) != fb.get(k)}
        metrics: dict[tuple[str, str], tuple[float | None, float | None]] = {}
        for model in sorted(set(ma.metrics) | set(mb.metrics)):
            ra, rb = ma.metrics.get(model, {}), mb.metrics.get(model, {})
            for metric in sorted(set(ra) | set(rb)):
                metrics[(model, metric)] = (ra.get(metric), rb.get(metric))
        ha = {f.path: f.sha256 for f in ma.files}
        hb = {f.path: f.sha256 for f in mb.files}
        return ReleaseDiff(
            a=ma.id,
            b=mb.id,
            config=config,
            metrics=metrics,
            files_added=sorted(set(hb) - set(ha)),
            files_removed=sorted(set(ha) - set(hb)),
            files_changed=sorted(p for p in set(ha) & set(hb) if ha[p] != hb[p]),
            dataset_changed=ma.dataset.fingerprint != mb.dataset.fingerprint,
        )

    # --------------------------------------------------------------------- gc
    def protected(self) -> set[str]:
        """Releases gc never deletes: each channel's current release and its rollback target."""
        keep: set[str] = set()
        for ch in self.channels:
            st = self.channel(ch)
            if st.current is not None:
                keep.add(st.current)
            if st.previous is not None:
                keep.add(st.previous)
        return keep

    def gc(self, keep: int, *, dry_run: bool = False) -> builtins.list[str]:
        """Delete all but the ``keep`` newest releases, never one a channel points to (nor its
        rollback target); also remove stale ``.tmp-*`` dirs of killed builds. Returns deleted ids."""
        if keep < 0:
            raise InvalidArgumentError(f"--keep must be >= 0, got {keep}")
        if not dry_run:
            clean_stale_tmp(self.root)
        ids = [m.id for m in self.list()]
        # broken releases (manifest unreadable) count as the oldest candidates for deletion
        broken = [i for i in self.ids() if i not in set(ids)]
        newest = set(ids[-keep:]) if keep > 0 else set()
        protected = self.protected()
        doomed = [i for i in broken + ids if i not in newest and i not in protected]
        if dry_run:
            return doomed
        for rid in doomed:
            src = self.path(rid)
            trash = self.root / f".trash-{rid}"
            os.rename(src, trash)  # disappears atomically from listings, then is removed
            shutil.rmtree(trash, ignore_errors=True)
        return doomed
