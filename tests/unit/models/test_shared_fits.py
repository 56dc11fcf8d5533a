"""`recstack.models.shared`: inside `shared_fits()` a registry model fitted with the same class and full
config on the same Dataset object is fitted once; other params, another dataset object, a model
nobody holds any more, and fits outside the block are fitted again. The default pipeline's ``[large]``
table gives its time_ease and ALS exactly the two-stage sources' configs."""

from __future__ import annotations

import dataclasses
import gc
from pathlib import Path

import numpy as np
import pytest

from blocks_data import make_blocks_dataset
from recstack.data.dataset import Dataset
from recstack.models import shared
from recstack.models.base import Retriever
from recstack.models.ranking.two_stage import TwoStageConfig
from recstack.models.registry import create
from recstack.models.shared import fit, shared_fits
from recstack.release.build import BuildConfig


@pytest.fixture(scope="module")
def data() -> Dataset:
    return make_blocks_dataset()


@pytest.fixture
def fits(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names of the models whose `Retriever.fit` actually ran."""
    ran: list[str] = []
    real = Retriever.fit

    def counting(self: Retriever, dataset: Dataset) -> Retriever:
        ran.append(self.name)
        return real(self, dataset)

    monkeypatch.setattr(Retriever, "fit", counting)
    return ran


def test_same_name_config_and_dataset_is_fitted_once(data: Dataset, fits: list[str]) -> None:
    with shared_fits() as cache:
        a, reused_a = fit("als", data, regularization=30, alpha=5, iterations=2)
        # the same full config spelled otherwise (floats, an explicit default) is the same fit
        b, reused_b = fit("als", data, regularization=30.0, alpha=5.0, iterations=2, seed=42)
        assert b is a and (reused_a, reused_b) == (False, True)
        assert fits == ["als"] and cache.reused == ["als"]
        # other params: another fit
        c, reused_c = fit("als", data, regularization=100, alpha=5, iterations=2)
        assert c is not a and not reused_c
        # another model class with the same (empty) params: another fit
        p, _ = fit("pop", data)
        r, _ = fit("recent_pop", data)
        assert p is not r and fits == ["als", "als", "pop", "recent_pop"]
        # an equal dataset that is another object: another fit (the key is the object, not the content)
        other = dataclasses.replace(data)
        assert other is not data and other.fingerprint() == data.fingerprint()
        d, reused_d = fit("als", other, regularization=30, alpha=5, iterations=2)
        assert d is not a and not reused_d and len(fits) == 5
    # outside the block: a plain fit, nothing kept
    e, reused_e = fit("als", data, regularization=30, alpha=5, iterations=2)
    assert e is not a and not reused_e and len(fits) == 6
    assert shared._ACTIVE.get() is None
    with shared_fits():  # a new block starts empty
        f, reused_f = fit("als", data, regularization=30, alpha=5, iterations=2)
        assert f is not a and not reused_f and len(fits) == 7


def test_the_cache_keeps_no_model_alive(data: Dataset, fits: list[str]) -> None:
    with shared_fits() as cache:
        a, _ = fit("pop", data)
        assert len(cache) == 1
        del a
        gc.collect()
        assert len(cache) == 0  # the build dropped the model: it is fitted again when asked for
        b, reused = fit("pop", data)
        assert not reused and fits == ["pop", "pop"]
        # nested blocks share the outer one's fits
        with shared_fits() as inner:
            c, reused_c = fit("pop", data)
            assert inner is cache and c is b and reused_c


def test_a_reused_model_scores_like_its_own_fit(data: Dataset) -> None:
    with shared_fits():
        a, _ = fit("time_ease", data, l2=400.0)
        b, reused = fit("time_ease", data, l2=400)
    assert reused and b is a
    own = create("time_ease", l2=400.0).fit(data)
    np.testing.assert_allclose(b.score_users(np.arange(10)), own.score_users(np.arange(10)), rtol=1e-5)


def test_default_large_table_models_have_the_two_stage_sources_configs() -> None:
    cfg, large = BuildConfig.default().at_size(25_000_000)
    assert large is not None
    specs = {m.key: m for m in cfg.models}
    two_stage = create(specs["two_stage:ncf"].name, **specs["two_stage:ncf"].params)
    tsc = two_stage.config
    assert isinstance(tsc, TwoStageConfig)
    for name in ("time_ease", "als"):
        assert name in tsc.sources
        table = create(specs[name].name, **specs[name].params)
        source = create(name, **tsc.source_params.get(name, {}))
        # the whole config, seeds and thread counts included: the cache's key
        assert table.config == source.config, name
        assert table.config.dump_config() == source.config.dump_config()
    # below the threshold the table keeps its own defaults
    small, none = BuildConfig.default().at_size(100_000)
    assert none is None
    als = next(m for m in small.models if m.key == "als")
    assert create("als", **als.params).config != create("als", **tsc.source_params["als"]).config


def test_a_second_save_of_one_fit_links_files_and_loads_one_object(data: Dataset, tmp_path: Path) -> None:
    """`Retriever.save` of an object saved before hard-links the first save's files; `load` of two
    linked directories gives one object; a refit object, or separate saves, are written and loaded
    apart."""
    from recstack.models.retrieval.mf import ALS

    als = create("als", factors=4, iterations=2).fit(data)
    a, b = als.save(tmp_path / "a"), als.save(tmp_path / "b" / "nested")
    files = sorted(p.name for p in a.iterdir())
    assert files == sorted(p.name for p in b.iterdir())
    assert all((a / f).stat().st_ino == (b / f).stat().st_ino for f in files)
    one, two = ALS.load(a), ALS.load(b)
    assert one is two and np.array_equal(one.item_factors, als.item_factors)  # type: ignore[arg-type]
    # a refit object writes its own files again
    als.fit(data)
    c = als.save(tmp_path / "c")
    assert (c / "item_factors.npy").stat().st_ino != (a / "item_factors.npy").stat().st_ino
    # separately written directories load as separate objects (nothing shared by content alone)
    other = create("als", factors=4, iterations=2).fit(data)
    d, e = other.save(tmp_path / "d"), create("als", factors=4, iterations=2).fit(data).save(tmp_path / "e")
    assert ALS.load(d) is not ALS.load(e)
    # the first save gone: the second is written in full
    import shutil

    shutil.rmtree(d)
    f = other.save(tmp_path / "f")
    assert (f / "config.json").stat().st_nlink == 1 and ALS.load(f).n_items == data.n_items
