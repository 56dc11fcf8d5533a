"""`recstack build --runner ray --address` on a local 2-node Ray cluster (a head and a second node,
`recstack.testing.RayCluster`: the code path a real cluster takes) gives the evaluation figures of
``--runner local``; ``--sample-users`` reports a 95% interval."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from recstack.cli import app
from recstack.data.loading import load_dataset
from recstack.data.splits import split
from recstack.evaluation._blocks import RayScorer
from recstack.evaluation.protocols import evaluate_retriever
from recstack.models.retrieval.itemknn import ItemKNN
from recstack.release import Registry
from recstack.testing import RayCluster

pytestmark = [pytest.mark.slow, pytest.mark.ray, pytest.mark.ml100k]

TOML = """
[dataset]
source = "ml-100k"
[split]
protocol = "stratified"
[evaluation]
block_users = 100
report = false
[index]
backend = "none"
[[models]]
name = "pop"
[[models]]
name = "itemknn"
[[models]]
name = "ease"
[[models]]
name = "time_ease"
params = { exact_max_items = 800 }   # the head-tail mode, through save / load on the Ray workers
"""


def _build(root: Path, config: Path, *extra: str) -> dict[str, Any]:
    args = ["--quiet", "build", "--config", str(config), "--releases-dir", str(root), *extra]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    rid = Registry(root).latest()
    assert rid is not None
    data: dict[str, Any] = json.loads((root / rid / "metrics.json").read_text())
    assert not list(root.glob(f"{rid}/eval-scratch*"))  # the models saved for the workers are gone
    return data


def test_ray_cluster_build_equals_local(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import ray

    config = tmp_path / "build.toml"
    # the headline protocol's rolling folds (warm and cold users, paired CIs) are scored on Ray too
    config.write_text(TOML.replace('protocol = "stratified"', 'protocol = "temporal-rolling"\nwindows = 2'))
    local_all = _build(tmp_path / "local", config, "--runner", "local")
    local = local_all["results"]
    with RayCluster(nodes=2, cpus_per_node=1) as cluster:
        for k, v in cluster.env.items():
            monkeypatch.setenv(k, v)  # this process is the cluster's driver
        remote_all = _build(tmp_path / "ray", config, "--runner", "ray", "--address", cluster.address)
        remote = remote_all["results"]
        assert not ray.is_initialized()  # the build disconnected
        # the blocks are spread over both nodes
        data = load_dataset("ml-100k")
        s = split(data, "stratified", seed=42)
        model = ItemKNN().fit(s.train)
        scorer = RayScorer(cluster.address, scratch=tmp_path / "scratch", max_in_flight=4)
        try:
            got = evaluate_retriever(model, s.train, s.test, [10], batch_size=50, scorer=scorer)
        finally:
            scorer.close()
        assert len(scorer.nodes) == 2
        assert got["ndcg@10"] == evaluate_retriever(model, s.train, s.test, [10])["ndcg@10"]
    assert local.keys() == remote.keys() == {"pop", "itemknn", "ease", "time_ease"}
    for name, want in local.items():
        got = remote[name]
        for key, value in want.items():
            if key in ("fit_seconds",):
                continue
            assert got[key] == value, (name, key)  # same blocks, same ids: identical figures
    assert local["time_ease"]["ndcg@10"] > local["pop"]["ndcg@10"]
    assert len(local["pop"]["windows"]) == 2
    assert remote_all["comparisons"] == local_all["comparisons"] and local_all["comparisons"]["warm"]


def test_sample_users_prints_and_stores_an_interval(tmp_path: Path) -> None:
    config = tmp_path / "build.toml"
    config.write_text(
        TOML.replace('name = "time_ease"\nparams = { exact_max_items = 800 }', 'name = "pop"\nalias = "pop2"')
    )
    root = tmp_path / "r"
    res = CliRunner().invoke(
        app, ["build", "--config", str(config), "--releases-dir", str(root), "--sample-users", "300"]
    )
    assert res.exit_code == 0, res.output
    assert "300 of 943 users sampled; 95% CI" in res.output
    rid = Registry(root).latest()
    data = json.loads((root / str(rid) / "metrics.json").read_text())["results"]["ease"]
    lo, hi = data["sample"]["ci95"]["ndcg@10"]
    assert data["n_users"] == 300 and lo < data["ndcg@10"] < hi
