"""MovieLens loaders on tiny fixtures written in each official format (tests/fixtures/movielens/)."""

from __future__ import annotations

import zipfile
from pathlib import Path

import polars as pl
import pytest

from recstack.data.movielens import MOVIELENS_FORMATS, detect_movielens_format, load_movielens
from recstack.errors import DataFormatError

ML = Path(__file__).parents[2] / "fixtures" / "movielens"


def _zip_dir(src: Path, dest: Path) -> Path:
    """Zip ``src`` the way GroupLens does: every file under one top-level folder."""
    with zipfile.ZipFile(dest, "w", zipfile.ZIP_DEFLATED) as zf:
        for f in sorted(src.iterdir()):
            zf.write(f, f"{src.name}/{f.name}")
    return dest


def _item(ds: object, external: int) -> dict[str, object]:
    from recstack.data import Dataset

    assert isinstance(ds, Dataset)
    return ds.items.filter(pl.col("external_id") == external).row(0, named=True)


def _rating(ds: object, user: int, item: int) -> float:
    from recstack.data import Dataset

    assert isinstance(ds, Dataset)
    u, i = ds.user_vocab.index(user), ds.item_vocab.index(item)
    rows = ds.interactions.filter((pl.col("user") == u) & (pl.col("item") == i))
    assert rows.height == 1
    return float(rows["rating"][0])


def test_100k_fixture_tables_and_latin1() -> None:
    ds = load_movielens(ML / "ml-100k")
    assert ds.meta["format"] == "movielens-100k"
    # 9 rating lines, user 1 rated item 2 twice (lines 2 and 9): the later one (t=881250999, 4 stars) is kept
    assert (ds.n_users, ds.n_items, ds.n_interactions) == (4, 5, 8)
    assert _rating(ds, 1, 2) == 4.0
    assert ds.users.columns == ["user", "external_id", "age", "gender", "occupation", "zip"]
    assert ds.users.schema["age"] == pl.Int32
    assert ds.users.row(3, named=True) == {
        "user": 3,
        "external_id": 4,
        "age": 24,
        "gender": "F",
        "occupation": "artist",
        "zip": "E2A4H",  # zip codes are strings: some are not numbers
    }
    cafe = _item(ds, 2)
    assert cafe["title"] == "Café au lait (Métisse)"  # ISO-8859-1 é decoded, "(1993)" removed
    assert cafe["year"] == 1993
    assert cafe["genres"] == ["Comedy", "Romance"]
    assert _item(ds, 1)["genres"] == ["Animation", "Children's", "Comedy"]
    unknown = _item(ds, 4)
    assert unknown["year"] is None and unknown["genres"] == []  # the "unknown" flag is not a genre
    assert _item(ds, 5)["year"] == 1922  # no year in the title: taken from the release date
    assert str(_item(ds, 3)["imdb_url"]).startswith("http://us.imdb.com/")


def test_100k_duplicates_policies() -> None:
    assert load_movielens(ML / "ml-100k", duplicates="keep").n_interactions == 9
    with pytest.raises(DataFormatError) as err:
        load_movielens(ML / "ml-100k", duplicates="error")
    assert err.value.line == 9
    assert "[2, 9]" in str(err.value) and "u.data" in str(err.value)


def test_1m_users_occupations_and_titles() -> None:
    ds = load_movielens(ML / "ml-1m")
    assert ds.meta["format"] == "movielens-1m" and ds.name == "ml-1m"
    assert (ds.n_users, ds.n_items, ds.n_interactions) == (3, 3, 5)
    users = {r["external_id"]: r for r in ds.users.iter_rows(named=True)}
    # 1::F::1::10::48067 -> age bucket 1 (under 18), occupation 10 = "K-12 student"
    assert (users[1]["gender"], users[1]["age"], users[1]["occupation"], users[1]["zip"]) == (
        "F",
        1,
        "K-12 student",
        "48067",
    )
    assert users[2]["occupation"] == "self-employed"  # code 16
    assert _item(ds, 3408)["title"] == "Café Flesh"
    assert _item(ds, 661)["genres"] == ["Animation", "Children's", "Musical"]
    assert _rating(ds, 2, 3408) == 4.0


