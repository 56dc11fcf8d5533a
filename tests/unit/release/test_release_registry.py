"""Registry: list/resolve, the promote gate, rollback, lineage, diff, gc and atomic channel pointers."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from recstack.errors import InvalidArgumentError, NotFoundError
from recstack.release.manifest import Manifest
from recstack.release.registry import PromotionRefusedError, Registry, clean_stale_tmp

MakeRelease = Callable[..., Manifest]


@pytest.fixture
def reg(tmp_path: Path) -> Registry:
    return Registry(tmp_path / "releases")


def test_list_resolve_latest_and_prefix(make_release: MakeRelease, reg: Registry) -> None:
    a = make_release(0.30)
    b = make_release(0.31, parent=a.id)
    assert [m.id for m in reg.list()] == [a.id, b.id]
    assert reg.resolve("latest") == b.id
    assert reg.resolve(a.id[:18]) == a.id  # unique prefix (the second differs in the minute)
    with pytest.raises(NotFoundError, match="no release 'nope'"):
        reg.resolve("nope")
    with pytest.raises(NotFoundError, match="points to no release"):
        reg.resolve("production")


def test_hidden_and_broken_dirs_are_not_releases(make_release: MakeRelease, reg: Registry) -> None:
    a = make_release(0.30)
    (reg.root / ".tmp-123").mkdir()
    (reg.root / "20300101T000000Z-abcdef0").mkdir()  # no manifest: an incomplete copy
    assert [m.id for m in reg.list()] == [a.id]


def test_promote_gate_refuses_more_than_2_percent_drop_stating_both_numbers(
    make_release: MakeRelease, reg: Registry
) -> None:
    cur = make_release(0.3000)
    reg.promote(cur.id)
    worse = make_release(0.2900)  # (0.3000 - 0.2900) / 0.3000 = 3.33% > 2%: refused
    with pytest.raises(PromotionRefusedError) as info:
        reg.promote(worse.id)
    msg = str(info.value)
    assert "0.2900" in msg and "0.3000" in msg and "3.3%" in msg and "--force" in msg
    assert (info.value.candidate, info.value.current) == (0.29, 0.30)
    assert reg.channel("production").current == cur.id  # unchanged
    ok = make_release(0.2950)  # 1.67% below: within the 2% tolerance
    assert reg.promote(ok.id).current == ok.id
    # --force passes the gate and records it
    state = reg.promote(worse.id, force=True)
    assert state.current == worse.id
    assert state.history[-1]["forced"] is True


def test_promote_without_metric_needs_force(make_release: MakeRelease, reg: Registry) -> None:
    reg.promote(make_release(0.3).id)
    blind = make_release(None)
    with pytest.raises(PromotionRefusedError, match="no ndcg@10 for its headline model ease"):
        reg.promote(blind.id)
    assert reg.promote(blind.id, force=True).current == blind.id


def test_channels_are_independent(make_release: MakeRelease, reg: Registry) -> None:
    a, b = make_release(0.3), make_release(0.1)
    reg.promote(a.id, "production")
    reg.promote(b.id, "staging")  # staging was empty: no gate
    assert reg.channel_targets() == {"production": a.id, "staging": b.id}
    with pytest.raises(InvalidArgumentError, match="unknown channel 'canary'"):
        reg.promote(a.id, "canary")


def test_rollback_walks_back_the_promotion_stack(make_release: MakeRelease, reg: Registry) -> None:
    a, b, c = make_release(0.30), make_release(0.31), make_release(0.32)
    for m in (a, b, c):
        reg.promote(m.id)
    assert reg.rollback().current == b.id
    assert reg.rollback().current == a.id
    with pytest.raises(NotFoundError, match="no earlier release"):
        reg.rollback()
    st = reg.channel("production")
    assert st.current == a.id
    assert [h["action"] for h in st.history] == ["promote"] * 3 + ["rollback"] * 2
    assert reg.resolve("production") == a.id
    with pytest.raises(NotFoundError, match="nothing to roll back"):
        reg.rollback("staging")


def test_rollback_skips_deleted_releases(make_release: MakeRelease, reg: Registry) -> None:
    import shutil

    a, b, c = make_release(0.30), make_release(0.31), make_release(0.32)
    for m in (a, b, c):
        reg.promote(m.id)
    shutil.rmtree(reg.path(b.id))  # deleted by hand
    assert reg.rollback().current == a.id


def test_lineage_follows_parents_and_marks_deleted(make_release: MakeRelease, reg: Registry) -> None:
    a = make_release(0.3)
    b = make_release(0.3, parent=a.id)
    c = make_release(0.3, parent=b.id)
    assert [rid for rid, _ in reg.lineage(c.id)] == [c.id, b.id, a.id]
    import shutil

    shutil.rmtree(reg.path(a.id))
    chain = reg.lineage(c.id)
    assert [rid for rid, _ in chain] == [c.id, b.id, a.id]
    assert chain[-1][1] is None


def test_diff_reports_config_metrics_and_files(make_release: MakeRelease, reg: Registry) -> None:
    a = make_release(0.30, config={"models": [{"name": "ease"}], "split": {"seed": 1}})
    b = make_release(0.33, config={"models": [{"name": "ease"}], "split": {"seed": 2}})
    d = reg.diff(a.id, b.id)
    assert d.config == {"split.seed": (1, 2)}
    assert d.metrics == {("ease", "ndcg@10"): (0.30, 0.33)}
    assert d.files_changed == ["models/weights.npy"]  # contents differ ("weights 1" vs "weights 2")
    assert d.files_added == d.files_removed == []
    assert not d.dataset_changed


def test_gc_keeps_newest_and_channel_targets(make_release: MakeRelease, reg: Registry) -> None:
    ms = [make_release(0.3) for _ in range(6)]
    reg.promote(ms[0].id)  # production: ms[0] only
    reg.promote(ms[1].id, "staging")
    reg.promote(ms[2].id, "staging")  # staging: ms[2], rollback target ms[1]
    (reg.root / ".tmp-dead").mkdir()  # a killed build (no live pid)
    deleted = reg.gc(keep=2)
    # kept: the 2 newest (ms[4], ms[5]) + production ms[0] + staging ms[2] and its rollback target ms[1]
    assert deleted == [ms[3].id]
    assert [m.id for m in reg.list()] == [ms[0].id, ms[1].id, ms[2].id, ms[4].id, ms[5].id]
    assert not (reg.root / ".tmp-dead").exists()
    assert reg.gc(keep=0, dry_run=True) == [ms[4].id, ms[5].id]
    with pytest.raises(InvalidArgumentError):
        reg.gc(keep=-1)


def test_clean_stale_tmp_spares_live_builds(tmp_path: Path) -> None:
    live = tmp_path / ".tmp-live"
    live.mkdir()
    (live / ".building.pid").write_text(str(os.getppid()))  # a live process (our parent)
    dead = tmp_path / ".tmp-dead"
    dead.mkdir()
    (dead / ".building.pid").write_text("999999999")  # no such pid
    assert clean_stale_tmp(tmp_path) == [dead]
    assert live.exists()


def test_pointer_write_is_atomic(
    make_release: MakeRelease, reg: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b = make_release(0.3), make_release(0.31)
    reg.promote(a.id)
    path = reg.root / "channels" / "production.json"
    before = path.read_text()
    calls: list[tuple[Any, Any]] = []
    real_replace = os.replace

    def failing_replace(src: Any, dst: Any) -> None:
        calls.append((src, dst))
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk full"):
        reg.promote(b.id)
    # the pointer went through a temp file in the same dir + os.replace; a failure leaves the old
    # pointer byte-for-byte and no temp file behind
    assert len(calls) == 1 and Path(calls[0][1]) == path and Path(calls[0][0]).parent == path.parent
    assert path.read_text() == before
    assert sorted(p.name for p in path.parent.iterdir()) == [".lock", "production.json"]
    monkeypatch.setattr(os, "replace", real_replace)
    reg.promote(b.id)
    assert json.loads(path.read_text())["current"] == b.id
