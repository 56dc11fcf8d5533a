"""The default pipeline (baseline models) on the bundled MovieLens latest-small: `recstack build`, then the
registry and loading."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from recstack.cli import app
from recstack.release import Registry, load
from recstack.release.build import BuildConfig

pytestmark = pytest.mark.slow


#: the default pipeline without its optional neural models (two-tower, two-stage), whose fits take
#: minutes on 2 cores: `make test` stays fast; benchmarks/bench_build.py times the full default build
BASELINES_TOML = """
[[models]]
name = "pop"
[[models]]
name = "itemknn"
[[models]]
name = "ease"
[[models]]
name = "als"
"""


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """One build through the CLI (``recstack build --config ... --releases-dir ... --promote``)."""
    root = tmp_path_factory.mktemp("releases")
    config = root.parent / "baselines.toml"
    config.write_text(BASELINES_TOML)
    args = ["--quiet", "build", "--config", str(config), "--releases-dir", str(root), "--promote"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    rid = Registry(root).resolve("production")
    assert rid in res.output  # the release id is printed
    return root, rid


def test_default_build_on_bundled_latest_small(built: tuple[Path, str]) -> None:
    root, rid = built
    rel = load(rid, root)
    m = rel.manifest
    assert m.dataset.name == "ml-latest-small"
    assert m.dataset.counts == {"users": 610, "items": 9742, "interactions": 100_836}
    default = BuildConfig.default().dump_config()
    # the default pipeline's other settings, but the split and the protocols of the table: this build
    # keeps the config class's defaults (stratified alone; the default pipeline's temporal-rolling is in
    # tests/unit/release/test_release_build.py and bench_build.py), and no [large] table (the default's
    # names the default's models)
    ours = ("models", "split", "evaluation", "large")
    assert {k: v for k, v in m.config.items() if k not in ours} == {
        k: v for k, v in default.items() if k not in ours
    }
    assert rel.retriever_names == ["pop", "itemknn", "ease", "als"]
    assert m.headline is not None and m.headline.model == "als"
    # stratified protocol: the published ordering on ML-100K holds (EASE and ALS well above MostPopular)
    ndcg = {k: v["ndcg@10"] for k, v in m.metrics.items()}
    assert ndcg["ease"] > ndcg["itemknn"] > ndcg["pop"] > 0.1
    assert ndcg["als"] > ndcg["pop"]
    # artifacts: report, metrics.json in the evaluation report's shape, embeddings, index
    assert (rel.path / "report.html").read_text().lstrip().lower().startswith("<!doctype html")
    metrics = json.loads((rel.path / "metrics.json").read_text())
    assert metrics["protocol"] == "stratified" and set(metrics["results"]) == set(m.metrics)
    emb = rel.item_embeddings
    assert emb is not None and emb.shape[0] == 9742
    assert rel.index_path is not None and rel.index_path.is_dir()
    assert rel.features is not None
    # serving-side use: the loaded model recommends for known users, excluding nothing by default
    ids, scores = rel.retriever("ease").recommend(np.array([0, 1, 2]), 10)
    assert ids.shape == (3, 10) and (ids >= 0).all() and np.all(np.diff(scores, axis=1) <= 0)


def test_cli_registry_commands(built: tuple[Path, str]) -> None:
    root, rid = built
    runner = CliRunner()
    for args in (["list"], ["show", rid], ["lineage", "production"], ["diff", rid, "production"]):
        res = runner.invoke(app, ["releases", *args, "--releases-dir", str(root)])
        assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["releases", "rollback", "--releases-dir", str(root)])
    assert res.exit_code != 0  # only one release promoted: nothing to roll back to
    res = runner.invoke(app, ["releases", "gc", "--keep", "0", "--releases-dir", str(root)])
    assert res.exit_code == 0 and "deleted 0 release" in res.output  # production's release is kept
