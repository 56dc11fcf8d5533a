"""The release the *service* serves: one desired-release target that every worker converges to.

Reload is for the service, not for the worker that happened to receive ``POST /admin/reload``. The
service holds a **target**: ``target.json`` in the server's run directory (``recstack serve`` makes
one per server and gives it to every worker), written atomically (temp file + ``os.replace``) with
the release id, what was asked for (an id or a channel) and a sequence number that grows with every
write. Every worker converges to it:

- at start, a worker loads the target's release (``recstack serve`` writes the first target, the
  channel resolved to a release id, before any worker starts), so a worker restarted after a crash
  serves what its peers serve, not whatever the channel points to by then;
- while serving, a watcher thread in each worker stats the file every ``POLL_SECONDS`` and, when the
  target names another release, loads it in the background and swaps it in atomically
  (`recstack.serving._state.StateHolder`);
- ``POST /admin/reload`` on any worker loads the requested release there first (a release that does
  not load never becomes the target), then writes the target; the other workers follow within a poll
  interval plus their load time. ``?wait=true`` answers once every worker reports the new release.

Each worker reports where it is in ``workers/<pid>.json`` (release, target sequence, loading, last
error), which ``/readyz`` and ``/admin/reload?wait=true`` read; the files of dead workers are ignored.

Issue 20 (channel watching, a durable event log) reuses this: a watcher that sees the channel move
writes the same target (`RunDir.write_target`), and every worker, a restarted one included, follows
it with nothing else changed.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

__all__ = ["POLL_SECONDS", "RunDir", "Target"]

#: how often a worker checks the target file (a stat(); the file is read only when it changed)
POLL_SECONDS = 0.25
TARGET_FILE = "target.json"
WORKERS_DIR = "workers"


@dataclass(frozen=True)
class Target:
    """The service's desired release."""

    release: str  #: release id every worker should serve
    requested: str  #: what was asked for (a release id, a prefix or a channel)
    seq: int  #: grows with every write
    at: float  #: Unix time of the write


def _write_json(path: Path, data: dict[str, Any]) -> None:
    """Write ``data`` to ``path`` atomically (readers see the old or the new file, never a part)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # pragma: no cover - someone else's process: it exists
        return True
    return True


class RunDir:
    """A server's run directory: ``target.json`` and ``workers/<pid>.json``."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        (self.path / WORKERS_DIR).mkdir(parents=True, exist_ok=True)
        self.target_path = self.path / TARGET_FILE

    # ------------------------------------------------------------------ target
    def read_target(self) -> Target | None:
        try:
            data = json.loads(self.target_path.read_text())
            return Target(str(data["release"]), str(data["requested"]), int(data["seq"]), float(data["at"]))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError):  # pragma: no cover - hand-edited file
            return None

    def write_target(self, release: str, requested: str | None = None) -> Target:
        """Make ``release`` the service's target (atomic); returns it."""
        old = self.read_target()
        target = Target(release, requested or release, (old.seq + 1) if old else 1, time.time())
        _write_json(self.target_path, asdict(target))
        return target

    def stamp(self) -> tuple[int, int, int] | None:
        """(mtime ns, inode, size) of the target file: a cheap change check (None: no target)."""
        try:
            st = self.target_path.stat()
        except FileNotFoundError:
            return None
        return (st.st_mtime_ns, st.st_ino, st.st_size)

    # ------------------------------------------------------------------ workers
    def write_status(self, pid: int, status: dict[str, Any]) -> None:
        _write_json(self.path / WORKERS_DIR / f"{pid}.json", {"pid": pid, "at": time.time(), **status})

    def remove_status(self, pid: int) -> None:
        with contextlib.suppress(FileNotFoundError):
            (self.path / WORKERS_DIR / f"{pid}.json").unlink()

    def statuses(self) -> dict[int, dict[str, Any]]:
        """The status of every live worker, by pid."""
        out: dict[int, dict[str, Any]] = {}
        for f in (self.path / WORKERS_DIR).glob("*.json"):
            try:
                pid = int(f.stem)
            except ValueError:
                continue
            if not _alive(pid):
                continue
            try:
                out[pid] = json.loads(f.read_text())
            except (OSError, ValueError):  # being replaced right now: read it next time
                continue
        return out
