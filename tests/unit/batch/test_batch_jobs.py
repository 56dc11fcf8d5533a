"""`recstack batch users|pairs` end to end on a built release: row counts, release ids, --keep, and a
job SIGKILLed while writing leaves the previous version current and no partial table visible."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from recstack.batch import JobSpec, open_sink, run_job
from recstack.cli import app
from recstack.store.tables import BatchReader

N_USERS = 200  # conftest.N_USERS

runner = CliRunner()


def _cli(*args: str) -> dict[str, object]:
    res = runner.invoke(app, ["--quiet", "batch", *args])
    assert res.exit_code == 0, res.output
    out: dict[str, object] = json.loads(res.output.strip().splitlines()[-1])
    return out


def test_users_and_pairs_cli(built_release: tuple[Path, str], tmp_path: Path) -> None:
    root, rid = built_release
    url = f"sqlite:///{tmp_path / 'b.db'}"
    common = ["--release", rid, "--releases-dir", str(root), "--sink", url, "--block-size", "64"]
    users = _cli("users", "--k", "7", *common)
    assert users["rows"] == N_USERS and users["release_id"] == rid
    pairs = _cli("pairs", "--top", "10", "--k", "5", *common)
    assert pairs["rows"] == 45  # 10 * 9 / 2 pairs of the 10 most popular items
    with sqlite3.connect(tmp_path / "b.db") as conn:
        t = conn.execute(
            "SELECT table_name FROM recstack_releases WHERE kind='users' AND current"
        ).fetchone()[0]
        assert rid.lower().replace("-", "_") in t  # the release id is in the table name...
        rows = conn.execute(f"SELECT DISTINCT release_id FROM {t}").fetchall()
        assert rows == [(rid,)]  # ...and in every row
        items = json.loads(conn.execute(f"SELECT items FROM {t} LIMIT 1").fetchone()[0])
        assert len(items) == 7
    reader = BatchReader(url)
    hit = reader.lookup("pairs", tuple(sorted(map(str, _two_popular(root, rid)))))
    assert hit is not None and len(json.loads(hit[0])) == 5
    reader.close()


def _two_popular(root: Path, rid: str) -> list[object]:
    from recstack.batch import get_scorer

    sc = get_scorer(JobSpec(kind="pairs", release=rid, releases_dir=str(root), top=10))
    return sc.cat.dataset.item_vocab.external(sc.cat.pop_order[:2])


def test_keep(built_release: tuple[Path, str], tmp_path: Path) -> None:
    root, rid = built_release
    url = f"sqlite:///{tmp_path / 'b.db'}"
    spec = JobSpec(kind="users", release=rid, releases_dir=str(root), k=3, block_size=100)
    reports = [run_job(spec, url, keep=2) for _ in range(3)]
    assert reports[2].dropped == [reports[0].published.table if reports[0].published else ""]
    sink = open_sink(url)
    assert [v.version for v in sink.versions("users")] == [reports[2].version, reports[1].version]
    assert len(sink.tables()) == 2
    sink.close()


def test_sigkill_midway_keeps_previous_version(built_release: tuple[Path, str], tmp_path: Path) -> None:
    root, rid = built_release
    db = tmp_path / "b.db"
    url = f"sqlite:///{db}"
    first = run_job(JobSpec(kind="users", release=rid, releases_dir=str(root), k=3), url)
    cmd = [
        sys.executable, "-m", "recstack.cli", "--quiet", "batch", "users", "--release", rid,
        "--releases-dir", str(root), "--sink", url, "--k", "3", "--block-size", "10",
        "--block-delay", "0.5", "--workers", "1",
    ]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=os.environ.copy())
    try:
        staging_rows = 0
        deadline = time.monotonic() + 120
        while staging_rows == 0:  # wait until the new job has committed some rows
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
            assert time.monotonic() < deadline
            time.sleep(0.2)
            sink = open_sink(url)
            stg = [t for t in sink.tables() if t.startswith("stg_")]
            staging_rows = sink.count(stg[0]) if stg else 0
            sink.close()
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert 0 < staging_rows < N_USERS
    sink = open_sink(url)
    cur = sink.current("users")
    assert cur is not None and cur.version == first.version  # the previous version is still current
    published = [t for t in sink.tables() if not t.startswith("stg_")]
    assert published == [cur.table]  # no partial table under a published name
    sink.close()
    reader = BatchReader(url, pointer_ttl=0)
    hit = reader.lookup("users", (str(_first_user(root, rid)),))
    assert hit is not None and hit[3] == first.version
    reader.close()
    # the next job publishes and (with --keep) drops the orphan staging table
    nxt = run_job(JobSpec(kind="users", release=rid, releases_dir=str(root), k=3), url, keep=1)
    assert any(t.startswith("stg_") for t in nxt.dropped)


def _first_user(root: Path, rid: str) -> object:
    from recstack.batch import get_scorer

    return get_scorer(
        JobSpec(kind="users", release=rid, releases_dir=str(root))
    ).cat.dataset.user_vocab.external([0])[0]


@pytest.mark.postgres
def test_pairs_into_postgres(built_release: tuple[Path, str], clean_postgres: str) -> None:
    root, rid = built_release
    rep = run_job(JobSpec(kind="pairs", release=rid, releases_dir=str(root), top=12, k=4), clean_postgres)
    assert rep.rows == 66  # 12 * 11 / 2
    sink = open_sink(clean_postgres)
    cur = sink.current("pairs")
    assert cur is not None and cur.rows == 66 and sink.count(cur.table) == 66
    sink.close()
    reader = BatchReader(clean_postgres)
    a, b = sorted(map(str, _two_popular(root, rid)))
    hit = reader.lookup("pairs", (a, b))
    assert hit is not None and hit[2] == rid and len(json.loads(hit[0])) == 4
    reader.close()


def test_block_encoding_matches_row_by_row(built_release: tuple[Path, str]) -> None:
    """The one-call-per-block JSON encoding gives the same rows as the row-by-row form; padded rows
    (fewer than k items) keep only their items."""
    import numpy as np

    from recstack.batch.jobs import RowEncoder
    from recstack.batch.tasks import Block, compute_block, get_scorer

    root, rid = built_release
    for kind, k in (("users", 7), ("pairs", 5)):
        spec = JobSpec(kind=kind, release=rid, releases_dir=str(root), k=k, top=10)  # type: ignore[arg-type]
        res = compute_block(spec, Block(0, 0, 40))
        enc = RowEncoder(get_scorer(spec), rid)
        assert enc._ext is not None
        fast = enc.rows(kind, res)
        enc._ext = None
        slow = enc.rows(kind, res)
        assert fast == slow and len(fast) == 40
        ext = get_scorer(spec).cat.item_ids
        assert json.loads(fast[0][-2]) == [ext[i] for i in res.items[0].tolist()]
        np.testing.assert_array_equal(np.asarray(json.loads(fast[0][-1]), dtype=np.float32), res.scores[0])
        if kind == "pairs":
            assert all(r[0] < r[1] for r in fast)
        res.items[0, -2:] = -1
        res.scores[0, -2:] = np.nan
        padded = RowEncoder(get_scorer(spec), rid).rows(kind, res)
        assert len(json.loads(padded[0][-2])) == k - 2 and len(json.loads(padded[0][-1])) == k - 2
