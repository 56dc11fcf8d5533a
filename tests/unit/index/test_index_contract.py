"""The VectorIndex contract, run on every backend (exact, faiss HNSW, faiss IVF-Flat, milvus-lite)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from recstack.errors import ArtifactError, ConfigError, InvalidArgumentError
from recstack.index import (
    ExactIndex,
    ExactIndexConfig,
    MilvusIndex,
    VectorIndex,
    create_index,
    load_index,
    pad_score,
)

Factory = Callable[..., VectorIndex]

BACKENDS = [
    pytest.param("exact", id="exact"),
    pytest.param("faiss", id="faiss-hnsw"),
    pytest.param("faiss-ivf", id="faiss-ivf"),
    pytest.param("milvus", id="milvus", marks=pytest.mark.milvus),
]


@pytest.fixture(scope="module")
def milvus_db(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    path = str(tmp_path_factory.mktemp("milvus") / "contract.db")
    yield path


@pytest.fixture(params=BACKENDS)
def make_index(request: pytest.FixtureRequest, milvus_db: str) -> Iterator[Factory]:
    made: list[VectorIndex] = []

    def make(dim: int, metric: str = "ip") -> VectorIndex:
        kind = request.param
        if kind == "exact":
            idx = create_index("exact", dim, metric)
        elif kind == "faiss":
            idx = create_index("faiss", dim, metric, m=16, ef_construction=64, ef_search=64)
        elif kind == "faiss-ivf":
            # nprobe == nlist visits every cell: exact results on any data, tests the IVF code path
            idx = create_index("faiss", dim, metric, kind="ivf_flat", nlist=2, nprobe=2)
        else:
            idx = create_index("milvus", dim, metric, uri=milvus_db, index_type="FLAT", index_params={})
        made.append(idx)
        return idx

    yield make
    for idx in made:
        if isinstance(idx, MilvusIndex):
            idx.client.drop_collection(idx.collection)


# three 2-d vectors and one query; hand-worked expectations per metric:
#   q = [1, 0.2]
#   ip:     q.x10 = 1.0, q.x11 = 0.2, q.x12 = 1.2                        -> 12, 10, 11
#   l2 (squared): |q-x10|^2 = 0.04, |q-x11|^2 = 1 + 0.8^2 = 1.64, |q-x12|^2 = 0.64 -> 10, 12, 11
#   cosine: |q| = sqrt(1.04) = 1.0198; 1/1.0198 = 0.9806, 0.2/1.0198 = 0.1961,
#           1.2 / (1.0198 * sqrt 2) = 0.8321                             -> 10, 12, 11
TINY_IDS = np.array([10, 11, 12], dtype=np.int64)
TINY_VECS = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]], dtype=np.float32)
TINY_Q = np.array([[1.0, 0.2]], dtype=np.float32)
TINY_EXPECTED = {
    "ip": ([12, 10, 11], [1.2, 1.0, 0.2]),
    "l2": ([10, 12, 11], [0.04, 0.64, 1.64]),
    "cosine": ([10, 12, 11], [0.9806, 0.8321, 0.1961]),
}


@pytest.mark.parametrize("metric", ["ip", "l2", "cosine"])
def test_tiny_hand_worked(make_index: Factory, metric: str) -> None:
    idx = make_index(2, metric)
    idx.add(TINY_IDS, TINY_VECS)
    assert len(idx) == 3
    scores, ids = idx.search(TINY_Q, 3)
    exp_ids, exp_scores = TINY_EXPECTED[metric]
    assert ids.dtype == np.int64 and scores.dtype == np.float32
    assert ids.tolist() == [exp_ids]
    np.testing.assert_allclose(scores[0], exp_scores, atol=1e-3)


def test_padding_when_k_exceeds_size(make_index: Factory) -> None:
    idx = make_index(2, "ip")
    idx.add(TINY_IDS, TINY_VECS)
    scores, ids = idx.search(np.vstack([TINY_Q, TINY_Q]), 5)
    assert ids.shape == (2, 5) and scores.shape == (2, 5)
    assert ids[:, 3:].tolist() == [[-1, -1], [-1, -1]]
    assert np.all(scores[:, 3:] == -np.inf)
    assert ids[0, :3].tolist() == [12, 10, 11]


def test_padding_l2_is_plus_inf(make_index: Factory) -> None:
    idx = make_index(2, "l2")
    idx.add(TINY_IDS[:2], TINY_VECS[:2])
    scores, ids = idx.search(TINY_Q, 4)
    # |[1, .2] - [1, 0]|^2 = 0.04, |[1, .2] - [0, 1]|^2 = 1.64, then two padded slots with +inf
    # (lower is better for l2)
    assert ids.tolist() == [[10, 11, -1, -1]]
    np.testing.assert_allclose(scores[0, :2], [0.04, 1.64], atol=1e-4)
    assert np.all(scores[0, 2:] == np.inf)


def test_empty_index_search(make_index: Factory) -> None:
    idx = make_index(4, "cosine")
    assert len(idx) == 0
    scores, ids = idx.search(np.ones((2, 4), dtype=np.float32), 3)
    assert ids.tolist() == [[-1, -1, -1]] * 2
    assert np.all(scores == pad_score("cosine")) and pad_score("cosine") == -np.inf


def test_wrong_dim_is_clear_error(make_index: Factory) -> None:
    idx = make_index(4, "ip")
    with pytest.raises(InvalidArgumentError, match=r"shape \[n, 4\]"):
        idx.add(np.arange(3), np.zeros((3, 5), dtype=np.float32))
    idx.add(np.arange(3), np.eye(3, 4, dtype=np.float32))
    with pytest.raises(InvalidArgumentError, match=r"shape \[n, 4\]"):
        idx.search(np.zeros((1, 3), dtype=np.float32), 2)
    with pytest.raises(InvalidArgumentError, match="k must be a positive integer"):
        idx.search(np.zeros((1, 4), dtype=np.float32), 0)


def test_bad_ids_rejected(make_index: Factory) -> None:
    idx = make_index(2, "ip")
    with pytest.raises(InvalidArgumentError, match="3 ids but 2 vectors"):
        idx.add(np.arange(3), np.zeros((2, 2), dtype=np.float32))
    with pytest.raises(InvalidArgumentError, match=">= 0"):
        idx.add(np.array([-1, 2]), np.zeros((2, 2), dtype=np.float32))
    with pytest.raises(InvalidArgumentError, match="duplicates"):
        idx.add(np.array([4, 4]), np.zeros((2, 2), dtype=np.float32))
    idx.add(TINY_IDS, TINY_VECS)
    with pytest.raises(InvalidArgumentError, match=r"already in the index: \[11\]"):
        idx.add(np.array([11, 99]), np.ones((2, 2), dtype=np.float32))
    assert len(idx) == 3  # the failed add changed nothing


def _clustered(n: int, dim: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(20, dim)).astype(np.float32)
    return (centres[rng.integers(0, 20, size=n)] + 0.5 * rng.normal(size=(n, dim))).astype(np.float32)


@pytest.mark.parametrize("metric", ["ip", "l2", "cosine"])
def test_recall_against_exact(make_index: Factory, metric: str) -> None:
    dim, n = 16, 2000
    data = _clustered(n + 50, dim, seed=7)
    vecs, queries = data[:n], data[n:]
    ids = np.arange(n, dtype=np.int64) * 3 + 5  # external ids, not positions
    idx = make_index(dim, metric)
    # two adds: the contract allows growing an index
    idx.add(ids[:1200], vecs[:1200])
    idx.add(ids[1200:], vecs[1200:])
    assert len(idx) == n
    ref = create_index("exact", dim, metric)
    ref.add(ids, vecs)
    ref_s, ref_i = ref.search(queries, 10)
    s, i = idx.search(queries, 10)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(i.tolist(), ref_i.tolist(), strict=True)])
    assert recall >= 0.95
    # the returned scores are the metric's scores of the returned ids, best first
    assert np.all(np.isin(i, ids))
    if metric == "l2":
        assert np.all(np.diff(s, axis=1) >= -1e-4)
    else:
        assert np.all(np.diff(s, axis=1) <= 1e-4)
    np.testing.assert_allclose(s[:, 0], ref_s[:, 0], rtol=1e-3, atol=1e-3)


def test_save_load_round_trip(make_index: Factory, tmp_path: Path) -> None:
    dim = 8
    data = _clustered(300, dim, seed=3)
    idx = make_index(dim, "cosine")
    idx.add(np.arange(100, 400), data)
    before = idx.search(data[:20], 5)
    path = idx.save(tmp_path / "idx")
    assert (path / "index.json").is_file()
    loaded = load_index(path)
    assert type(loaded) is type(idx) and len(loaded) == 300 and loaded.dump_config() == idx.dump_config()
    after = loaded.search(data[:20], 5)
    np.testing.assert_array_equal(before[1], after[1])
    np.testing.assert_allclose(before[0], after[0], rtol=1e-5)
    # the loaded index keeps its id set: re-adding a saved id is refused
    with pytest.raises(InvalidArgumentError, match="already in the index"):
        loaded.add(np.array([150]), data[:1])


def test_config_round_trip(make_index: Factory) -> None:
    idx = make_index(8, "l2")
    cfg = idx.dump_config()
    assert idx.config_class.from_config(cfg) == idx.config
    assert cfg["dim"] == 8 and cfg["metric"] == "l2"


# ---------------------------------------------------------------- backend-specific


def test_create_index_unknown_backend_and_option() -> None:
    with pytest.raises(ConfigError, match="unknown index backend 'annoy'"):
        create_index("annoy", 8)
    with pytest.raises(ConfigError, match="ef_serch"):
        create_index("faiss", 8, ef_serch=10)
    with pytest.raises(ConfigError, match="metric"):
        create_index("exact", 8, "dot")


def test_exact_blocking_gives_same_result() -> None:
    data = _clustered(500, 8, seed=1)
    small = ExactIndex(ExactIndexConfig(dim=8, metric="l2", block_floats=700))  # 1 query row per block
    big = ExactIndex(ExactIndexConfig(dim=8, metric="l2"))
    for idx in (small, big):
        idx.add(np.arange(500), data)
    a, b = small.search(data[:30], 7), big.search(data[:30], 7)
    np.testing.assert_array_equal(a[1], b[1])
    # each query is in the index: its own id first with squared distance ~0
    assert a[1][:, 0].tolist() == list(range(30))
    np.testing.assert_allclose(a[0][:, 0], 0.0, atol=1e-4)


def test_faiss_ivf_needs_enough_training_vectors() -> None:
    idx = create_index("faiss", 4, "ip", kind="ivf_flat", nlist=16)
    with pytest.raises(InvalidArgumentError, match="at least that many vectors, got 5"):
        idx.add(np.arange(5), np.ones((5, 4), dtype=np.float32))


def test_faiss_ivf_partial_probe_recall() -> None:
    dim, n = 16, 4000
    data = _clustered(n + 100, dim, seed=11)
    idx = create_index("faiss", dim, "l2", kind="ivf_flat", nlist=32, nprobe=8)
    idx.add(np.arange(n), data[:n])
    ref = create_index("exact", dim, "l2")
    ref.add(np.arange(n), data[:n])
    _, got = idx.search(data[n:], 10)
    _, want = ref.search(data[n:], 10)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(got.tolist(), want.tolist(), strict=True)])
    assert recall >= 0.8


def test_faiss_hnsw_ef_below_k_still_fills_k() -> None:
    idx = create_index("faiss", 4, "ip", ef_search=2)
    rng = np.random.default_rng(0)
    idx.add(np.arange(200), rng.normal(size=(200, 4)).astype(np.float32))
    _, ids = idx.search(rng.normal(size=(3, 4)).astype(np.float32), 50)
    assert np.all(ids >= 0)  # ef is raised to k per call, so 50 real neighbours come back


def test_load_index_errors(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match=r"index\.json missing"):
        load_index(tmp_path)
    idx = create_index("exact", 2)
    idx.add(TINY_IDS, TINY_VECS)
    idx.save(tmp_path / "e")
    with pytest.raises(ArtifactError, match="backend 'exact', not 'faiss'"):
        from recstack.index.faiss import FaissIndex

        FaissIndex.load(tmp_path / "e")


def test_milvus_file_path_must_end_in_db(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgumentError, match=r"must end in '\.db'"):
        create_index("milvus", 4, uri=str(tmp_path / "store.sqlite"))
