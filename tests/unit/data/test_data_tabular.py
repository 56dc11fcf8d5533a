"""Generic CSV / Parquet interactions loader with a column mapping and attribute tables."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pytest

from recstack.data.tabular import load_tabular
from recstack.errors import DataFormatError

TAB = Path(__file__).parents[2] / "fixtures" / "tabular"


def test_csv_with_mapping_iso_timestamps_and_attributes() -> None:
    ds = load_tabular(
        TAB / "events.csv",
        user="uid",
        item="iid",
        rating="score",
        timestamp="when",
        users=TAB / "users.csv",
        items=TAB / "items.csv",
        genre_sep=";",
    )
    # users.csv has u3 who has no interaction: vocabularies cover every id seen in any table
    assert (ds.n_users, ds.n_items, ds.n_interactions) == (3, 2, 3)
    assert ds.user_vocab.ids.to_list() == ["u1", "u2", "u3"]
    assert ds.users.schema["age"] == pl.Int64 and ds.users.schema["country"] == pl.String
    items = {r["external_id"]: r for r in ds.items.iter_rows(named=True)}
    assert items["i1"]["genres"] == ["Comedy", "Drama"] and items["i1"]["title"] == "Café Society"
    assert items["i2"]["genres"] == ["Action", "Crime", "Thriller"]
    first = ds.interactions.sort("timestamp").row(0, named=True)
    # 2021-03-01T10:00:00 (no offset: read as UTC) = 1614592800
    assert first["timestamp"] == int(datetime(2021, 3, 1, 10, tzinfo=UTC).timestamp()) == 1614592800
    assert first["rating"] == 5.0


def test_implicit_integer_ids_and_tsv(tmp_path: Path) -> None:
    p = tmp_path / "plays.tsv"
    p.write_text("user_id\titem_id\n3\t7\n1\t7\n3\t8\n3\t7\n")
    ds = load_tabular(p)  # default columns user_id / item_id, no rating, no timestamp
    assert ds.user_vocab.ids.to_list() == [1, 3] and ds.user_vocab.ids.dtype == pl.Int64
    # (3, 7) twice: "last" keeps one row; rating 1.0 and timestamp 0 for implicit data
    assert ds.n_interactions == 3
    assert set(ds.interactions["rating"].to_list()) == {1.0}
    assert set(ds.interactions["timestamp"].to_list()) == {0}
    assert load_tabular(p, duplicates="keep").n_interactions == 4


def test_parquet_with_datetime_and_integer_seconds(tmp_path: Path) -> None:
    p = tmp_path / "events.parquet"
    pl.DataFrame(
        {
            "u": [1, 2],
            "i": ["a", "b"],
            "r": [4.5, 2.0],
            "t": [datetime(2020, 1, 1, tzinfo=UTC), datetime(2020, 1, 2, tzinfo=UTC)],
        }
    ).write_parquet(p)
    ds = load_tabular(p, user="u", item="i", rating="r", timestamp="t")
    assert sorted(ds.interactions["timestamp"].to_list()) == [1577836800, 1577923200]
    q = tmp_path / "secs.parquet"
    pl.DataFrame({"user_id": [1], "item_id": [2], "timestamp": [1577836800]}).write_parquet(q)
    assert load_tabular(q, timestamp="timestamp").interactions["timestamp"].to_list() == [1577836800]
    with pytest.raises(DataFormatError, match="missing: rating"):
        load_tabular(q, rating="rating")


def test_parquet_attribute_table_and_int_keys(tmp_path: Path) -> None:
    inter = tmp_path / "i.csv"
    inter.write_text("user_id,item_id,rating\n1,10,3\n2,11,4\n")
    items = tmp_path / "items.parquet"
    pl.DataFrame({"item_id": [10, 11], "genres": ["A|B", ""], "year": [1999, 2001]}).write_parquet(items)
    ds = load_tabular(inter, rating="rating", items=items)
    rows = {r["external_id"]: r for r in ds.items.iter_rows(named=True)}
    assert rows[10]["genres"] == ["A", "B"] and rows[11]["genres"] == [] and rows[11]["year"] == 2001


def test_non_numeric_rating_line_and_duplicate_attribute_rows(tmp_path: Path) -> None:
    p = tmp_path / "r.csv"
    p.write_text("user_id,item_id,rating\n1,2,4\n1,3,five\n")
    with pytest.raises(DataFormatError) as err:
        load_tabular(p, rating="rating")
    assert err.value.line == 3 and err.value.found == "'five'"
    p.write_text("user_id,item_id,rating\n1,2,4\n")
    users = tmp_path / "u.csv"
    users.write_text("user_id,age\n1,30\n1,31\n")
    with pytest.raises(DataFormatError, match="one row per user_id"):
        load_tabular(p, users=users)
