"""MovieLens 100K read from the data directory (never bundled: its licence forbids redistribution)
and the `recstack data` commands end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from recstack.cli import app
from recstack.data import Dataset, load_dataset, load_movielens
from recstack.data.paths import find_dataset

pytestmark = [pytest.mark.slow, pytest.mark.ml100k]


def test_ml100k_from_the_data_dir_official_figures() -> None:
    ds = load_movielens("ml-100k")  # the name resolves through the data directories
    assert ds.meta["source"] == str(find_dataset("ml-100k")) and ds.name == "ml-100k"
    # the official README: 100,000 ratings (1-5) from 943 users on 1682 movies, >= 20 ratings per user
    assert (ds.n_users, ds.n_items, ds.n_interactions) == (943, 1682, 100_000)
    assert np.bincount(ds.interactions["user"].to_numpy()).min() == 20
    assert ds.interactions["rating"].value_counts().sort("rating")["count"].to_list() == [
        6110,
        11370,
        27145,
        34174,
        21201,
    ]
    toy = ds.items.row(ds.item_vocab.index(1), named=True)
    assert (toy["title"], toy["year"]) == ("Toy Story", 1995)
    assert toy["genres"] == ["Animation", "Children's", "Comedy"]
    assert ds.users.row(0, named=True)["occupation"] == "technician"
    # the titles decoded from ISO-8859-1 keep their accents
    assert any("é" in t for t in ds.items["title"].to_list())


def test_save_load_round_trip(tmp_path: Path) -> None:
    ds = load_dataset("ml-100k")
    back = Dataset.load(ds.save(tmp_path / "ml"), verify=True)
    assert back.fingerprint() == ds.fingerprint()
    assert back.items["genres"].to_list() == ds.items["genres"].to_list()


def test_cli_info_convert_synth(tmp_path: Path) -> None:
    runner = CliRunner()
    res = runner.invoke(app, ["data", "info", "ml-100k", "--json"])
    assert res.exit_code == 0, res.output
    info = json.loads(res.output)
    assert (info["users"], info["items"], info["interactions"]) == (943, 1682, 100_000)
    assert (info["first"], info["last"]) == ("1997-09-20", "1998-04-22")
    assert info["density"] == pytest.approx(100_000 / (943 * 1682))
    res = runner.invoke(app, ["data", "info", "ml-100k"])
    assert res.exit_code == 0 and "6.3047%" in res.output and "fingerprint" in res.output

    res = runner.invoke(app, ["data", "convert", "ml-100k", "--out", str(tmp_path / "conv")])
    assert res.exit_code == 0, res.output
    assert Dataset.load(tmp_path / "conv").fingerprint() == info["fingerprint"]

    args = ["data", "synth", "--users", "200", "--items", "100", "--interactions", "5000", "--seed", "7"]
    res = runner.invoke(app, [*args, "--out", str(tmp_path / "syn")])
    assert res.exit_code == 0, res.output
    syn = load_dataset(tmp_path / "syn")
    assert (syn.n_users, syn.n_items, syn.n_interactions) == (200, 100, 5000)
    assert syn.meta["params"]["seed"] == 7


def test_console_script_reports_bad_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from recstack.cli import main

    bad = tmp_path / "ml-100k"
    bad.mkdir()
    (bad / "u.data").write_text("1\t1\t5\t881250949\n1\t2\tx\t881250950\n")
    (bad / "u.item").write_text("1|A (1995)|||" + "|0" * 19 + "\n")
    monkeypatch.setattr("sys.argv", ["recstack", "data", "info", str(bad)])
    with pytest.raises(SystemExit) as code:
        main()
    assert code.value.code == 2
    err = " ".join(capsys.readouterr().err.split())  # rich may wrap the line
    assert f"{bad / 'u.data'}:2: expected a number in column 'rating', found 'x'" in err
