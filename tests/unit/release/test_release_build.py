"""build(): a complete, verified release appears atomically; an interrupted build leaves none; load()
verifies every file and refuses tampered ones; BuildConfig from TOML."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from recstack.config import ComponentConfig, get_settings
from recstack.data.dataset import Dataset
from recstack.errors import ArtifactError, ConfigError, InvalidArgumentError, NotFoundError
from recstack.models.base import Retriever
from recstack.release import BuildConfig, Registry, build, load
from recstack.release.build import STAGES, default_config_path
from recstack.release.registry import PromotionRefusedError


def _config(data_dir: Path, **extra: Any) -> BuildConfig:
    """pop + itemknn on the tiny dataset, no report (matplotlib) and no features: fast."""
    base: dict[str, Any] = {
        "dataset": {"source": str(data_dir)},
        "evaluation": {"report": False, "max_k": 10},
        "features": {"enabled": False},
        "models": [{"name": "pop"}, {"name": "itemknn", "params": {"neighbours": 5}}],
    }
    base.update(extra)
    return BuildConfig.from_config(base)


def _visible(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir() if not p.name.startswith(".")) if root.exists() else []


def test_build_writes_a_complete_verified_release(tiny_dataset_dir: Path, tmp_path: Path) -> None:
    root = tmp_path / "releases"
    m = build(_config(tiny_dataset_dir), root)
    assert _visible(root) == [m.id]
    d = root / m.id
    listed = {f.path for f in m.files}
    on_disk = {p.relative_to(d).as_posix() for p in d.rglob("*") if p.is_file()} - {"manifest.json"}
    assert listed == on_disk
    for must in (
        "dataset/interactions.parquet",
        "dataset/item_vocab.parquet",
        "metrics.json",
        "cold_start.json",
    ):
        assert must in listed
    # the cold-start verdict serving reads: whether a profile alone beats popular on validation users
    from recstack.release import load
    from recstack.serving.pipeline import cold_start_policy

    verdict = json.loads((d / "cold_start.json").read_text())
    assert isinstance(verdict["personal"], bool) and verdict["reason"]
    assert cold_start_policy(load(m.id, root)) == verdict
    assert {"models/pop/config.json", "models/itemknn/config.json"} <= listed
    assert set(m.timings) == set(STAGES)
    # the peak RSS up to each stage: a high-water mark, so it never falls from one stage to the next
    rss = [m.peak_rss_mb[s] for s in STAGES]
    assert rss[0] > 0 and rss == sorted(rss)
    assert m.parent is None
    assert m.headline is not None and m.headline.model == "itemknn"  # the last model by default
    assert set(m.metrics) == {"pop", "itemknn"}
    assert 0.0 < m.metrics["itemknn"]["ndcg@10"] <= 1.0
    ds = Dataset.load(tiny_dataset_dir)
    assert m.dataset.fingerprint == ds.fingerprint()
    assert m.dataset.counts == {"users": 30, "items": 20, "interactions": ds.n_interactions}
    assert m.config["models"][1]["params"] == {"neighbours": 5}
    # a second build's parent is the latest release (no channel yet), then the production one
    m2 = build(_config(tiny_dataset_dir), root)
    assert m2.parent == m.id
    Registry(root).promote(m.id)
    m3 = build(_config(tiny_dataset_dir), root)
    assert m3.parent == m.id  # production's current, not the latest (m2)
    assert Registry(root).lineage(m3.id)[1][0] == m.id


def test_load_gives_typed_verified_release(tiny_dataset_dir: Path, tmp_path: Path) -> None:
    root = tmp_path / "releases"
    m = build(_config(tiny_dataset_dir), root)
    rel = load(m.id, root)
    assert rel.id == m.id and rel.path == root / m.id
    assert rel.retriever_names == ["pop", "itemknn"]
    assert rel.dataset.fingerprint() == m.dataset.fingerprint
    assert rel.features is None and rel.item_embeddings is None and rel.index_path is None
    assert rel.ranker_paths == {}
    assert rel.metrics == m.metrics
    # the served model was refit on all the data: same recommendations as a fresh fit on the dataset
    from recstack.models.registry import create

    fresh = create("itemknn", neighbours=5).fit(Dataset.load(tiny_dataset_dir))
    users = np.arange(5)
    got_ids, got_sc = rel.retriever("itemknn").recommend(users, 5)
    want_ids, want_sc = fresh.recommend(users, 5)
    np.testing.assert_array_equal(got_ids, want_ids)
    np.testing.assert_allclose(got_sc, want_sc, rtol=1e-6)
    assert rel.retriever("itemknn") is rel.retriever("itemknn")  # cached
    with pytest.raises(NotFoundError, match="no retriever 'ease'"):
        rel.retriever("ease")
    # channels and "latest" resolve too; the default root comes from the Settings
    Registry(root).promote(m.id, "staging")
    assert load("staging", root).id == m.id
    get_settings.cache_clear()
    try:
        os.environ["RECSTACK_RELEASES_DIR"] = str(root)
        assert load("latest").id == m.id
    finally:
        del os.environ["RECSTACK_RELEASES_DIR"]
        get_settings.cache_clear()


def test_tampered_or_missing_file_is_refused_naming_it(tiny_dataset_dir: Path, tmp_path: Path) -> None:
    root = tmp_path / "releases"
    m = build(_config(tiny_dataset_dir), root)
    d = root / m.id
    victim = next(p for p in (d / "models" / "itemknn").iterdir() if p.suffix == ".npz" or p.suffix == ".npy")
    data = bytearray(victim.read_bytes())
    data[-1] ^= 0xFF  # same size, different content
    victim.write_bytes(bytes(data))
    rel_path = victim.relative_to(d).as_posix()
    with pytest.raises(ArtifactError, match=f"{rel_path}: sha256 does not match"):
        load(m.id, root)
    victim.unlink()
    with pytest.raises(ArtifactError, match=f"{rel_path}: listed in the manifest .* but missing"):
        load(m.id, root)
    (d / "manifest.json").write_text('{"id": ')
    with pytest.raises(ArtifactError, match=r"manifest\.json: malformed manifest"):
        load(m.id, root)


@pytest.mark.parametrize("stage", STAGES)
@pytest.mark.parametrize("exc", [RuntimeError, KeyboardInterrupt])
def test_interrupted_build_leaves_no_visible_release(
    tiny_dataset_dir: Path, tmp_path: Path, stage: str, exc: type[BaseException]
) -> None:
    root = tmp_path / "releases"

    def hook(name: str) -> None:
        if name == stage:
            raise exc(f"injected in {name}")

    with pytest.raises(exc, match=f"injected in {stage}"):
        build(_config(tiny_dataset_dir), root, on_stage=hook)
    assert list(root.iterdir()) == []  # not even the hidden temp dir
    assert Registry(root).list() == []


def test_killed_build_leaves_no_visible_release_and_is_cleaned(
    tiny_dataset_dir: Path, tmp_path: Path
) -> None:
    root = tmp_path / "releases"
    marker = tmp_path / "in-write"
    script = textwrap.dedent(
        f"""
        import time
        from pathlib import Path
        from recstack.release import BuildConfig, build

        def hook(stage):
            if stage == "finalize":  # every artifact is written, the manifest is not
                Path({str(marker)!r}).write_text("x")
                time.sleep(120)

        cfg = BuildConfig.from_config({{
            "dataset": {{"source": {str(tiny_dataset_dir)!r}}},
            "evaluation": {{"report": False, "max_k": 10}},
            "features": {{"enabled": False}},
            "models": [{{"name": "pop"}}],
        }})
        build(cfg, {str(root)!r}, on_stage=hook)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script])
    try:
        deadline = time.monotonic() + 60
        while not marker.exists():
            assert proc.poll() is None, "build subprocess died before reaching the finalize stage"
            assert time.monotonic() < deadline, "build subprocess did not reach the finalize stage"
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    leftovers = list(root.iterdir())
    assert [p.name[:5] for p in leftovers] == [".tmp-"]  # only a hidden temp dir
    assert (leftovers[0] / "models" / "pop" / "config.json").is_file()  # it was mid-build
    assert _visible(root) == [] and Registry(root).list() == []
    with pytest.raises(NotFoundError):
        load("latest", root)
    # gc (and the next build) remove what a dead build left
    assert Registry(root).gc(keep=5) == []
    assert list(root.iterdir()) == []


