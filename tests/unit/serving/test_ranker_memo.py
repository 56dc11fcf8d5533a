"""The memo of known users' ranking state in `TwoStageRanker`: rows and scores with the memo equal
those of `CandidateFeaturizer.features_for` without it (also after events, which grow the history the
memo is keyed by), it holds at most its budget of bytes (LRU), 0 turns it off, and users unknown to
the model are never memoised. The user tower's embeddings and the pipeline's ANN results are memoised
by their exact inputs, and so are the history sources' results."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from recstack.models.ranking.two_stage import TwoStage
from recstack.serving._ranker import RankContext, TwoStageRanker, load_ranker
from recstack.serving._release import MemoryRelease


@pytest.fixture(scope="module")
def release(blocks_two_stage: tuple[MemoryRelease, TwoStage, Path]) -> tuple[MemoryRelease, TwoStage, Path]:
    return blocks_two_stage


def _rankers(rel: MemoryRelease, path: Path) -> tuple[TwoStageRanker, TwoStageRanker]:
    a = load_ranker("ncf", path, rel, rel.features)
    b = load_ranker("ncf", path, rel, rel.features)
    assert isinstance(a, TwoStageRanker) and isinstance(b, TwoStageRanker)
    assert b.set_memo(0) == 0
    return a, b


def test_memo_scores_equal_unmemoised_scores(release: tuple[MemoryRelease, TwoStage, Path]) -> None:
    rel, ts, path = release
    memo, plain = _rankers(rel, path)
    train = ts.train_matrix()
    items = np.arange(train.shape[1], dtype=np.int64)
    rng = np.random.default_rng(3)
    for rep in range(3):  # the later passes are served from the memo
        for u in range(0, 60, 5):
            recent = np.asarray(train[u].indices, dtype=np.int64)
            if rep >= 1 and u % 2:  # events since the fit: they only change the history row
                recent = np.concatenate([rng.choice(train.shape[1], 2, replace=False), recent])
            ctx = RankContext(u, np.zeros(4, np.int64), recent)
            assert np.array_equal(memo.score(ctx, items), plain.score(ctx, items))
            sub = rng.permutation(items)[:9]  # any subset, any order: the same score per item
            assert np.array_equal(memo.score(ctx, sub), plain.score(ctx, sub))
    # the memo holds one entry per user asked (12 users); the plain one nothing
    assert len(memo.memo) == 12 and len(plain.memo) == 0
    # memoised arrays are never written to (requests share them)
    state = memo.user_state(*memo._cols(0, np.zeros(0, np.int64)))
    entry = memo.memo.get(0)
    assert entry is not None and entry.state is state
    assert not state.scores.flags.writeable and state.ranks is None  # the rows hold what ranks gave
    for a in (entry.pair, entry.dense_user, entry.cat_user, entry.cols, entry.recent):
        assert not a.flags.writeable
    # the memoised score rows are the sources' scores with the history at -inf
    own = ts.sources["itemknn"].score_users([0])[0]
    seen = train[0].indices
    assert list(ts.sources) == ["itemknn", "pop"]
    assert np.isneginf(state.scores[0, 0, seen]).all()
    rest = np.setdiff1d(items, seen)
    assert np.array_equal(state.scores[0, 0, rest], own[rest])


def test_memoised_rows_equal_features_for_rows(release: tuple[MemoryRelease, TwoStage, Path]) -> None:
    """`rows` of a memoised state == `features_for` (standardise_over="recall") bit for bit, for
    candidates in and out of the recall list, history items and repeated items alike."""
    rel, ts, path = release
    r, _ = _rankers(rel, path)
    fz = ts.featurizer()
    train = ts.train_matrix()
    rng = np.random.default_rng(5)
    for u in range(0, 60, 3):
        cols, users = r._cols(u, np.zeros(0, np.int64))
        assert users is not None
        for _ in range(2):  # built, then memoised
            state = r.user_state(cols, users)
            for items in (
                rng.choice(train.shape[1], 15, replace=False),
                np.asarray(train[u].indices[:3], dtype=np.int64),  # history items
                np.array([u % 40, u % 40, 0], dtype=np.int64),  # repeats
            ):
                want = fz.features_for(train[u], users, items[None, :], standardise_over="recall")
                got = fz.rows(state, items[None, :])
                for a, b in zip(want, got, strict=True):
                    assert np.array_equal(a, b)


def test_memo_follows_the_history_after_events(release: tuple[MemoryRelease, TwoStage, Path]) -> None:
    """Events grow a user's history: the next request sees them (the memo is keyed by the history
    row), with the scores a memo-less pipeline gives."""
    from recstack.serving.pipeline import Pipeline, RecRequest

    rel, ts, _ = release
    memo_p, plain_p = Pipeline(rel), Pipeline(rel)
    r, plain = memo_p.rankers["ncf"], plain_p.rankers["ncf"]
    assert isinstance(r, TwoStageRanker) and isinstance(plain, TwoStageRanker)
    plain.set_memo(0)
    user_id, u = 7, 6  # external id 7 = dense index 6
    train = ts.train_matrix()

    def both() -> None:
        for k in (5, 20):
            a = memo_p.recommend(RecRequest(user_id=user_id, k=k, model="ncf", exclude_seen=False))
            b = plain_p.recommend(RecRequest(user_id=user_id, k=k, model="ncf", exclude_seen=False))
            assert np.array_equal(a.items, b.items) and np.array_equal(a.scores, b.scores)

    both()
    before = r.memo.get(u)
    assert before is not None and np.array_equal(before.cols, np.sort(train[u].indices))
    unseen = [i for i in range(train.shape[1]) if i not in set(train[u].indices.tolist())]
    for it in unseen[:2]:  # two events on items the user had not seen
        for p in (memo_p, plain_p):
            p.history.append(str(user_id), u, it, "view", None, 10**9)
        both()
        after = r.memo.get(u)
        assert after is not None and it in after.cols.tolist()
        assert np.isneginf(after.state.scores[:, 0, it]).all()
    assert len(r.memo) == 1


def test_memo_lookups_are_counted(release: tuple[MemoryRelease, TwoStage, Path]) -> None:
    """recstack_ranker_memo_lookups_total{outcome}: requests count hit / grown / miss; prewarm and a
    memo that is off count nothing."""
    from prometheus_client import REGISTRY

    from recstack.serving.pipeline import Pipeline, RecRequest

    rel, ts, _ = release

    def counts() -> dict[str, float]:
        name = "recstack_ranker_memo_lookups_total"
        return {o: REGISTRY.get_sample_value(name, {"outcome": o}) or 0.0 for o in ("hit", "grown", "miss")}

    def delta(before: dict[str, float]) -> dict[str, float]:
        return {o: v - before[o] for o, v in counts().items()}

    p = Pipeline(rel)
    r = p.rankers["ncf"]
    assert isinstance(r, TwoStageRanker)
    c0 = counts()
    r.prewarm()
    assert delta(c0) == {"hit": 0.0, "grown": 0.0, "miss": 0.0}
    p.recommend(RecRequest(user_id=7, k=5, model="ncf"))  # prewarmed: a hit
    assert delta(c0) == {"hit": 1.0, "grown": 0.0, "miss": 0.0}
    train = ts.train_matrix()
    unseen = next(i for i in range(train.shape[1]) if i not in set(train[6].indices.tolist()))
    p.history.append("7", 6, unseen, "view", None, 10**9)
    p.recommend(RecRequest(user_id=7, k=5, model="ncf"))  # an event since: grown
    p.recommend(RecRequest(user_id=7, k=5, model="ncf"))  # then the grown state is a hit
    assert delta(c0) == {"hit": 2.0, "grown": 1.0, "miss": 0.0}
    r.memo.resize(r.memo.max_bytes)  # emptied: the next request builds
    p.recommend(RecRequest(user_id=7, k=5, model="ncf"))
    assert delta(c0) == {"hit": 2.0, "grown": 1.0, "miss": 1.0}
    off = Pipeline(rel)
    r_off = off.rankers["ncf"]
    assert isinstance(r_off, TwoStageRanker)
    r_off.set_memo(0)
    off.recommend(RecRequest(user_id=7, k=5, model="ncf"))
    assert delta(c0) == {"hit": 2.0, "grown": 1.0, "miss": 1.0}


def test_prewarm_builds_the_state_of_the_history_requests_read(
    release: tuple[MemoryRelease, TwoStage, Path],
) -> None:
    """The server's history of a user may hold more than the model's training row (a model fitted
    on a split's train part): prewarm given that history memoises the state requests look up."""
    from recstack.serving.pipeline import Pipeline, RecRequest

    rel, ts, _ = release
    p = Pipeline(rel)
    r = p.rankers["ncf"]
    assert isinstance(r, TwoStageRanker)
    train = ts.train_matrix()
    extra = next(i for i in range(train.shape[1]) if i not in set(train[6].indices.tolist()))
    p.history.append("7", 6, extra, "view", None, 10**9)  # user 7 (index 6): one item beyond training
    r.prewarm(recent=lambda u: p.history.get(str(u + 1), u).items)
    entry = r.memo.get(6)
    assert entry is not None and extra in entry.cols.tolist()
    plain = Pipeline(rel)
    plain.history.append("7", 6, extra, "view", None, 10**9)
    plain_r = plain.rankers["ncf"]
    assert isinstance(plain_r, TwoStageRanker)
    plain_r.set_memo(0)
    a = p.recommend(RecRequest(user_id=7, k=10, model="ncf"))
    b = plain.recommend(RecRequest(user_id=7, k=10, model="ncf"))
    assert np.array_equal(a.items, b.items) and np.array_equal(a.scores, b.scores)
    # a hit: not rebuilt (the entry is only re-keyed by the request's recent list)
    again = r.memo.get(6)
    assert again is not None and again.state is entry.state and again.pair is entry.pair
    assert np.array_equal(again.recent, p.resolve(RecRequest(user_id=7)).recent)


def test_prewarm_fills_the_memo_most_active_users_first(
    release: tuple[MemoryRelease, TwoStage, Path],
) -> None:
    rel, ts, path = release
    memo, plain = _rankers(rel, path)
    train = ts.train_matrix()
    n_users = train.shape[0]
    assert memo.prewarm() == n_users and len(memo.memo) == n_users
    assert memo.prewarm() == 0  # already memoised: nothing rebuilt
    assert plain.prewarm() == 0 and len(plain.memo) == 0  # memo off: nothing to fill
    items = np.arange(train.shape[1], dtype=np.int64)
    for u in (0, 17, n_users - 1):
        ctx = RankContext(u, np.zeros(4, np.int64), np.zeros(0, np.int64))
        assert np.array_equal(memo.score(ctx, items), plain.score(ctx, items))
    # a budget of 5 users keeps the 5 most active ones
    small, _ = _rankers(rel, path)
    small.set_memo(5.5 * small.memo_bytes_per_user() / 2**20)
    assert small.prewarm() == 5
    active = np.argsort(-np.diff(train.indptr), kind="stable")[:5]
    assert sorted(small.memo.lru_keys()) == sorted(active.tolist())


def test_servers_prewarm_in_the_background_and_let_replaced_releases_go(
    release: tuple[MemoryRelease, TwoStage, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    import atexit
    import gc
    import threading
    import weakref

    from recstack.serving._state import ServingState, build_state
    from recstack.serving.settings import ServingSettings

    rel, ts, _ = release

    def prewarmed() -> ServingState:
        state = build_state(rel, ServingSettings(index="exact"), prewarm=True)
        for t in [t for t in threading.enumerate() if t.name.startswith("prewarm-")]:
            t.join(timeout=30)
        return state

    live: list[object] = []  # the exit hooks registered and not unregistered since
    seen: list[object] = []
    register, unregister = atexit.register, atexit.unregister
    monkeypatch.setattr(
        atexit, "register", lambda f, *a, **k: (live.append(f), seen.append(f), register(f, *a, **k))[2]
    )
    monkeypatch.setattr(
        atexit, "unregister", lambda f: (live.remove(f) if f in live else None, unregister(f))[1]
    )
    state = prewarmed()
    # a finished prewarm leaves no exit hook behind (reloads would pile them up)
    assert seen and not live
    rankers = [r for r in state.pipeline.rankers.values() if isinstance(r, TwoStageRanker)]
    assert rankers
    assert len(rankers[0].memo) == ts.train_matrix().shape[0]  # every user memoised
    ref = weakref.ref(rankers[0])
    del state, rankers
    gc.collect()
    assert ref() is None, "a finished prewarm still holds the replaced ranker"
    # batch jobs (prewarm off) start no thread
    before = {t.name for t in threading.enumerate()}
    build_state(rel, ServingSettings(index="exact"))
    assert not {t.name for t in threading.enumerate()} - before


def test_unknown_users_are_not_memoised(release: tuple[MemoryRelease, TwoStage, Path]) -> None:
    rel, ts, path = release
    r, plain = _rankers(rel, path)
    items = np.arange(ts.train_matrix().shape[1], dtype=np.int64)
    ctx = RankContext(None, np.zeros(4, np.int64), np.array([1, 5, 9], dtype=np.int64))
    assert np.array_equal(r.score(ctx, items), plain.score(ctx, items))
    assert len(r.memo) == 0


def test_memo_budget_evicts_least_recently_used(release: tuple[MemoryRelease, TwoStage, Path]) -> None:
    rel, ts, path = release
    r, _ = _rankers(rel, path)
    n_items = ts.train_matrix().shape[1]
    items = np.arange(n_items, dtype=np.int64)

    def ask(u: int) -> None:  # twice: the doorkeeper admits a user at its second miss
        for _ in range(2):
            r.score(RankContext(u, np.zeros(4, np.int64), np.zeros(0, np.int64) + u % n_items), items)

    ask(1)
    one = r.memo.nbytes  # bytes of one user's entry (per source a score row and a rank row, ...)
    assert one >= 2 * n_items * (4 + 2)
    assert r.set_memo(3.5 * one / 2**20) >= 1 and len(r.memo) == 0  # resizing clears it
    for u in (1, 2, 3, 1, 4):  # 1 is used again before 4 arrives: 2 is the one evicted
        ask(u)
    assert r.memo.lru_keys() == [3, 1, 4] and r.memo.nbytes <= r.memo.max_bytes
    assert r.set_memo(0) == 0
    ask(5)
    assert len(r.memo) == 0


def _sum_tower(path: Path, max_history: int = 4) -> Path:
    """ONNX user tower: user_emb = [sum of hist, uid + sum of ucat] (depends on every input)."""
    import onnx
    from onnx import TensorProto, helper

    uid = helper.make_tensor_value_info("uid", TensorProto.INT64, ["b"])
    ucat = helper.make_tensor_value_info("ucat", TensorProto.INT64, ["b", 4])
    hist = helper.make_tensor_value_info("hist", TensorProto.INT64, ["b", max_history])
    out = helper.make_tensor_value_info("user_emb", TensorProto.FLOAT, ["b", 2])
    nodes = [
        helper.make_node("Cast", ["hist"], ["hf"], to=TensorProto.FLOAT),
        helper.make_node("ReduceSum", ["hf", "axis"], ["hs"], keepdims=1),
        helper.make_node("Cast", ["ucat"], ["cf"], to=TensorProto.FLOAT),
        helper.make_node("ReduceSum", ["cf", "axis"], ["cs"], keepdims=1),
        helper.make_node("Cast", ["uid"], ["uf"], to=TensorProto.FLOAT),
        helper.make_node("Unsqueeze", ["uf", "axis"], ["u2"]),
        helper.make_node("Add", ["u2", "cs"], ["us"]),
        helper.make_node("Concat", ["hs", "us"], ["user_emb"], axis=1),
    ]
    inits = [helper.make_tensor("axis", TensorProto.INT64, [1], [1])]
    graph = helper.make_graph(nodes, "tower", [uid, ucat, hist], [out], initializer=inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def test_user_tower_memo_returns_the_sessions_embedding(tmp_path: Path) -> None:
    from recstack.serving._ranker import UserTower

    path = _sum_tower(tmp_path / "tower.onnx")
    memo, plain = UserTower(path, memo_entries=2), UserTower(path, memo_entries=0)
    codes = np.array([1, 2, 0, 3], dtype=np.int64)
    # hist = recent[:4] + 1: [5 + 1, 2 + 1, 9 + 1, 1 + 1] -> 21; uid 3 + 1 + codes 6 -> 10
    first = memo.encode(3, codes, np.array([5, 2, 9, 1, 7], dtype=np.int64))
    assert first.tolist() == [21.0, 10.0] and not first.flags.writeable
    assert memo.encode(3, codes, np.array([5, 2, 9, 1, 8], dtype=np.int64)) is first  # item 5 unused
    for u, c, rec in [(3, codes, [4, 2]), (None, codes, [5, 2]), (3, codes * 0, [5, 2]), (3, codes, [])]:
        r = np.asarray(rec, dtype=np.int64)
        assert np.array_equal(memo.encode(u, c, r), plain.encode(u, c, r))
    assert len(memo._memo) == 2 and len(plain._memo) == 0  # the last two inputs (LRU)
    # a new event changes the recent items: a different key, the new embedding
    assert memo.encode(3, codes, np.array([0, 5, 2, 9], dtype=np.int64)).tolist() == [20.0, 10.0]


def test_pipeline_memoises_ann_results_by_exact_query(full_release: MemoryRelease) -> None:
    """The ANN source asks the index once per distinct (embedding, k); a repeated request gets the
    same recommendations from the memo."""
    from recstack.serving._state import build_state
    from recstack.serving.pipeline import RecRequest
    from recstack.serving.settings import ServingSettings

    p = build_state(full_release, ServingSettings()).pipeline
    assert p.index is not None and p.user_tower is not None
    calls: list[int] = []
    search = p.index.search

    def counted(q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        calls.append(k)
        return search(q, k)  # type: ignore[no-any-return]

    p.index.search = counted  # type: ignore[method-assign]
    uid = full_release.dataset.user_vocab.ids.to_list()[0]
    first = p.recommend(RecRequest(user_id=uid, k=5, model="recall"))
    again = p.recommend(RecRequest(user_id=uid, k=5, model="recall"))
    ann = [p.recall_memo.get(k) for k in p.recall_memo.lru_keys() if len(k) == 3]  # (source, query, k)
    assert len(calls) == 1 and len(ann) == 1
    assert np.array_equal(first.items, again.items) and np.array_equal(first.scores, again.scores)
    # the memoised result is the index's own (the constant tower embeds every user to [1, 0])
    hit = ann[0]
    assert hit is not None
    _, ids, sc, _ = hit
    want_sc, want_ids = search(np.array([[1.0, 0.0]], dtype=np.float32), calls[0])
    ok = want_ids[0] >= 0
    assert np.array_equal(ids, want_ids[0][ok]) and np.array_equal(sc, want_sc[0][ok])
    assert not ids.flags.writeable
    # another k (a user with another history length) is another query
    item = full_release.dataset.item_vocab.ids.to_list()[0]
    p.recommend(RecRequest(liked_items=[item], k=5, model="recall"))
    assert len(calls) == 2 and calls[1] != calls[0]


def test_pipeline_memoises_history_sources_by_the_users_items(full_release: MemoryRelease) -> None:
    """A history source scores a user's items once; a repeated request reuses the result, an event
    (new items) scores again, and results with the memo off equal those with it on."""
    from recstack.serving._history import now
    from recstack.serving._state import build_state
    from recstack.serving.pipeline import PipelineConfig, RecRequest
    from recstack.serving.settings import ServingSettings

    p = build_state(full_release, ServingSettings()).pipeline
    off = build_state(full_release, ServingSettings(), PipelineConfig(recall_memo_mb=0)).pipeline
    calls: list[int] = []
    scorer, sparse = p.scorers["itemknn"]

    def counted(items: np.ndarray) -> np.ndarray:
        calls.append(len(items))
        return scorer(items)

    p.scorers["itemknn"] = (counted, sparse)
    uids = full_release.dataset.user_vocab.ids.to_list()[:4]
    for _rep in range(2):
        for uid in uids:
            a = p.recommend(RecRequest(user_id=uid, k=5, model="recall"))
            b = off.recommend(RecRequest(user_id=uid, k=5, model="recall"))
            assert np.array_equal(a.items, b.items) and np.array_equal(a.scores, b.scores)
        assert len(calls) == len(uids)  # the second pass is served from the memo
    assert len(off.recall_memo) == 0
    idx = p.catalog.user_index(uids[0])
    new = int(np.setdiff1d(np.arange(p.catalog.n_items), p.history.get(str(uids[0]), idx).items)[0])
    p.history.append(str(uids[0]), idx, new, "click", None, now())
    p.recommend(RecRequest(user_id=uids[0], k=5, model="recall"))
    assert len(calls) == len(uids) + 1  # new items: a new query


def test_byte_lru_evicts_least_recently_used_by_bytes() -> None:
    from recstack.serving._memo import ByteLRU

    memo: ByteLRU[str] = ByteLRU(100)
    memo.put("a", "A", 40)
    memo.put("b", "B", 40)
    assert memo.get("a") == "A"  # a is now the most recent
    memo.put("c", "C", 40)  # 120 > 100: b goes
    assert memo.get("b") is None and memo.get("a") == "A" and memo.get("c") == "C"
    assert memo.nbytes == 80 and len(memo) == 2
    memo.put("a", "A2", 10)  # replacing an entry replaces its size
    assert memo.nbytes == 50 and memo.get("a") == "A2"
    memo.put("huge", "H", 101)  # larger than the memo: not stored, nothing evicted
    assert memo.get("huge") is None and len(memo) == 2
    assert ByteLRU[str](0).get("x") is None
    zero: ByteLRU[str] = ByteLRU(0)
    zero.put("x", "X", 1)
    assert len(zero) == 0


def test_doorkeeper_builds_an_entry_at_a_users_second_miss(
    release: tuple[MemoryRelease, TwoStage, Path],
) -> None:
    """A user's first miss builds only its candidates' rows (no entry, no per-item ranks), its
    second builds the entry; the scores are those of a memo-less ranker every time. A doorkeeper
    that forgets (`DOORKEEPER_USERS`) starts over; prewarm admits without it."""
    from recstack.serving import _ranker

    rel, ts, path = release
    r, plain = _rankers(rel, path)
    train = ts.train_matrix()
    rng = np.random.default_rng(11)
    for u in (3, 8):
        ctx = RankContext(u, np.zeros(4, np.int64), np.asarray(train[u].indices, dtype=np.int64))
        for asked in range(3):
            items = rng.choice(train.shape[1], 12, replace=False)
            assert np.array_equal(r.score(ctx, items), plain.score(ctx, items))
            # after the first request: no entry; from the second on: the entry
            assert (r.memo.get(u) is not None) == (asked >= 1)
    # the state of a first miss holds no per-item ranks: the rows search the candidates' ranks
    cols, users = r._cols(20, np.zeros(0, np.int64))
    assert users is not None
    state = r.user_state(cols, users)
    assert state.ranks is None and r.memo.get(20) is None
    assert r.user_state(cols, users) is r.memo.get(20).state  # type: ignore[union-attr]
    # a doorkeeper of one user forgets the first of two alternating users
    small, _ = _rankers(rel, path)
    old = _ranker.DOORKEEPER_USERS
    _ranker.DOORKEEPER_USERS = 1
    try:
        for u in (3, 8, 3, 8):
            small.score(RankContext(u, np.zeros(4, np.int64), np.zeros(0, np.int64)), np.arange(5))
        assert len(small.memo) == 0
    finally:
        _ranker.DOORKEEPER_USERS = old
