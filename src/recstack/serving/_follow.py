"""Automatic roll-out: a server that serves a channel follows it.

When the registry's channel pointer moves (``recstack releases promote``, ``recstack retrain``,
``recstack releases rollback``: all the same path), the service must serve the new release. This
module only *notices* the move; rolling out is the service target's job
(`recstack.serving._target`, issue 17): one worker loads the channel's new release in the
background and, once it loaded, publishes it as the service's target; every worker (a restarted
one included) converges to the target, each swapping its state atomically between two requests,
so no request fails during the switch. A release that does not load never becomes the target: the
channel is tried again after ``RETRY_SECONDS``.

The channel file is checked with one ``stat`` per watch interval (the target watcher's tick); only
the worker that wins a non-blocking ``flock`` on ``follow.lock`` in the run directory loads and
publishes, so two workers do not both load the release before one of them could publish it.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from recstack.release.registry import CHANNELS_DIR, Registry

__all__ = ["ChannelFollower"]

log = logging.getLogger(__name__)

#: seconds before a channel release that failed to load is tried again
RETRY_SECONDS = 10.0
LOCK_FILE = "follow.lock"


class ChannelFollower:
    """Watches ``channel`` of the registry at ``releases_dir`` for a holder (`StateHolder`)."""

    def __init__(self, releases_dir: str | Path, channel: str, run_dir: str | Path) -> None:
        self.registry = Registry(releases_dir)
        self.channel = channel
        self.path = Path(releases_dir) / CHANNELS_DIR / f"{channel}.json"
        self.lock_path = Path(run_dir) / LOCK_FILE
        self._stamp: tuple[int, int, int] | None = None
        self._pending: str | None = None  # the channel's release while it differs from the target
        self._failed: dict[str, float] = {}
        self._lock_fd: int | None = None

    def _changed(self) -> bool:
        try:
            st = self.path.stat()
            stamp: tuple[int, int, int] | None = (st.st_mtime_ns, st.st_ino, st.st_size)
        except FileNotFoundError:
            stamp = None
        if stamp == self._stamp:
            return False
        self._stamp = stamp
        return True

    def check(self, holder: Any, on_done: Callable[[Any, Exception | None], None]) -> str | None:
        """One watch step; returns the release it started loading (None: nothing to do)."""
        if self._changed():
            try:
                self._pending = self.registry.channel(self.channel).current
            except Exception as exc:  # a malformed pointer: keep serving, say so
                log.warning("cannot read channel %s: %s", self.channel, exc)
                return None
        want = self._pending
        target = getattr(holder, "target", None)
        have = target.release if target is not None else None
        if want is None or want == have or holder.loading is not None:
            return None
        failed = self._failed.get(want)
        if failed is not None and time.monotonic() - failed < RETRY_SECONDS:
            return None
        if not self._take_lock():
            return None  # another worker is rolling it out; the target will tell us

        def done(state: Any, err: Exception | None) -> None:
            if err is not None:
                self._failed[want] = time.monotonic()
                log.error("channel %s moved to %s, which does not load: %s", self.channel, want, err)
            self._release_lock()
            on_done(state, err)

        log.info("channel %s moved to %s: rolling it out", self.channel, want)
        if not holder.start_reload(want, done, publish=True):
            self._release_lock()
            return None
        return want

    def _take_lock(self) -> bool:
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return False
        self._lock_fd = fd
        return True

    def _release_lock(self) -> None:
        fd, self._lock_fd = self._lock_fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