def test_next_build_cleans_stale_tmp(tiny_dataset_dir: Path, tmp_path: Path) -> None:
    root = tmp_path / "releases"
    stale = root / ".tmp-stale"
    stale.mkdir(parents=True)
    (stale / ".building.pid").write_text("999999999")
    m = build(_config(tiny_dataset_dir), root)
    assert sorted(p.name for p in root.iterdir()) == [m.id]


def test_promote_after_build_uses_headline_gate(tiny_dataset_dir: Path, tmp_path: Path) -> None:
    root = tmp_path / "releases"
    good = build(_config(tiny_dataset_dir), root)
    # headline on pop this time; force a comparison of pop vs the good release's pop
    pop_cfg = _config(tiny_dataset_dir, headline={"model": "pop", "metric": "ndcg@10"})
    other = build(pop_cfg, root)
    reg = Registry(root)
    reg.promote(good.id)
    # both evaluate pop identically (same split, same data): no drop, so the gate lets it through
    assert other.metrics["pop"]["ndcg@10"] == pytest.approx(good.metrics["pop"]["ndcg@10"])
    assert reg.promote(other.id).current == other.id
    # a headline metric that does not exist in the candidate is refused
    bad_cfg = _config(tiny_dataset_dir, headline={"model": "pop", "metric": "ndcg@7"})
    bad = build(bad_cfg, root)
    with pytest.raises(PromotionRefusedError, match="no ndcg@7"):
        reg.promote(bad.id)


