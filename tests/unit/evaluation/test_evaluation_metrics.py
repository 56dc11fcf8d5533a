"""Metrics: hand-worked examples and loop reference implementations of the Microsoft Recommenders
definitions (recommenders/evaluation/python_evaluation.py) on seeded random data."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp

from recstack.errors import InvalidArgumentError
from recstack.evaluation.metrics import (
    auc,
    catalog_coverage,
    factorized_topk_accuracy,
    genre_matrix,
    hits_matrix,
    intra_list_diversity,
    logloss,
    novelty,
    popularity_bins,
    ranking_metrics,
)


def truth_of(rows: list[set[int]], n_items: int) -> sp.csr_matrix:
    r = [u for u, items in enumerate(rows) for _ in items]
    c = [i for items in rows for i in sorted(items)]
    return sp.csr_matrix((np.ones(len(r)), (r, c)), shape=(len(rows), n_items))


# user 0: ids [3, 1, 4, 2, 0], relevant {1, 2, 7} -> hits at ranks 2 and 4
# user 1: ids [0, 5, -1, -1, -1], relevant {0}     -> hit at rank 1
# user 2: relevant {} -> not counted
IDS = np.array([[3, 1, 4, 2, 0], [0, 5, -1, -1, -1], [6, 7, 1, 2, 3]])
TRUTH = truth_of([{1, 2, 7}, {0}, set()], 8)


def test_hits_matrix_marks_relevant_positions_and_ignores_padding() -> None:
    h = hits_matrix(IDS, TRUTH)
    assert h.tolist() == [
        [False, True, False, True, False],
        [True, False, False, False, False],
        [False, False, False, False, False],
    ]


def test_ranking_metrics_hand_example() -> None:
    r = ranking_metrics(IDS, TRUTH, [1, 2, 5])
    assert r.n_users == 2  # user 2 has no test item
    assert r.rows.tolist() == [0, 1]
    u0 = {m: r.per_user[m][0].tolist() for m in r.per_user}
    # k=1: no hit for user 0
    assert [u0[m][0] for m in ("precision", "recall", "ndcg", "map", "hr", "mrr")] == [0, 0, 0, 0, 0, 0]
    # k=2: 1 hit at rank 2. P = 1/2, R = 1/3, DCG = 1/log2(3), IDCG (min(2,3)=2 hits) = 1 + 1/log2(3),
    # MAP = precision@2 / min(2, 3) = (1/2) / 2 = 0.25, MRR = 1/2
    l3, l5 = math.log2(3), math.log2(5)
    assert u0["precision"][1] == pytest.approx(0.5)
    assert u0["recall"][1] == pytest.approx(1 / 3)
    assert u0["ndcg"][1] == pytest.approx((1 / l3) / (1 + 1 / l3))  # 0.38685
    assert u0["map"][1] == pytest.approx(0.25)
    assert u0["hr"][1] == 1 and u0["mrr"][1] == pytest.approx(0.5)
    # k=5: hits at ranks 2 and 4. P = 2/5, R = 2/3, DCG = 1/log2(3) + 1/log2(5),
    # IDCG (3 hits) = 1 + 1/log2(3) + 1/2; MAP = (1/2 + 2/4) / min(5, 3) = 1/3
    assert u0["precision"][2] == pytest.approx(0.4)
    assert u0["recall"][2] == pytest.approx(2 / 3)
    assert u0["ndcg"][2] == pytest.approx((1 / l3 + 1 / l5) / (1 + 1 / l3 + 0.5))  # 0.49819
    assert u0["map"][2] == pytest.approx(1 / 3)
    # user 1: hit at rank 1 with one relevant item: everything is 1 except precision@5 = 1/5
    u1 = {m: r.per_user[m][1].tolist() for m in r.per_user}
    assert u1["precision"] == pytest.approx([1, 0.5, 0.2])
    for m in ("recall", "ndcg", "map", "hr", "mrr"):
        assert u1[m] == pytest.approx([1, 1, 1])
    # means over the 2 counted users at k=5
    assert r.mean("precision", 5) == pytest.approx((0.4 + 0.2) / 2)
    assert r.mean("recall", 5) == pytest.approx((2 / 3 + 1) / 2)
    assert r.mean("map", 5) == pytest.approx((1 / 3 + 1) / 2)
    assert r.means([5])["ndcg@5"] == pytest.approx(((1 / l3 + 1 / l5) / (1 + 1 / l3 + 0.5) + 1) / 2)
    assert r.curve("hr") == pytest.approx([0.5, 1.0, 1.0])


def test_ranking_metrics_rejects_k_beyond_list_and_unknown_metric() -> None:
    with pytest.raises(InvalidArgumentError, match="larger than the 5 recommendations"):
        ranking_metrics(IDS, TRUTH, [10])
    with pytest.raises(InvalidArgumentError, match="choose from"):
        ranking_metrics(IDS, TRUTH, [1]).mean("auc", 1)
    with pytest.raises(InvalidArgumentError, match="rows"):
        hits_matrix(IDS[:2], TRUTH)


# ---------------------------------------------------------------- reference implementations (loops)
def ref_user(rec: list[int], rel: set[int], k: int) -> dict[str, float]:
    top = [i for i in rec[:k]]
    hit_ranks = [r + 1 for r, i in enumerate(top) if i in rel and i >= 0]
    n_hit = len(hit_ranks)
    dcg = sum(1 / math.log(1 + r) for r in hit_ranks)  # MS Recommenders' default natural log
    idcg = sum(1 / math.log(1 + r) for r in range(1, min(k, len(rel)) + 1))
    # map_at_k: rr = (hit number) / rank summed, divided by min(|rel|, k)
    rr = sum((j + 1) / r for j, r in enumerate(hit_ranks))
    return {
        "precision": n_hit / k,
        "recall": n_hit / len(rel),
        "ndcg": dcg / idcg,
        "map": rr / min(len(rel), k),
        "hr": float(n_hit > 0),
        "mrr": 1 / hit_ranks[0] if hit_ranks else 0.0,
    }


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_ranking_metrics_match_loop_reference_on_random_data(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n, n_items, K = 40, 30, 12
    ids = np.stack([rng.permutation(n_items)[:K] for _ in range(n)])
    ids[rng.random((n, K)) < 0.05] = -1  # some padding
    rel = [set(rng.choice(n_items, size=int(rng.integers(0, 8)), replace=False).tolist()) for _ in range(n)]
    ks = [1, 3, 5, 10, 12]
    r = ranking_metrics(ids, truth_of(rel, n_items), ks)
    counted = [u for u in range(n) if rel[u]]
    assert r.rows.tolist() == counted
    for j, k in enumerate(ks):
        refs = [ref_user(ids[u].tolist(), rel[u], k) for u in counted]
        for m in refs[0]:
            assert r.per_user[m][:, j] == pytest.approx([x[m] for x in refs]), (m, k)
            assert r.mean(m, k) == pytest.approx(np.mean([x[m] for x in refs]))


# ---------------------------------------------------------------------------- beyond accuracy
def test_catalog_coverage_hand_example() -> None:
    # top-1 items: {3, 0, 6} -> 3/8; top-2 adds {1, 5, 7} -> 6/8; top-5 adds {4, 2} -> 8/8
    cov = catalog_coverage(IDS, 8, [1, 2, 5])
    assert cov == {1: pytest.approx(3 / 8), 2: pytest.approx(6 / 8), 5: pytest.approx(1.0)}


def test_catalog_coverage_matches_set_reference() -> None:
    rng = np.random.default_rng(5)
    ids = rng.integers(-1, 50, size=(30, 10))
    cov = catalog_coverage(ids, 60, range(1, 11))
    for k in range(1, 11):
        assert cov[k] == pytest.approx(len({int(i) for i in ids[:, :k].ravel() if i >= 0}) / 60)


def test_novelty_hand_example() -> None:
    # n_users = 4; pop [4, 2, 1] -> self-information 0, 1, 2 bits
    ids = np.array([[0, 1], [2, -1]])
    nov = novelty(ids, [4, 2, 1], 4, [1, 2])
    assert nov[1] == pytest.approx((0 + 2) / 2)  # user 0: item 0 (0 bits); user 1: item 2 (2 bits)
    assert nov[2] == pytest.approx(((0 + 1) / 2 + 2) / 2)  # padding skipped for user 1 -> 1.25


def test_intra_list_diversity_hand_example() -> None:
    # genres: 0 {A, B}, 1 {B}, 2 {C}; Jaccard distances d01 = 1 - 1/2, d02 = 1, d12 = 1
    genres = [["A", "B"], ["B"], ["C"]]
    ids = np.array([[0, 1, 2], [2, 1, -1]])
    div = intra_list_diversity(ids, genres, [1, 2, 3])
    assert div[1] == 0.0
    assert div[2] == pytest.approx((0.5 + 1.0) / 2)
    # user 0: (0.5 + 1 + 1) / 3; user 1 has 2 valid items: d21 = 1
    assert div[3] == pytest.approx(((0.5 + 1 + 1) / 3 + 1.0) / 2)
    assert intra_list_diversity(ids, genre_matrix(genres), [3])[3] == pytest.approx(div[3])


def test_intra_list_diversity_matches_pairwise_loop() -> None:
    rng = np.random.default_rng(9)
    names = list("ABCDEFG")
    genres = [list(rng.choice(names, size=int(rng.integers(0, 4)), replace=False)) for _ in range(25)]
    ids = np.stack([rng.permutation(25)[:8] for _ in range(15)])

    def jd(a: set[str], b: set[str]) -> float:
        u = a | b
        return 1 - len(a & b) / len(u) if u else 0.0

    div = intra_list_diversity(ids, genres, [2, 5, 8], batch_size=4)
    for k in (2, 5, 8):
        per_user = []
        for row in ids:
            top = [set(genres[i]) for i in row[:k]]
            pairs = [jd(top[a], top[b]) for a in range(k) for b in range(a + 1, k)]
            per_user.append(sum(pairs) / len(pairs))
        assert div[k] == pytest.approx(np.mean(per_user))


def test_popularity_bins_shares() -> None:
    # pop [10, 5, 1, 0] -> ranks 0..3, 2 bins: {item 0, 1} and {item 2, 3}; catalog share [15/16, 1/16]
    rec, cat = popularity_bins(np.array([[0, 2], [3, -1]]), [10, 5, 1, 0], k=2, n_bins=2)
    assert rec == pytest.approx([1 / 3, 2 / 3])
    assert cat == pytest.approx([15 / 16, 1 / 16])


# ------------------------------------------------------------------------------------ scored pairs
def test_auc_hand_examples() -> None:
    # positive-negative pairs ordered correctly: (.9>.8), (.9>.1), (.3<.8 wrong), (.3>.1) -> 3/4
    assert auc([1, 0, 1, 0], [0.9, 0.8, 0.3, 0.1]) == pytest.approx(0.75)
    assert auc([1, 0], [0.5, 0.5]) == pytest.approx(0.5)  # a tie counts one half
    with pytest.raises(InvalidArgumentError, match="positive and one negative"):
        auc([1, 1], [0.1, 0.2])


def test_auc_matches_pair_counting_reference() -> None:
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 200)
    s = np.round(rng.random(200), 1)  # many ties
    pos, neg = s[y == 1], s[y == 0]
    ref = np.mean([(p > q) + 0.5 * (p == q) for p in pos for q in neg])
    assert auc(y, s) == pytest.approx(ref)


def test_logloss_hand_example() -> None:
    # -(ln 0.8 + ln 0.6) / 2 = (0.22314 + 0.51083) / 2
    assert logloss([1, 0], [0.8, 0.4]) == pytest.approx(0.366985, abs=1e-6)
    assert logloss([1], [1.0]) == pytest.approx(0.0, abs=1e-12)  # clipped, finite
    with pytest.raises(InvalidArgumentError, match="sigmoid"):
        logloss([1], [2.0])


def test_factorized_topk_accuracy_hand_example() -> None:
    # row 0 scores [0.1, 0.5, 0.3, 0.5]; pairs: item 1 (0 items strictly higher; the tie with item 3
    # counts inside, like tf.math.in_top_k), item 2 (2 higher), item 0 (3 higher)
    scores = np.array([[0.1, 0.5, 0.3, 0.5], [1.0, 0.0, 0.0, 0.0]])
    acc = factorized_topk_accuracy(scores, [0, 0, 0, 1], [1, 2, 0, 0], [1, 3, 4])
    assert acc[1].tolist() == [1, 0, 0, 1]
    assert acc[3].tolist() == [1, 1, 0, 1]
    assert acc[4].tolist() == [1, 1, 1, 1]


def test_factorized_topk_accuracy_matches_loop() -> None:
    rng = np.random.default_rng(11)
    scores = rng.integers(0, 5, size=(6, 20)).astype(np.float32)
    rows = rng.integers(0, 6, 50)
    items = rng.integers(0, 20, 50)
    acc = factorized_topk_accuracy(scores, rows, items, [1, 5, 10])
    for k in (1, 5, 10):
        ref = [float((scores[r] > scores[r, i]).sum() < k) for r, i in zip(rows, items, strict=True)]
        assert acc[k].tolist() == ref
