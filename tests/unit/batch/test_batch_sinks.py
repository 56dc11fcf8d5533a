"""Versioned tables: staging -> count check -> rename + pointer flip in one transaction, --keep,
readers that only see the current version; on SQLite and (marked postgres) PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from recstack.errors import ArtifactError, InvalidArgumentError, NotFoundError
from recstack.store.tables import BatchReader, Sink, make_version, open_sink, table_name


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def sink_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'b.db'}"
        return
    yield request.getfixturevalue("clean_postgres")


def _rows(n: int, rid: str) -> list[tuple[str, ...]]:
    return [(str(u), rid, f"[{u},{u + 1}]", "[2.0,1.0]") for u in range(n)]


def _publish(sink: Sink, rid: str, n: int, when: str) -> str:
    from datetime import datetime

    version = make_version(rid, datetime.fromisoformat(when))
    sink.begin("users", version)
    sink.write(_rows(n, rid))
    sink.publish(version, rid, 2, n)
    return version


def test_version_and_table_names() -> None:
    from datetime import UTC, datetime

    v = make_version("20261123T101500Z-3f9a2c1", datetime(2026, 11, 23, 10, 20, 0, 123456, tzinfo=UTC))
    assert v == "20261123t101500z_3f9a2c1_20261123t102000123"
    assert table_name("pairs", v) == "pair_recs_" + v
    with pytest.raises(InvalidArgumentError):
        table_name("users", "bad-name; drop")
    with pytest.raises(InvalidArgumentError):
        open_sink("mysql://x")


def test_publish_flip_and_reader(sink_url: str) -> None:
    sink = open_sink(sink_url)
    reader = BatchReader(sink_url, pointer_ttl=0)
    try:
        v1 = _publish(sink, "rel-a", 5, "2026-01-01T00:00:00+00:00")
        assert reader.lookup("users", ("3",)) == ("[3,4]", "[2.0,1.0]", "rel-a", v1)
        assert reader.lookup("users", ("99",)) is None
        v2 = _publish(sink, "rel-b", 7, "2026-01-02T00:00:00+00:00")
        hit = reader.lookup("users", ("6",))
        assert hit is not None and hit[2:] == ("rel-b", v2)
        vs = sink.versions("users")
        assert [(v.version, v.current, v.rows) for v in vs] == [(v2, True, 7), (v1, False, 5)]
        assert sink.current("pairs") is None
    finally:
        reader.close()
        sink.close()


def test_count_mismatch_publishes_nothing(sink_url: str) -> None:
    sink = open_sink(sink_url)
    try:
        v1 = _publish(sink, "rel-a", 5, "2026-01-01T00:00:00+00:00")
        v2 = make_version("rel-b")
        staging = sink.begin("users", v2)
        sink.write(_rows(4, "rel-b"))
        with pytest.raises(ArtifactError, match="holds 4 rows, expected 5"):
            sink.publish(v2, "rel-b", 2, 5)
        cur = sink.current("users")
        assert cur is not None and cur.version == v1  # the previous version stays current
        assert table_name("users", v2) not in sink.tables()
        sink.abort()
        assert staging not in sink.tables()
    finally:
        sink.close()


def test_keep_drops_older_versions_and_orphans(sink_url: str) -> None:
    sink = open_sink(sink_url)
    try:
        vs = [_publish(sink, f"rel-{i}", 3, f"2026-01-0{i + 1}T00:00:00+00:00") for i in range(4)]
        orphan = sink.begin("users", make_version("killed"))  # a job that never finished
        sink._staging = None
        dropped = sink.prune("users", 2)
        # 4 versions, keep the 2 newest -> the 2 oldest tables go, and the orphan staging table
        assert sorted(dropped) == sorted([table_name("users", vs[0]), table_name("users", vs[1]), orphan])
        assert [v.version for v in sink.versions("users")] == [vs[3], vs[2]]
        assert sink.tables() == sorted(table_name("users", v) for v in vs[2:])
        with pytest.raises(InvalidArgumentError):
            sink.prune("users", 0)
    finally:
        sink.close()


def test_reader_without_tables(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match="recstack batch"):
        BatchReader(f"sqlite:///{tmp_path / 'none.db'}").lookup("users", ("1",))
    url = f"sqlite:///{tmp_path / 'empty.db'}"
    open_sink(url).ensure_meta()
    with pytest.raises(NotFoundError, match="no current batch users table"):
        BatchReader(url).lookup("users", ("1",))


def test_reader_follows_pruned_pointer(tmp_path: Path) -> None:
    """A reader holding a cached pointer to a version dropped by --keep re-reads the pointer."""
    url = f"sqlite:///{tmp_path / 'b.db'}"
    sink = open_sink(url)
    reader = BatchReader(url, pointer_ttl=3600)
    _publish(sink, "rel-a", 3, "2026-01-01T00:00:00+00:00")
    assert reader.lookup("users", ("1",)) is not None
    v2 = _publish(sink, "rel-b", 3, "2026-01-02T00:00:00+00:00")
    sink.prune("users", 1)
    hit = reader.lookup("users", ("1",))
    assert hit is not None and hit[3] == v2
