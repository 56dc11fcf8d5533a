"""`ChannelFollower`: a promote or a rollback of the channel starts one roll-out (load, then publish
the target), on one worker at a time; a release that fails to load is retried later."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from recstack.release import Registry
from recstack.serving import _follow
from recstack.serving._follow import ChannelFollower


@dataclass
class _Target:
    release: str


@dataclass
class FakeHolder:
    """What the follower needs of a `StateHolder`: its target, whether it is loading, start_reload."""

    target: _Target | None = None
    loading: str | None = None
    started: list[tuple[str, bool]] = field(default_factory=list)
    pending: Callable[[Any, Exception | None], None] | None = None

    def start_reload(
        self, release: str, on_done: Callable[[Any, Exception | None], None], *, publish: bool
    ) -> bool:
        self.started.append((release, publish))
        self.loading = release
        self.pending = on_done
        return True

    def finish(self, ok: bool = True) -> None:
        assert self.pending is not None and self.loading is not None
        done, self.pending = self.pending, None
        if ok:
            self.target = _Target(self.loading)
        self.loading = None
        done(object() if ok else None, None if ok else RuntimeError("broken release"))


def test_promote_and_rollback_start_one_rollout(make_release: Any, tmp_path: Path) -> None:
    root = tmp_path / "releases"
    a, b = make_release(0.3), make_release(0.31)
    reg = Registry(root)
    reg.promote(a.id)
    run = tmp_path / "run"
    run.mkdir()
    w1, w2 = FakeHolder(_Target(a.id)), FakeHolder(_Target(a.id))
    f1, f2 = ChannelFollower(root, "production", run), ChannelFollower(root, "production", run)
    noop: Callable[[Any, Exception | None], None] = lambda s, e: None  # noqa: E731
    assert f1.check(w1, noop) is None and f2.check(w2, noop) is None  # serving the channel already
    reg.promote(b.id)
    assert f1.check(w1, noop) == b.id and w1.started == [(b.id, True)]  # load, then publish
    assert f2.check(w2, noop) is None and w2.started == []  # the other worker waits for the target
    w1.finish()
    w2.target = _Target(b.id)  # the published target reaches the second worker
    assert f1.check(w1, noop) is None and f2.check(w2, noop) is None
    reg.rollback()  # the same path back
    assert f2.check(w2, noop) == a.id and w2.started == [(a.id, True)]


def test_a_release_that_fails_to_load_is_retried_later(
    make_release: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "releases"
    a, b = make_release(0.3), make_release(0.31)
    reg = Registry(root)
    reg.promote(a.id)
    reg.promote(b.id)
    run = tmp_path / "run"
    run.mkdir()
    w = FakeHolder(_Target(a.id))
    f = ChannelFollower(root, "production", run)
    errors: list[Exception | None] = []
    assert f.check(w, lambda s, e: errors.append(e)) == b.id
    w.finish(ok=False)
    assert isinstance(errors[-1], RuntimeError)
    assert f.check(w, lambda s, e: None) is None  # not again at once
    monkeypatch.setattr(_follow, "RETRY_SECONDS", 0.0)
    assert f.check(w, lambda s, e: None) == b.id