def test_10m_half_stars_tags_no_users() -> None:
    ds = load_movielens(ML / "ml-10M100K")
    assert ds.meta["format"] == "movielens-10m" and ds.name == "ml-10m"
    assert ds.users.columns == ["user", "external_id"]
    assert _rating(ds, 1, 185) == 4.5 and _rating(ds, 2, 231) == 0.5
    assert _item(ds, 185)["tags"] == ["café noir", "hackers"]
    assert _item(ds, 231)["tags"] == []
    assert _item(ds, 185)["title"] == "Net, The"


def test_25m_csv_links_tags_genome() -> None:
    ds = load_movielens(ML / "ml-25m")
    assert ds.meta["format"] == "movielens-25m"
    assert ds.meta["genome_tags"] == ["007", "dark"]
    assert (ds.n_users, ds.n_items, ds.n_interactions) == (3, 5, 5)
    toy = _item(ds, 1)
    assert toy["genome"] == pytest.approx([0.025, 0.125])
    assert (toy["imdb"], toy["tmdb"], toy["tags"]) == ("0114709", 862, ["pixar"])
    cafe = _item(ds, 307)  # "Café, The (Das Café) (2006)" quoted because of the comma
    assert (cafe["title"], cafe["year"], cafe["genres"], cafe["tmdb"]) == (
        "Café, The (Das Café)",
        2006,
        [],
        None,
    )
    assert cafe["genome"] is None
    assert _item(ds, 308)["year"] is None  # "Babylon 5": no year
    assert _item(ds, 296)["tags"] == ["dark comedy, cult", "quentin tarantino"]
    assert _rating(ds, 2, 1) == 0.5
    assert "genome" not in load_movielens(ML / "ml-25m", genome=False).items.columns


def test_latest_small_from_zip(tmp_path: Path) -> None:
    z = _zip_dir(ML / "ml-latest-small", tmp_path / "ml-latest-small.zip")
    ds = load_movielens(z)
    assert ds.meta["format"] == "movielens-latest-small" and ds.name == "ml-latest-small"
    assert _item(ds, 3)["tags"] == ["Café society"]
    assert (ds.n_users, ds.n_items, ds.n_interactions) == (2, 2, 3)


@pytest.mark.parametrize("folder", ["ml-100k", "ml-1m", "ml-10M100K", "ml-25m", "ml-latest-small"])
def test_zip_and_directory_give_the_same_dataset(folder: str, tmp_path: Path) -> None:
    # the zip holds <folder>/<files>; the directory is given as the folder itself
    d = load_movielens(ML / folder)
    z = load_movielens(_zip_dir(ML / folder, tmp_path / f"{folder}.zip"))
    assert d.fingerprint() == z.fingerprint()


def test_detection_and_explicit_formats(tmp_path: Path) -> None:
    assert detect_movielens_format(ML / "ml-100k") == "movielens-100k"
    assert detect_movielens_format(ML / "ml-1m") == "movielens-1m"
    assert detect_movielens_format(ML / "ml-10M100K") == "movielens-10m"
    assert detect_movielens_format(ML / "ml-25m") == "movielens-25m"
    # a CSV layout in a folder without a telling name is "latest"
    other = tmp_path / "mydata"
    other.mkdir()
    for f in (ML / "ml-latest-small").iterdir():
        (other / f.name).write_bytes(f.read_bytes())
    assert detect_movielens_format(other) == "movielens-latest"
    ds = load_movielens(other, format="movielens-20m")
    assert ds.meta["format"] == "movielens-20m" and ds.name == "ml-20m"
    assert load_movielens(ML / "ml-1m", format="1m").meta["format"] == "movielens-1m"
    with pytest.raises(DataFormatError, match=r"ratings\.csv"):
        load_movielens(ML / "ml-1m", format="movielens-25m")
    with pytest.raises(ValueError, match="unknown MovieLens format"):
        load_movielens(ML / "ml-1m", format="movielens-2m")
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "README").write_text("no data here")
    with pytest.raises(DataFormatError, match=r"u\.data"):
        detect_movielens_format(empty)
    assert len(MOVIELENS_FORMATS) == 7


def test_missing_source_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DataFormatError, match="nothing there"):
        load_movielens(tmp_path / "nope")
    (tmp_path / "f.txt").write_text("x")
    with pytest.raises(DataFormatError, match=r"directory or a \.zip"):
        load_movielens(tmp_path / "f.txt")