def test_optional_models_are_skipped_and_required_ones_fail(
    tiny_dataset_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from recstack.models import registry

    # a registered model whose module does not exist (yet): "not available"
    monkeypatch.setitem(registry._RETRIEVERS, "future", "recstack.models.retrieval._no_such_module:Future")
    root = tmp_path / "releases"
    cfg = _config(tiny_dataset_dir, models=[{"name": "pop"}, {"name": "future", "optional": True}])
    m = build(cfg, root)
    assert list(m.skipped) == ["future"] and "not available" in m.skipped["future"]
    assert m.artifacts.retrievers == {"pop": "models/pop"}
    assert m.headline is not None and m.headline.model == "pop"
    with pytest.raises(InvalidArgumentError, match="mark it optional"):
        build(_config(tiny_dataset_dir, models=[{"name": "future"}]), root)
    assert Registry(root).ids() == [m.id]


def test_embeddings_and_index_of_mf_model(tiny_dataset_dir: Path, tmp_path: Path) -> None:
    root = tmp_path / "releases"
    cfg = _config(
        tiny_dataset_dir,
        models=[{"name": "pop"}, {"name": "als", "params": {"factors": 4, "iterations": 2}}],
        index={"backend": "exact"},
    )
    m = build(cfg, root)
    rel = load(m.id, root)
    emb = rel.item_embeddings
    assert emb is not None and emb.shape == (20, 4) and emb.dtype == np.float32
    assert m.artifacts.index is not None and m.artifacts.index.backend == "exact"
    index = rel.load_index()
    _, ids = index.search(emb[:2], 3)
    # inner product search over the same vectors: exact top-3 by emb @ emb.T
    want = np.argsort(-(emb[:2] @ emb.T), axis=1, kind="stable")[:, :3]
    np.testing.assert_array_equal(np.sort(ids, axis=1), np.sort(want, axis=1))


def test_build_config_toml(tmp_path: Path) -> None:
    default = BuildConfig.default()
    assert default_config_path().is_file()
    assert [m.name for m in default.models][:6] == [
        "pop",
        "recent_pop",
        "itemknn",
        "ease",
        "time_ease",
        "als",
    ]
    # the headline is forward in time; stratified stays in the table
    assert default.split.protocol == "temporal-rolling" and default.evaluation.also == ["stratified"]
    assert default.evaluation.refit_full and default.split.windows >= 1
    assert BuildConfig.from_config(default.dump_config()) == default  # round-trips
    p = tmp_path / "recstack.toml"
    p.write_text('[build.dataset]\nsource = "x"\n[[build.models]]\nname = "pop"\n')
    cfg = BuildConfig.from_toml(p)
    assert cfg.dataset.source == "x" and [m.name for m in cfg.models] == ["pop"]
    p.write_text('[[models]]\nname = "pop"\nfrobnicate = 1\n')
    with pytest.raises(ConfigError, match="frobnicate"):
        BuildConfig.from_toml(p)
    p.write_text('[[models]]\nname = "pop"\n[[models]]\nname = "pop"\n')
    with pytest.raises(ConfigError, match="unique"):
        BuildConfig.from_toml(p)


def test_example_recstack_toml_parses() -> None:
    example = Path(__file__).resolve().parents[3] / "recstack.toml"
    cfg = BuildConfig.from_toml(example)
    assert [m.key for m in cfg.models] == ["pop", "ease", "als64"]
    assert cfg.index.source == "als64" and cfg.headline.model == "ease"


class _FakeTwoStageConfig(ComponentConfig):
    ranker: str = "deepfm"


class _FakeTwoStage(Retriever):
    """Stands in for two_stage (cheap): popularity scores; saves a ranker ONNX file and a recall
    source with its own ONNX file (which is not a ranker)."""

    name = "two_stage"
    Config = _FakeTwoStageConfig

    def _fit(self, dataset: Dataset) -> None:
        self.pop = dataset.item_popularity().astype(np.float32)

    def score_history(self, history: Any) -> Any:
        return np.tile(self.pop, (history.shape[0], 1))

    def _save(self, directory: Path) -> None:
        (directory / "ranker").mkdir()
        (directory / "ranker" / "ranker.onnx").write_bytes(b"onnx of the ranker")
        (directory / "sources" / "tt").mkdir(parents=True)
        (directory / "sources" / "tt" / "user_tower.onnx").write_bytes(b"not a ranker")
        np.save(directory / "pop.npy", self.pop, allow_pickle=False)

    def _load(self, directory: Path) -> None:
        self.pop = np.load(directory / "pop.npy", allow_pickle=False)


def test_two_stage_rankers_are_named_by_variant(
    tiny_dataset_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from recstack.models import registry

    real_get_class = registry.get_class

    def get_class(name: str) -> type[Retriever]:
        return _FakeTwoStage if name.startswith("two_stage") else real_get_class(name)

    def create(name: str, **params: Any) -> Retriever:
        if name.startswith("two_stage"):
            return _FakeTwoStage(ranker=name.split(":")[1], **params)
        return real_get_class(name)(**params)

    monkeypatch.setattr(registry, "get_class", get_class)
    monkeypatch.setattr(registry, "create", create)
    root = tmp_path / "releases"
    cfg = _config(tiny_dataset_dir, models=[{"name": "pop"}, {"name": "two_stage:ncf"}])
    m = build(cfg, root)
    assert m.artifacts.rankers == {"ncf": "models/two_stage:ncf/ranker/ranker.onnx"}
    rel = load(m.id, root)
    assert rel.ranker_paths == {"ncf": root / m.id / "models/two_stage:ncf/ranker/ranker.onnx"}
    assert m.headline is not None and m.headline.model == "two_stage:ncf"
    assert isinstance(rel.retriever("two_stage:ncf"), _FakeTwoStage)


def test_refit_false_serves_the_holdout_fit(tiny_dataset_dir: Path, tmp_path: Path) -> None:
    from recstack.data.splits import split
    from recstack.models.registry import create

    root = tmp_path / "releases"
    cfg = _config(tiny_dataset_dir, models=[{"name": "pop", "refit": False}, {"name": "itemknn"}])
    rel = load(build(cfg, root).id, root)
    assert rel.retriever_names == ["pop", "itemknn"]
    ds = Dataset.load(tiny_dataset_dir)
    on_train = create("pop").fit(split(ds, "stratified", seed=42).train)
    on_all = create("pop").fit(ds)
    served = rel.retriever("pop").score_users(np.arange(30))
    np.testing.assert_allclose(served, on_train.score_users(np.arange(30)))
    # the popularity counts of the train part differ from those of all the data
    assert not np.allclose(served, on_all.score_users(np.arange(30)))


def test_temporal_rolling_headline_with_stratified_in_the_table(
    tiny_dataset_dir: Path, tmp_path: Path
) -> None:
    from recstack.data.splits import rolling_splits

    root = tmp_path / "releases"
    cfg = _config(
        tiny_dataset_dir,
        split={"protocol": "temporal-rolling", "windows": 2, "window_fraction": 0.2},
        evaluation={"report": False, "max_k": 10, "also": ["stratified"]},
        models=[
            {"name": "pop"},
            {"name": "itemknn", "params": {"neighbours": 5}, "protocols": ["stratified"]},
        ],
        # each user's rows are consecutive in time here: a window holds a handful of users
        checks={"allow": {"split_sizes": "tiny test data"}},
    )
    m = build(cfg, root)
    metrics = json.loads((root / m.id / "metrics.json").read_text())
    assert metrics["protocol"] == "temporal-rolling" and len(metrics["windows"]) == 2
    # pop: the headline figures are the mean over the windows (with warm users), stratified's next to them
    pop = metrics["results"]["pop"]
    want = np.mean([w["warm"]["ndcg@10"] for w in pop["windows"] if w["warm"]["n_users"]])
    assert m.metrics["pop"]["ndcg@10"] == pytest.approx(want)
    assert "stratified:ndcg@10" in m.metrics["pop"] and "cold" in pop
    # itemknn is evaluated on stratified only: no headline figure, its stratified one
    assert "ndcg@10" not in m.metrics["itemknn"] and "stratified:ndcg@10" in m.metrics["itemknn"]
    # the windows are the protocol's folds: test sizes of round(0.2 * n) interactions
    ds = Dataset.load(tiny_dataset_dir)
    folds = rolling_splits(ds, n_windows=2, window_fraction=0.2)
    assert [w["test"] for w in metrics["windows"]] == [f.test.n_interactions for f in folds]
    assert set(metrics["comparisons"]) == {"warm", "cold"}
    # the gate does not compare a release of another headline protocol
    strat = build(_config(tiny_dataset_dir), root)
    reg = Registry(root)
    reg.promote(strat.id)
    state = reg.promote(m.id)
    assert state.current == m.id and "protocol changed" in state.history[-1]["gate"]


def test_large_overrides_apply_only_above_their_size() -> None:
    cfg = BuildConfig.from_config(
        {
            "split": {"protocol": "temporal-rolling", "windows": 2},
            "evaluation": {"also": ["stratified"]},
            "models": [{"name": "pop"}, {"name": "two_tower"}, {"name": "ease", "params": {"l2": 300.0}}],
            "large": {
                "interactions": 1000,
                "split": {"windows": 1},
                "evaluation": {"also": [], "sample_users": 50},
                "models": {"two_tower": {"skip": True}, "ease": {"params": {"mode": "auto"}, "refit": False}},
            },
        }
    )
    same, none = cfg.at_size(999)
    assert same is cfg and none is None
    big, changed = cfg.at_size(1000)
    assert changed is not None and changed["skipped"] == ["two_tower"]
    assert [m.key for m in big.models] == ["pop", "ease"]
    assert big.models[1].params == {"l2": 300.0, "mode": "auto"} and big.models[1].refit is False
    assert big.models[0].refit is None  # untouched models keep their own settings
    assert big.split.windows == 1 and big.split.protocol == "temporal-rolling"
    assert big.evaluation.also == [] and big.evaluation.sample_users == 50
    # idempotent: the applied config applied again changes nothing more
    again, _ = big.at_size(10**6)
    assert [m.key for m in again.models] == ["pop", "ease"] and again.split.windows == 1


def test_large_overrides_refuse_unknown_models_and_skipping_the_headline() -> None:
    with pytest.raises(ConfigError, match="not configured"):
        BuildConfig.from_config({"models": [{"name": "pop"}], "large": {"models": {"ease": {"skip": True}}}})
    cfg = BuildConfig.from_config(
        {
            "models": [{"name": "pop"}, {"name": "ease"}],
            "headline": {"model": "ease"},
            "large": {"interactions": 1, "models": {"ease": {"skip": True}}},
        }
    )
    with pytest.raises(ConfigError, match="headline"):
        cfg.at_size(10)


def test_build_applies_large_overrides_and_records_them(tiny_dataset_dir: Path, tmp_path: Path) -> None:
    cfg = _config(
        tiny_dataset_dir,
        models=[{"name": "pop"}, {"name": "itemknn", "params": {"neighbours": 5}}, {"name": "recent_pop"}],
        large={"interactions": 1, "models": {"itemknn": {"skip": True}}, "evaluation": {"sample_users": 3}},
    )
    m = build(cfg, tmp_path / "releases")
    assert set(m.artifacts.retrievers) == {"pop", "recent_pop"}
    assert "itemknn" in m.skipped and "large data" in m.skipped["itemknn"]
    assert m.config["large"]["models"]["itemknn"]["skip"] is True  # the config as given
    metrics = json.loads((tmp_path / "releases" / m.id / "metrics.json").read_text())
    assert metrics["large"]["skipped"] == ["itemknn"]
    assert metrics["results"]["pop"]["n_users"] == 3  # the sample


def test_large_build_fits_a_table_model_and_the_same_two_stage_source_once(tmp_path: Path) -> None:
    """[large] gives the table's time_ease and ALS the two-stage sources' configs (as default.toml's does):
    the two-stage model's source refit on the fold's train is the table models' fit, not a second one."""
    from blocks_data import make_blocks_dataset

    data_dir = make_blocks_dataset().save(tmp_path / "blocks")
    root = tmp_path / "releases"
    small_two_stage = {
        "sources": ["time_ease", "als", "pop"],
        "holdout": "random",
        "per_source": 8,
        "random_negatives": 4,
        "ranker_grid": [{}],
        "ranker_params": {"epochs": 2, "num_threads": 1, "hidden": [16], "emb_dim": 4},
    }
    cfg = _config(
        data_dir,
        models=[
            {"name": "pop"},
            {"name": "time_ease"},
            {"name": "als"},
            {"name": "two_stage:ncf", "params": small_two_stage},
        ],
        large={
            "interactions": 1,
            "evaluation": {"refit_full": False},
            "models": {
                "time_ease": {"params": {"l2": 400.0}},
                "als": {"params": {"regularization": 30.0, "alpha": 5.0}},
            },
        },
    )
    m = build(cfg, root)
    ts_dir = root / m.id / "models" / "two_stage:ncf"
    fr = json.loads((ts_dir / "fit_result.json").read_text())
    # the refit's time_ease and ALS are the table models' fits (and pop's: the same default config)
    assert fr["shared_sources"] == ["time_ease", "als", "pop"]
    metrics = json.loads((root / m.id / "metrics.json").read_text())
    assert metrics["results"]["two_stage:ncf"]["params"]["source_params"]["als"] == {
        "regularization": 30.0,
        "alpha": 5.0,
    }
    # the table models were fitted first (nothing to share), their figures are their own
    assert not any(metrics["results"][k].get("shared_fit") for k in ("pop", "time_ease", "als"))
    # the served sources are the table models' fits: the same arrays
    rel = load(m.id, root)
    table_als = rel.retriever("als")
    from recstack.models.retrieval.mf import ALS

    src = ALS.load(ts_dir / "sources" / "als")
    assert isinstance(table_als, ALS)
    np.testing.assert_array_equal(src.item_factors, table_als.item_factors)
    # written once: the source's files are hard links of the table model's, and loading the release
    # gives one object for both (one copy in a serving worker's memory)
    for name in ("time_ease", "als", "pop"):
        table_dir, src_dir = root / m.id / "models" / name, ts_dir / "sources" / name
        files = sorted(p.relative_to(table_dir) for p in table_dir.rglob("*") if p.is_file())
        assert files and files == sorted(p.relative_to(src_dir) for p in src_dir.rglob("*") if p.is_file())
        for f in files:
            assert (table_dir / f).stat().st_ino == (src_dir / f).stat().st_ino
    two_stage = rel.retriever("two_stage:ncf")
    assert two_stage.sources["als"] is table_als and two_stage.sources["time_ease"] is rel.retriever(
        "time_ease"
    )
    assert src is table_als  # a later load of the same files shares the live object too
    # the release still verifies, loads and scores
    assert load(m.id, root, verify=True).id == m.id
    scores = two_stage.score_users(np.arange(5))
    assert scores.shape == (5, 40) and np.isfinite(scores).any(axis=1).all()
