"""Bad input gives DataFormatError(path, line, expected, found); the duplicate policies."""

from __future__ import annotations

import shutil
from pathlib import Path

import polars as pl
import pytest

from recstack.data._parse import Field, FileRef, dedupe, read_delimited
from recstack.data.movielens import load_movielens
from recstack.data.tabular import load_tabular
from recstack.errors import DataFormatError

ML = Path(__file__).parents[2] / "fixtures" / "movielens"


def _copy(folder: str, tmp_path: Path) -> Path:
    dest = tmp_path / folder
    shutil.copytree(ML / folder, dest)
    return dest


def _error(call: object) -> DataFormatError:
    assert callable(call)
    with pytest.raises(DataFormatError) as info:
        call()
    return info.value


def test_wrong_field_count_names_file_and_line(tmp_path: Path) -> None:
    d = _copy("ml-100k", tmp_path)
    lines = (d / "u.data").read_text().splitlines()
    lines[2] = "2\t1\t4"  # line 3 lost its timestamp
    (d / "u.data").write_text("\n".join(lines) + "\n")
    err = _error(lambda: load_movielens(d))
    assert err.line == 3
    assert str(err.path).endswith("u.data")
    assert "4 tab-separated fields" in err.expected and "3 field(s)" in err.found
    assert str(err).startswith(f"{d / 'u.data'}:3: expected")


def test_too_many_fields_in_dat_file(tmp_path: Path) -> None:
    d = _copy("ml-1m", tmp_path)
    with (d / "ratings.dat").open("a") as fh:
        fh.write("3::1193::5::978300760::extra\n")  # line 6
    err = _error(lambda: load_movielens(d))
    assert (err.line, err.found.split(" ")[0]) == (6, "5")
    assert "'::'-separated" in err.expected


def test_non_numeric_rating(tmp_path: Path) -> None:
    d = _copy("ml-25m", tmp_path)
    text = (d / "ratings.csv").read_text().replace("1,306,3.5,", "1,306,three,")
    (d / "ratings.csv").write_text(text)
    err = _error(lambda: load_movielens(d))
    # header is line 1; "1,306,..." is the second data row -> line 3
    assert err.line == 3
    assert err.expected == "a number in column 'rating'" and err.found == "'three'"


def test_wrong_delimiter_is_named(tmp_path: Path) -> None:
    d = _copy("ml-100k", tmp_path)
    (d / "u.data").write_text((d / "u.data").read_text().replace("\t", ","))
    err = _error(lambda: load_movielens(d))
    assert err.line == 1
    assert "1 field(s)" in err.found and "comma-separated" in err.found


def test_missing_column_in_header(tmp_path: Path) -> None:
    d = _copy("ml-25m", tmp_path)
    lines = (d / "ratings.csv").read_text().splitlines()
    (d / "ratings.csv").write_text("\n".join(line.rsplit(",", 1)[0] for line in lines) + "\n")
    err = _error(lambda: load_movielens(d))
    assert err.line == 1 and "missing: timestamp" in err.found
    assert "userId, movieId, rating, timestamp" in err.expected


def test_bytes_invalid_in_declared_encoding(tmp_path: Path) -> None:
    d = _copy("ml-latest-small", tmp_path)
    # CSV generations are UTF-8; an ISO-8859-1 "é" (0xe9) there is invalid
    with (d / "movies.csv").open("ab") as fh:
        fh.write("7,Café Lumière (2003),Drama\n".encode("iso-8859-1"))  # line 4
    err = _error(lambda: load_movielens(d))
    assert err.line == 4 and str(err.path).endswith("movies.csv")
    assert "0xe9" in err.found and "utf-8" in err.found


def test_unknown_encoding_name(tmp_path: Path) -> None:
    p = tmp_path / "a.txt"
    p.write_text("1|2\n")
    err = _error(
        lambda: read_delimited(
            FileRef(p), [Field("a"), Field("b")], sep="|", has_header=False, encoding="klingon"
        )
    )
    assert err.line is None and "klingon" in err.found


def test_empty_required_value_and_blank_lines(tmp_path: Path) -> None:
    p = tmp_path / "r.tsv"
    p.write_text("1\t2\n\n3\t4\n")  # a blank line is skipped
    fields = [Field("a", pl.Int64), Field("b", pl.Int64)]
    df = read_delimited(FileRef(p), fields, sep="\t", has_header=False)
    assert df.rows() == [(1, 2), (3, 4)]
    p.write_text("1\t2\n3\t\n")
    err = _error(lambda: read_delimited(FileRef(p), fields, sep="\t", has_header=False))
    assert err.line == 2 and "column 'b'" in err.expected


def test_zip_member_is_named(tmp_path: Path) -> None:
    import zipfile

    d = _copy("ml-1m", tmp_path)
    (d / "movies.dat").write_text("661::No genres field\n", encoding="iso-8859-1")
    z = tmp_path / "ml-1m.zip"
    with zipfile.ZipFile(z, "w") as zf:
        for f in d.iterdir():
            zf.write(f, f"ml-1m/{f.name}")
    err = _error(lambda: load_movielens(z))
    assert str(err.path) == f"{z}!/ml-1m/movies.dat" and err.line == 1


def test_tabular_bad_timestamp_and_missing_mapping_column(tmp_path: Path) -> None:
    p = tmp_path / "e.csv"
    p.write_text("u,i,t\na,x,2021-01-01\nb,y,yesterday\n")
    err = _error(lambda: load_tabular(p, user="u", item="i", timestamp="t"))
    assert err.line == 3 and err.found == "'yesterday'"
    err = _error(lambda: load_tabular(p, user="u", item="item"))
    assert err.line == 1 and "missing: item" in err.found


# ---------------------------------------------------------------- duplicates
def _events() -> pl.DataFrame:
    # (user, item, rating, timestamp); pair (1, 10) three times, (2, 20) twice with equal timestamps
    return pl.DataFrame(
        {
            "user_id": [1, 1, 2, 1, 2, 3],
            "item_id": [10, 10, 20, 10, 20, 30],
            "rating": [1.0, 5.0, 2.0, 3.0, 4.0, 5.0],
            "timestamp": [100, 300, 50, 200, 50, 10],
        }
    )


def test_dedupe_last_keeps_latest_timestamp_then_last_row() -> None:
    out = dedupe(_events(), "last")
    # (1,10): t=300 wins (rating 5); (2,20): tie at t=50 -> the later row (rating 4); order kept
    assert out.rows() == [(1, 10, 5.0, 300), (2, 20, 4.0, 50), (3, 30, 5.0, 10)]


def test_dedupe_keep_and_error() -> None:
    assert dedupe(_events(), "keep").height == 6
    with pytest.raises(DataFormatError) as info:
        dedupe(_events(), "error", source="events.csv", line_offset=2)
    # rows 0, 1, 3 hold (1, 10) -> file lines 2, 3, 5 under a header
    assert info.value.line == 5 and "[2, 3, 5]" in info.value.found
    with pytest.raises(ValueError, match="duplicates must be one of"):
        dedupe(_events(), "first")
    clean = _events().unique(subset=["user_id", "item_id"], keep="first", maintain_order=True)
    assert dedupe(clean, "error").height == 3
