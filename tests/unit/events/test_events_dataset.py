"""Training data from the event log: the duplicate / late / new-id policy, worked out by hand, and
`recstack build` with ``[dataset.events]`` (lineage, serving's cut-off)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import polars as pl
import pytest

from recstack.data.dataset import Dataset
from recstack.errors import ConfigError, InvalidArgumentError
from recstack.events import NewEvent, events_frame, open_log
from recstack.events.base import LoggedEvent
from recstack.events.dataset import EventsSpec, dataset_with_events, read_events
from recstack.release import BuildConfig, build, load


def _base() -> Dataset:
    # users 1, 2; items 10, 11, 12; timestamps 100..104
    df = pl.DataFrame(
        {
            "user_id": [1, 1, 2, 2],
            "item_id": [10, 11, 11, 12],
            "rating": [5.0, 3.0, 4.0, 2.0],
            "timestamp": [100, 101, 102, 103],
        }
    )
    items = pl.DataFrame({"item_id": [10, 11, 12], "title": ["A", "B", "C"]})
    return Dataset.from_frames("base", df, items=items)


def _logged(rows: list[tuple[Any, ...]]) -> pl.DataFrame:
    evs = [
        LoggedEvent(i + 1, t, u, it, ts, r, 0.0, None, None, None) for i, (t, u, it, ts, r) in enumerate(rows)
    ]
    return events_frame(evs)


def _pairs(ds: Dataset) -> dict[tuple[Any, Any], tuple[float, int]]:
    u = ds.user_vocab.external(ds.interactions["user"].to_numpy())
    i = ds.item_vocab.external(ds.interactions["item"].to_numpy())
    r = ds.interactions["rating"].to_list()
    t = ds.interactions["timestamp"].to_list()
    return {(a, b): (c, d) for a, b, c, d in zip(u, i, r, t, strict=True)}


def test_policy_by_hand() -> None:
    events = _logged(
        [
            ("rating", "1", "11", 200, 1.0),  # user 1 re-rates item 11 later: replaces 3.0
            ("view", "2", "10", 201, None),  # a view: implicit rating 4.0
            ("view", "2", "10", 201, None),  # the same delivery again (a client retry): dropped
            ("click", "3", "13", 90, None),  # new user, new item, late (older than the base)
            ("impression", "1", None, 202, None),  # not an interaction
            ("rating", "2", "12", 50, 5.0),  # an older rating than the base's (103): the base wins
        ]
    )
    ds, stats = dataset_with_events(_base(), events, EventsSpec(log="x"))
    assert ds.user_vocab.ids.to_list() == [1, 2, 3] and ds.item_vocab.ids.to_list() == [10, 11, 12, 13]
    assert _pairs(ds) == {
        (1, 10): (5.0, 100),
        (1, 11): (1.0, 200),
        (2, 10): (4.0, 201),
        (2, 11): (4.0, 102),
        (2, 12): (2.0, 103),
        (3, 13): (4.0, 90),
    }
    assert stats["used"] == 4 and stats["duplicates_dropped"] == 1 and stats["replaced"] == 2
    assert (stats["new_users"], stats["new_items"]) == (1, 1)
    assert (stats["ts_min"], stats["ts_max"]) == (50, 201)
    titles = dict(zip(ds.items["external_id"].to_list(), ds.items["title"].to_list(), strict=True))
    assert titles == {10: "A", 11: "B", 12: "C", 13: None}  # the new item has no attributes


def test_keep_types_before_ts_and_string_ids() -> None:
    events = _logged([("click", "alice", "10", 300, None), ("rating", "2", "11", 400, 2.0)])
    ds, _ = dataset_with_events(_base(), events, EventsSpec(log="x", duplicates="keep", types=("click",)))
    assert ds.user_vocab.ids.dtype == pl.String  # "alice" is not an integer
    assert ("alice", 10) in _pairs(ds) and len(_pairs(ds)) == 5
    ds2, st = dataset_with_events(_base(), events, EventsSpec(log="x", before_ts=350))
    assert ds2.n_interactions == 5 and st["used"] == 1


def test_events_alone_and_nothing_at_all() -> None:
    ds, _ = dataset_with_events(None, _logged([("view", "a", "x", 1, None)]), EventsSpec(log="x"))
    assert ds.n_users == 1 and ds.n_items == 1
    with pytest.raises(InvalidArgumentError, match="nothing to train on"):
        dataset_with_events(None, _logged([]), EventsSpec(log="x"))


def test_read_events_offsets_and_archive(tmp_path: Path) -> None:
    log = open_log(tmp_path / "e.db")
    assert log is not None
    offs = log.append([NewEvent("view", "1", str(i), 100 + i) for i in range(6)])
    arch = tmp_path / "archive"
    arch.mkdir()
    log.export_parquet(str(arch / "a.parquet"), upto=offs[2])
    log.compact(offs[2])
    df, upto = read_events(EventsSpec(log="x", archive=str(arch)), log)
    assert upto == offs[-1] and df["offset"].to_list() == offs  # archive + live, each once
    df, upto = read_events(EventsSpec(log="x", archive=str(arch), after=offs[1], upto=offs[4]), log)
    assert df["offset"].to_list() == offs[2:5] and upto == offs[4]


def _config(data_dir: str, log_url: str, **events: Any) -> BuildConfig:
    return BuildConfig.from_config(
        {
            "dataset": {"source": data_dir, "events": {"log": log_url, **events}},
            "evaluation": {"report": False, "max_k": 10},
            "features": {"enabled": False},
            "models": [{"name": "pop"}, {"name": "itemknn", "params": {"neighbours": 5}}],
        }
    )


def test_build_from_base_plus_log_records_lineage(tiny_dataset_dir: Path, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'events.db'}"
    log = open_log(url)
    assert log is not None
    log.append([NewEvent("click", "77", "3", 5_000), NewEvent("rating", "0", "99", 5_001, rating=5.0)])
    m = build(_config(str(tiny_dataset_dir), url), tmp_path / "releases")
    assert m.events is not None
    assert (m.events.log_id, m.events.last_offset, m.events.read, m.events.used) == (log.log_id, 2, 2, 2)
    assert (m.events.new_users, m.events.new_items) == (1, 1)
    rel = load(m.id, tmp_path / "releases")
    assert 77 in rel.dataset.user_vocab and 99 in rel.dataset.item_vocab
    assert m.dataset.counts["users"] == 31 and m.dataset.counts["items"] == 21
    from recstack.serving._events import release_cutoff

    assert release_cutoff(rel) == (log.log_id, 2)
    # events appended later are the next release's increment
    log.append([NewEvent("view", "78", "4", 5_002)])
    m2 = build(_config(str(tiny_dataset_dir), url, after=2), tmp_path / "releases")
    assert m2.events is not None and (m2.events.after, m2.events.last_offset, m2.events.read) == (2, 3, 1)


def test_source_none_needs_events(tmp_path: Path) -> None:
    cfg = BuildConfig.from_config({"dataset": {"source": "none"}, "models": [{"name": "pop"}]})
    with pytest.raises(ConfigError, match=r"needs a \[dataset\.events\]"):
        build(cfg, tmp_path / "releases")
