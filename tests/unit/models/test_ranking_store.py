"""Issue 23: the two-stage ranker's training lists streamed from disk. `RankingStore` writes them block
by block into ``.npy`` memmaps in a scratch directory (removed after the fit, also on failure); the
ranker reads mini-batches from them; the fitted model is the same, bit for bit, as with the lists in
memory."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from blocks_data import SMALL_TWO_STAGE, make_blocks_dataset
from recstack.data.dataset import Dataset
from recstack.models.ranking import _base
from recstack.models.ranking._base import RankingData, RankingStore
from recstack.models.ranking.ncf import NCF
from recstack.models.ranking.two_stage import TwoStage

SMALL = {
    **SMALL_TWO_STAGE,
    "ranker_params": {**SMALL_TWO_STAGE["ranker_params"], "epochs": 3, "batch_size": 8},
}


@pytest.fixture(scope="module")
def data() -> Dataset:
    return make_blocks_dataset()


def _lists(n: int, L: int, C: int, D: int, seed: int) -> tuple[Any, ...]:
    rng = np.random.default_rng(seed)
    cat = rng.integers(0, 5, size=(n, L, C)).astype(np.int64)
    dense = (rng.normal(size=(n, L, D)) * 3 + 7).astype(np.float32)
    mask = rng.random((n, L)) < 0.8
    label = ((rng.random((n, L)) < 0.2) & mask).astype(np.float32)
    return cat, dense, label, mask


def test_dense_stats_stream_the_same_values_as_numpy(monkeypatch: pytest.MonkeyPatch) -> None:
    """Mean / std streamed block by block are numpy's values over the rows that are not padding, to the
    bit (the ranker's standardisation, hence the whole fit, is unchanged)."""
    monkeypatch.setattr(_base, "BLOCK_ROWS", 50)  # many blocks of lists
    cat, dense, label, mask = _lists(97, 13, 3, 6, seed=0)
    grouped = RankingData(cat, dense, label, mask, [5, 5, 5])
    mean, std = grouped.dense_stats()
    rows = dense[mask]
    assert np.array_equal(mean, rows.mean(axis=0)) and np.array_equal(std, rows.std(axis=0))
    flat = RankingData(cat.reshape(-1, 3), dense.reshape(-1, 6), label.ravel(), None, [5, 5, 5])
    mean, std = flat.dense_stats()
    flat_rows = dense.reshape(-1, 6)
    assert np.array_equal(mean, flat_rows.mean(axis=0)) and np.array_equal(std, flat_rows.std(axis=0))


def test_store_writes_blocks_to_memmaps_and_reads_them_back(tmp_path: Path) -> None:
    cat, dense, label, mask = _lists(10, 6, 3, 4, seed=1)
    with RankingStore(10, 8, parent=tmp_path) as store:
        assert store.directory is not None and store.directory.parent == tmp_path
        order = np.array([3, 7, 0, 9, 1, 2, 8, 4, 6, 5])
        # two blocks of lists, written to scattered rows, narrower than the store
        store.write(order[:4], cat[:4], dense[:4], label[:4], mask[:4])
        store.write(order[4:], cat[4:, :5], dense[4:, :5], label[4:, :5], mask[4:, :5])
        assert sorted(p.name for p in store.directory.iterdir()) == [
            "cat.npy",
            "dense.npy",
            "label.npy",
            "mask.npy",
        ]
        d = store.data(2, 9, 6, [5, 5, 5])
        assert isinstance(d.cat, np.memmap) and isinstance(d.dense, np.memmap)
        assert d.files is not None and (d.files.start, d.files.stop, d.files.width) == (2, 9, 6)
        inv = np.argsort(order)
        want_cat, want_dense = cat[inv].copy(), dense[inv].copy()
        want_mask = mask[inv].copy()
        late = np.isin(np.arange(10), order[4:])  # those lists got 5 candidates, the 6th is padding
        want_cat[late, 5], want_dense[late, 5], want_mask[late, 5] = 0, 0.0, False
        assert np.array_equal(d.cat, want_cat[2:9]) and np.array_equal(d.dense, want_dense[2:9])
        assert np.array_equal(d.mask, want_mask[2:9])
        # batches of lists, rows of the flattened arrays (padding included), the rows that are not padding
        c, _, _, m = d.lists(np.array([4, 0, 2]))
        assert np.array_equal(c, want_cat[[6, 2, 4]]) and np.array_equal(m, want_mask[[6, 2, 4]])
        rc, rd = d.rows(5, 23)
        assert np.array_equal(rc, want_cat[2:9].reshape(-1, 3)[5:23])
        assert np.array_equal(rd, want_dense[2:9].reshape(-1, 4)[5:23])
        _, vd = d.valid_rows(np.array([0, 3, 10]))
        assert np.array_equal(vd, want_dense[2:9][want_mask[2:9]][[0, 3, 10]])
        # pickled (Ray Train ships the data to its workers) as the file reference, reopened on load
        blob = pickle.dumps(d)
        assert len(blob) < d.cat.nbytes
        back = pickle.loads(blob)
        assert isinstance(back.cat, np.memmap) and np.array_equal(back.dense, d.dense)
        directory = store.directory
    assert not directory.exists()


def _fit_capture(data: Dataset, monkeypatch: pytest.MonkeyPatch, **kw: Any) -> tuple[TwoStage, list[Any]]:
    """Fit with NCF.fit recording what it trained on (train data, validation) and whether the
    scratch directory held their files then."""
    seen: list[Any] = []
    fit = NCF.fit

    def spy(self: NCF, dataset: Any, candidates: Any, validation: Any = None) -> NCF:
        files = candidates.files
        seen.append(
            {
                "train": candidates,
                "val": validation,
                "memmap": isinstance(candidates.cat, np.memmap) and isinstance(candidates.dense, np.memmap),
                "dir": None if files is None else Path(files.directory),
                "on_disk": files is not None and (Path(files.directory) / "dense.npy").is_file(),
            }
        )
        return fit(self, dataset, candidates, validation)

    monkeypatch.setattr(NCF, "fit", spy)
    return TwoStage(**SMALL, **kw).fit(data), seen


def test_lists_are_on_disk_during_the_fit_and_removed_after(
    data: Dataset, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model, seen = _fit_capture(data, monkeypatch, scratch_dir=str(tmp_path))
    (call,) = seen
    assert call["memmap"] and call["on_disk"] and call["dir"].parent == tmp_path
    # training lists first, the validation lists the contiguous slice after them
    tr, va = call["train"].files, call["val"].files
    assert tr.start == 0 and tr.stop == va.start and va.stop == model.fit_result["holdout_lists"]
    assert list(tmp_path.iterdir()) == []  # the scratch directory is gone


def test_scratch_directory_is_removed_when_the_fit_fails(
    data: Dataset, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def boom(*args: Any, **kwargs: Any) -> Any:
        assert len(list(tmp_path.iterdir())) == 1  # the store's directory exists while the ranker trains
        raise RuntimeError("ranker failed")

    monkeypatch.setattr(NCF, "fit", boom)
    with pytest.raises(RuntimeError, match="ranker failed"):
        TwoStage(**SMALL, scratch_dir=str(tmp_path)).fit(data)
    assert list(tmp_path.iterdir()) == []


def test_disk_and_memory_lists_give_the_same_model(data: Dataset, tmp_path: Path) -> None:
    """The same lists, read through the same code from memmaps or from memory: the same ranker."""
    disk = TwoStage(**SMALL, scratch_dir=str(tmp_path)).fit(data)
    mem = TwoStage(**SMALL, ranker_data="memory").fit(data)
    keys = ("ranker_val_ndcg@10", "source_val_ndcg@10", "candidates_per_user", "holdout_recall@candidates")
    for key in keys:
        assert disk.fit_result[key] == mem.fit_result[key], key
    assert disk.fit_result["ranker_fit"]["best_epoch"] == mem.fit_result["ranker_fit"]["best_epoch"]
    assert isinstance(disk.ranker, NCF) and isinstance(mem.ranker, NCF)
    assert disk.ranker.net is not None and mem.ranker.net is not None
    a, b = disk.ranker.net.state_dict(), mem.ranker.net.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    users = np.arange(10)
    assert np.array_equal(disk.score_users(users), mem.score_users(users))


def test_scratch_directory_is_under_the_ray_train_storage(
    data: Dataset, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Inside `distributed_training` the lists are written under its storage, which every Ray Train
    worker reaches (the workers reopen the memmaps: `RankingData` pickles as the file reference)."""
    from recstack.models.ranking._ray_train import distributed_training

    storage = tmp_path / "storage"
    storage.mkdir()
    # min_rows above the data: the loop itself stays in this process
    with distributed_training(storage, min_rows=10**9):
        _, seen = _fit_capture(data, monkeypatch)
    assert seen[0]["on_disk"] and seen[0]["dir"].parent == storage
    assert list(storage.iterdir()) == []


def _rss_file_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("RssFile:"):
                return int(line.split()[1]) / 1024
    pytest.skip("no RssFile in /proc/self/status")


def test_reads_leave_no_file_pages_in_the_resident_set(tmp_path: Path) -> None:
    """Every read of the memmaps (batches, statistics, scores, rows) drops the mapped pages from the
    process's RSS afterwards: training on lists larger than memory holds a block, not the file."""
    n, L, C, D = 1000, 200, 3, 100  # dense: 80 MB
    with RankingStore(n, L, parent=tmp_path) as store:
        for s in range(0, n, 250):
            rows = np.arange(s, s + 250)
            store.write(rows, np.ones((250, L, C), np.int64), np.ones((250, L, D), np.float32),
                        np.zeros((250, L), np.float32), np.ones((250, L), bool))  # fmt: skip
        d = store.data(0, n, L, [2] * C)
        base = _rss_file_mb()
        d.dense_stats()
        for s in range(0, n, 64):
            d.lists(np.arange(s, min(s + 64, n)))
        d.predict(lambda cat, dense: dense[:, 0])
        d.valid_rows(np.arange(0, n * L, 97))
        assert _rss_file_mb() - base < 20
        # without the release a full read keeps the pages mapped (what the test would see)
        np.array(d.dense)
        assert _rss_file_mb() - base > 60
