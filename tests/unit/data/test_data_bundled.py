"""The bundled MovieLens latest-small (the default data set) and the data-directory resolution of the
sets that may not be shipped (`recstack.data.paths`)."""

from __future__ import annotations

import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from recstack.config import get_settings
from recstack.data import load_dataset, load_movielens
from recstack.data.loading import dataset_summary
from recstack.data.paths import BUNDLED, bundled_path, data_dirs, find_dataset
from recstack.errors import NotFoundError
from recstack.release.build import BuildConfig


@pytest.fixture
def settings_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    get_settings.cache_clear()
    yield monkeypatch
    monkeypatch.undo()
    get_settings.cache_clear()


def test_bundled_archive_is_latest_small_with_its_readme() -> None:
    path = bundled_path()
    assert path.name == "ml-latest-small.zip"
    with zipfile.ZipFile(path) as zf:
        names = sorted(zf.namelist())
        readme = zf.read("ml-latest-small/README.txt").decode()
    assert names == [
        f"ml-latest-small/{f}" for f in ("README.txt", "links.csv", "movies.csv", "ratings.csv", "tags.csv")
    ]
    # the licence that allows shipping it travels with it
    assert "redistribute" in readme.lower() and "same license conditions" in readme
    # nothing else is bundled
    assert sorted(p.name for p in path.parent.iterdir() if not p.name.startswith("__")) == [path.name]


def test_bundled_latest_small_official_figures() -> None:
    ds = load_movielens()  # offline, from package resources
    assert ds.name == BUNDLED and ds.meta["format"] == "movielens-latest-small"
    # its README: 100,836 ratings and 3,683 tags over 9,742 movies by 610 users, >= 20 ratings each
    assert (ds.n_users, ds.n_items, ds.n_interactions) == (610, 9742, 100_836)
    assert np.bincount(ds.interactions["user"].to_numpy()).min() == 20
    # half stars from 0.5 to 5
    ratings = sorted(set(ds.interactions["rating"].to_list()))
    assert ratings == [0.5 * k for k in range(1, 11)]
    toy = ds.items.row(ds.item_vocab.index(1), named=True)
    assert (toy["title"], toy["year"]) == ("Toy Story", 1995)
    assert toy["genres"] == ["Adventure", "Animation", "Children", "Comedy", "Fantasy"]
    assert ds.users.columns == ["user", "external_id"]  # no demographics in latest-small
    info = dataset_summary(ds)
    assert (info["first"], info["last"]) == ("1996-03-29", "2018-09-24")


def test_load_dataset_names(settings_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert load_dataset(BUNDLED).fingerprint() == load_movielens().fingerprint()
    # the default build reads the bundled set
    assert BuildConfig.default().dataset.source == BUNDLED
    # a name that is not bundled is looked up in the data dirs; missing, the error says how to fetch it
    settings_env.setenv("RECSTACK_DATA_DIR", str(tmp_path / "data"))
    settings_env.chdir(tmp_path)
    get_settings.cache_clear()
    with pytest.raises(NotFoundError, match="recstack data fetch ml-20m") as exc:
        load_dataset("ml-20m")
    assert str(tmp_path / "data") in str(exc.value)  # names the directories searched


def test_data_dir_resolution_order(settings_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    env, cwd = tmp_path / "env", tmp_path / "work" / "clone"
    shared = tmp_path / "work" / "shared" / "data"
    for d in (env, cwd / "data", shared):
        (d / "ml-1m").mkdir(parents=True)
    settings_env.chdir(cwd)
    get_settings.cache_clear()
    # without RECSTACK_DATA_DIR: ./data, then ../shared/data
    assert data_dirs()[:2] == [Path("data"), cwd.parent / "shared" / "data"]
    assert find_dataset("ml-1m") == Path("data") / "ml-1m"
    (cwd / "data" / "ml-1m").rmdir()
    assert find_dataset("ml-1m") == shared / "ml-1m"
    # RECSTACK_DATA_DIR first
    settings_env.setenv("RECSTACK_DATA_DIR", str(env))
    get_settings.cache_clear()
    assert data_dirs()[0] == env and find_dataset("ml-1m") == env / "ml-1m"
    # an archive counts too
    (env / "ml-1m").rmdir()
    (env / "ml-1m.zip").write_bytes(b"")
    assert find_dataset("ml-1m") == env / "ml-1m.zip"
