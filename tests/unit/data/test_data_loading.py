"""`load_dataset` resolution and `dataset_summary` on tiny fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest

from recstack.config import get_settings
from recstack.data.loading import dataset_summary, load_dataset
from recstack.data.movielens import load_movielens
from recstack.errors import DataFormatError, NotFoundError

FIX = Path(__file__).parents[2] / "fixtures"
ML = FIX / "movielens"


def test_summary_by_hand() -> None:
    info = dataset_summary(load_movielens(ML / "ml-100k"))
    # after keeping the latest of user 1's two item-2 ratings: 8 ratings over 4 users x 5 items
    assert (info["users"], info["items"], info["interactions"]) == (4, 5, 8)
    assert info["density"] == pytest.approx(8 / 20)
    assert info["ratings"] == {1.0: 1, 2.0: 1, 3.0: 1, 4.0: 3, 5.0: 2}
    # min t = 878887116 (1997-11-07 07:18 UTC), max t = 891717742 (1998-04-04 19:22 UTC)
    assert (info["first"], info["last"]) == ("1997-11-07", "1998-04-04")
    assert info["user_columns"] == ["age", "gender", "occupation", "zip"]
    assert len(info["fingerprint"]) == 64


def test_resolution_order(tmp_path: Path) -> None:
    saved = load_movielens(ML / "ml-1m").save(tmp_path / "saved")
    assert load_dataset(saved).fingerprint() == load_movielens(ML / "ml-1m").fingerprint()
    assert load_dataset(ML / "ml-10M100K").meta["format"] == "movielens-10m"
    # a lone ratings.csv is a tabular file: userId / movieId / rating / timestamp found by name
    ds = load_dataset(ML / "ml-25m" / "ratings.csv")
    assert ds.meta["format"] == "tabular" and ds.n_interactions == 5
    assert ds.interactions["timestamp"].max() == 1439472215
    assert (
        load_dataset(ML / "ml-latest-small", format="movielens-latest").meta["format"] == "movielens-latest"
    )
    assert load_dataset(saved, format="recstack").n_interactions == 5
    with pytest.raises(ValueError, match="unknown dataset format"):
        load_dataset(saved, format="excel")
    with pytest.raises(NotFoundError, match="no such file"):
        load_dataset(tmp_path / "missing")
    with pytest.raises(DataFormatError):
        load_dataset(saved, format="movielens-1m")  # a saved dataset is not a MovieLens layout


def test_named_archive_in_data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil

    monkeypatch.setenv("RECSTACK_DATA_DIR", str(tmp_path))
    get_settings.cache_clear()
    try:
        with pytest.raises(NotFoundError, match="recstack data fetch ml-1m"):
            load_dataset("ml-1m")
        shutil.copytree(ML / "ml-1m", tmp_path / "ml-1m")
        assert load_dataset("ml-1m").meta["format"] == "movielens-1m"
    finally:
        get_settings.cache_clear()


@pytest.mark.parametrize("ids", [[5, 1, 5, 3], ["b", "a", "b", "c"], [2**40, 7, 2**40, 9]])
def test_build_dataset_matches_from_frames(ids: list[object]) -> None:
    import polars as pl

    from recstack.data import Dataset
    from recstack.data._parse import build_dataset

    inter = pl.DataFrame({"user_id": ids, "item_id": [10, 10, 11, 12], "rating": [1.0, 2.0, 3.0, 4.0]})
    users = pl.DataFrame({"user_id": [ids[0], ids[1]], "age": [30, 40]})
    fast = build_dataset("x", inter, users)
    ref = Dataset.from_frames("x", inter, users)
    assert fast.user_vocab == ref.user_vocab and fast.item_vocab == ref.item_vocab
    # the same (external user, external item, rating) rows; the fast path keeps the row order
    ext = fast.user_vocab.external(fast.interactions["user"].to_numpy())
    assert ext == ids
    assert sorted(fast.interactions.rows()) == sorted(ref.interactions.rows())
    assert fast.users.columns == ["user", "external_id", "age"]
    assert fast.users.sort("user")["age"].to_list() == ref.users.sort("user")["age"].to_list()
