"""Cold items: can content (text embeddings) recommend items nobody has interacted with yet?

Protocol ``cold-items`` (per data set, seed 42): 10% of the items that have interactions are held out
with ALL their interactions; those interactions are the test set, the rest is the training set (the
held-out items stay in the catalogue with no interaction). Every user who rated a held-out item and
has a training history is a test user; each model ranks the held-out items (the cold catalogue: a
collaborative model cannot score them at all) for each test user, and we report recall@20 and
NDCG@10 of the held-out items that user rated (`recstack.evaluation.metrics.ranking_metrics`).
``all_items`` repeats it with BENCHMARKS.md's candidates: the whole catalogue minus the user's
training items (the held-out items must then beat every warm item too):

- ``content``: `recstack.models.retrieval.content.Content` fitted on the training set: the user's
  profile = mean text embedding (all-MiniLM-L6-v2 over title, year, genres, top tags; mean-centred)
  of their training items, score = cosine with each held-out item's text embedding. The held-out
  items' user tags are removed (tags are applied by the users who rated a movie: a new item has
  none; ML-100K has no tags);
- ``genre_year``: the same profile method over a hand-made item vector: the genre multi-hot
  (L2-normalised) next to a one-hot 5-year release bucket (weight 0.5), mean-centred;
- ``random``: a seeded random order.

Also measured: encoder throughput (items/s, encoding every item text of the data set, batch 64, cold
cache, the 1-minute load average before and after: the machine is shared) and, with ``--build``, a
`recstack build` on ml-latest-small with pop, itemknn, content and content_userknn (stage times;
text embeddings from the cache the throughput run filled).

    nice -n 10 .venv/bin/python benchmarks/bench_cold.py [--data ml-100k ml-latest-small] [--build]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import scipy.sparse as sp

from recstack.data.dataset import Dataset
from recstack.data.movielens import load_movielens
from recstack.evaluation.metrics import ranking_metrics
from recstack.models.retrieval.content import Content
from recstack.text import TextEncoder, embed_items, item_texts

RESULTS = Path(__file__).resolve().parent / "results" / "cold.json"
DATA = {
    "ml-100k": Path("/work/shared/data/ml-100k"),
    "ml-latest-small": Path("/work/shared/data/ml-latest-small"),
}
SHARE, SEED = 0.10, 42


def cold_split(ds: Dataset, share: float, seed: int) -> tuple[Dataset, sp.csr_matrix, np.ndarray]:
    """(train dataset without the held-out items' interactions and without their user tags,
    test matrix [n_users, n_items] of those interactions, held-out item indices)."""
    rng = np.random.default_rng(seed)
    rated = np.unique(ds.interactions["item"].to_numpy())
    held = np.sort(rng.choice(rated, size=max(1, round(share * len(rated))), replace=False))
    is_held = pl.col("item").is_in(held.tolist())
    test = ds.interactions.filter(is_held)
    train = ds.with_interactions(ds.interactions.filter(~is_held))
    if "tags" in ds.items.columns:  # tags are applied by the users who rated the movie: a new item has none
        no_tags = pl.lit([], dtype=pl.List(pl.String))
        items = ds.items.with_columns(pl.when(is_held).then(no_tags).otherwise(pl.col("tags")).alias("tags"))
        train = dataclasses.replace(train, items=items)
    truth = sp.csr_matrix(
        (np.ones(test.height, dtype=np.float32), (test["user"].to_numpy(), test["item"].to_numpy())),
        shape=(ds.n_users, ds.n_items),
    )
    truth.sum_duplicates()
    truth.data[:] = 1.0
    return train, truth, held


def genre_year_vectors(ds: Dataset) -> np.ndarray:
    genres = ds.item_genres()
    names = sorted({g for gs in genres for g in gs if g and g != "unknown"})
    pos = {g: j for j, g in enumerate(names)}
    gm = np.zeros((ds.n_items, len(names)), dtype=np.float32)
    for i, gs in enumerate(genres):
        for g in gs:
            if g in pos:
                gm[i, pos[g]] = 1.0
    gm /= np.maximum(np.linalg.norm(gm, axis=1, keepdims=True), 1e-9)
    items = ds.items.sort("item")
    years = items["year"].cast(pl.Int32).fill_null(-1).to_numpy() if "year" in items.columns else None
    yb = np.zeros((ds.n_items, 0), dtype=np.float32)
    if years is not None:
        valid = years > 0
        buckets = np.where(valid, (years - years[valid].min()) // 5, -1) if valid.any() else years * 0 - 1
        yb = np.zeros((ds.n_items, int(buckets.max()) + 1), dtype=np.float32)
        yb[np.flatnonzero(valid), buckets[valid]] = 0.5
    return np.hstack([gm, yb])


def rank_held(scores: np.ndarray, held: np.ndarray, k: int) -> np.ndarray:
    """Top k of the held-out items per row -> item indices [n, k]."""
    sub = scores[:, held]
    order = np.argsort(-sub, axis=1, kind="stable")[:, :k]
    return held[order]


def cold_items(name: str, ds: Dataset, cache_dir: str) -> dict[str, Any]:
    train, truth, held = cold_split(ds, SHARE, SEED)
    X = train.to_csr("binary")
    users = np.flatnonzero((np.diff(truth.indptr) > 0) & (np.diff(X.indptr) > 0))
    t0 = time.perf_counter()
    content = Content(cache_dir=cache_dir, export_onnx=False).fit(train)
    fit_s = time.perf_counter() - t0
    kmax = 20
    out: dict[str, Any] = {
        "dataset": name,
        "items": ds.n_items,
        "held_out_items": len(held),
        "test_interactions": int(truth.nnz),
        "test_users": len(users),
        "content_fit_seconds": round(fit_s, 2),  # embeddings from the cache the throughput run filled
        "models": {},
    }
    gy = genre_year_vectors(train)
    gy -= gy.mean(axis=0)  # centred like the content model's embeddings (a fairer baseline)
    rng = np.random.default_rng(SEED)
    rankings = {
        "content": rank_held(content.score_users(users), held, kmax),
        "genre_year": rank_held(np.asarray(X[users] @ gy) @ gy.T, held, kmax),
        "random": rank_held(rng.random((len(users), ds.n_items)).astype(np.float32), held, kmax),
    }
    for model, ids in rankings.items():
        res = ranking_metrics(ids, truth[users], [10, 20])
        out["models"][model] = {
            "recall@20": round(res.mean("recall", 20), 4),
            "ndcg@10": round(res.mean("ndcg", 10), 4),
            "users": res.n_users,
        }
    # BENCHMARKS.md's candidates: ALL items (the user's training items removed), the held-out ones
    # being the relevant ones; each model ranks the whole catalogue
    seen = X[users]
    full = {
        "content": content.score_users(users),
        "genre_year": np.asarray(seen @ gy) @ gy.T,
        "random": np.random.default_rng(SEED).random((len(users), ds.n_items)),
    }
    out["all_items"] = {}
    for model, sc in full.items():
        sc = np.asarray(sc, dtype=np.float32)
        coo = seen.tocoo()
        sc[coo.row, coo.col] = -np.inf
        ids = np.argsort(-sc, axis=1, kind="stable")[:, :kmax]
        res = ranking_metrics(ids, truth[users], [10, 20])
        out["all_items"][model] = {
            "recall@20": round(res.mean("recall", 20), 4),
            "ndcg@10": round(res.mean("ndcg", 10), 4),
        }
    c, g = out["models"]["content"], out["models"]["genre_year"]
    out["content_vs_genre_year"] = {
        m: round(c[m] / g[m] - 1.0, 3) if g[m] else None for m in ("recall@20", "ndcg@10")
    }
    return out


def _all_items_metrics(
    scores: np.ndarray, seen: sp.csr_matrix, truth: sp.csr_matrix, kmax: int = 20
) -> dict[str, float]:
    """recall@20 / NDCG@10 of the held-out items when ``scores`` [n, n_items] rank the whole catalogue
    minus the user's training items ``seen`` (ties: the lower item index first, a stable sort)."""
    sc = np.array(scores, dtype=np.float32)
    coo = seen.tocoo()
    sc[coo.row, coo.col] = -np.inf
    ids = np.argsort(-sc, axis=1, kind="stable")[:, :kmax]
    res = ranking_metrics(ids, truth, [10, 20])
    return {"recall@20": round(res.mean("recall", 20), 4), "ndcg@10": round(res.mean("ndcg", 10), 4)}


def _standardise(x: np.ndarray) -> np.ndarray:
    """Each row to mean 0, sd 1 (blends mix scores of different scales)."""
    x = np.asarray(x, dtype=np.float64)
    sd = x.std(axis=1, keepdims=True)
    return ((x - x.mean(axis=1, keepdims=True)) / np.where(sd > 0, sd, 1.0)).astype(np.float32)


BLEND_WEIGHTS = (0.0, 0.1, 0.25, 0.5, 1.0, 2.0)
GAP_SEEDS = (42, 43, 44, 45, 46)


def meta_prior(train: Dataset) -> np.ndarray:
    """A popularity prior a new item has [n_items]: log of the training interactions of items of its
    genres (mean over its genres) plus those of its 5-year release bucket, each standardised (an item
    without interactions gets the prior of what it is, not of itself)."""
    X = train.to_csr("binary")
    pop = np.asarray(X.sum(axis=0)).ravel().astype(np.float64)
    gy = genre_year_vectors(train) > 0
    n_genres = len({g for gs in train.item_genres() for g in gs if g and g != "unknown"})
    parts = []
    for block in (gy[:, :n_genres], gy[:, n_genres:]):
        if block.shape[1] == 0:
            continue
        per = (pop @ block) / np.maximum(block.sum(axis=0), 1)  # mean interactions of an item of the column
        v = np.log1p((block * per).sum(axis=1) / np.maximum(block.sum(axis=1), 1))
        parts.append((v - v.mean()) / (v.std() or 1.0))
    return np.sum(parts, axis=0).astype(np.float32)


def gap_over_seeds(ds: Dataset, cache_dir: str, seeds: tuple[int, ...]) -> dict[str, Any]:
    """content vs genre+year, held-out items as candidates and all items, over several cold splits
    (the held-out set decides much: a few widely rated held-out items carry many test interactions)."""
    out: dict[str, Any] = {}
    for seed in seeds:
        train, truth, held = cold_split(ds, SHARE, seed)
        X = train.to_csr("binary")
        users = np.flatnonzero((np.diff(truth.indptr) > 0) & (np.diff(X.indptr) > 0))
        seen, tr = X[users], truth[users]
        c_sc = Content(cache_dir=cache_dir, export_onnx=False).fit(train).score_users(users)
        gy = genre_year_vectors(train)
        gy -= gy.mean(axis=0)
        g_sc = np.asarray(seen @ gy) @ gy.T
        row: dict[str, Any] = {"test_interactions": int(tr.nnz)}
        # the largest share of the test interactions one held-out item carries
        row["top_item_share"] = round(float(np.asarray(tr.sum(axis=0)).max() / max(tr.nnz, 1)), 3)
        for label, sc in (("content", c_sc), ("genre_year", g_sc)):
            held_res = ranking_metrics(rank_held(sc, held, 20), tr, [10, 20])
            row[label] = {
                "held_ndcg@10": round(held_res.mean("ndcg", 10), 4),
                "all_items": _all_items_metrics(sc, seen, tr),
            }
        out[str(seed)] = row
    rows = list(out.values())
    for label in ("content", "genre_year"):
        for mode, get in (
            ("all_items", lambda r: r["all_items"]["ndcg@10"]),
            ("held", lambda r: r["held_ndcg@10"]),
        ):
            vals = [get(r[label]) for r in rows]
            out[f"{label}_{mode}_ndcg@10_mean"] = round(float(np.mean(vals)), 4)
    return out


def all_items_gap(name: str, ds: Dataset, cache_dir: str) -> dict[str, Any]:
    """Why content loses to genre+year on NDCG@10 when ALL items are candidates.

    - ``ties``: genre+year vectors are coarse: many items share a vector, hence a score, and the
      stable sort puts the lower item index first. MovieLens item ids follow the order movies entered
      the catalogue, so a low index is an old, widely rated movie: the tie-break is a popularity prior
      taken from the whole data set (test interactions included). Measured: genre+year with ties broken
      at random (seeded), the share of a top-10 with a tied score, and an "index only" ranking;
    - ``blend``: content + w x genre+year (row-standardised scores), and content + w x item-index
      prior, w chosen on VALIDATION: a cold split of the training data (10% of its rated items held
      out the same way, seed 43); the test figures at the chosen w;
    - ``tags``: on ml-latest-small the held-out items lost their tags (a new item has none) while the
      warm ones keep theirs: with all items as candidates the profile (built from tagged items) favours
      tagged items. ``content_no_tags``: every item's tags removed (costs an encode of every text).
    """
    train, truth, _ = cold_split(ds, SHARE, SEED)
    X = train.to_csr("binary")
    users = np.flatnonzero((np.diff(truth.indptr) > 0) & (np.diff(X.indptr) > 0))
    seen, tr = X[users], truth[users]
    rng = np.random.default_rng(SEED)
    content = Content(cache_dir=cache_dir, export_onnx=False).fit(train)
    gy = genre_year_vectors(train)
    gy -= gy.mean(axis=0)
    c_sc = content.score_users(users)
    g_sc = np.asarray(seen @ gy) @ gy.T
    index_prior = np.broadcast_to(-np.arange(ds.n_items, dtype=np.float32) / ds.n_items, c_sc.shape)
    out: dict[str, Any] = {"dataset": name, "test_users": len(users)}
    # ties: how many of genre+year's top 10 share their score with another candidate
    top = np.argsort(-np.where(seen.toarray() > 0, -np.inf, g_sc), axis=1, kind="stable")[:, :10]
    tv = np.take_along_axis(g_sc, top, axis=1)
    tied = np.array([np.isin(tv[r], g_sc[r][np.setdiff1d(np.arange(ds.n_items), top[r])]).mean()
                     for r in range(min(len(users), 200))])  # fmt: skip
    noise = rng.random(c_sc.shape).astype(np.float32) * 1e-6
    out["ties"] = {
        "genre_year_top10_share_tied": round(float(tied.mean()), 3),
        "genre_year": _all_items_metrics(g_sc, seen, tr),
        "genre_year_random_ties": _all_items_metrics(g_sc + noise, seen, tr),
        "index_only": _all_items_metrics(index_prior, seen, tr),
        "content": _all_items_metrics(c_sc, seen, tr),
    }
    # validation: a cold split of the training data; the blend weight is chosen on its NDCG@10
    vtrain, vtruth, _ = cold_split(train, SHARE, SEED + 1)
    vX = vtrain.to_csr("binary")
    vusers = np.flatnonzero((np.diff(vtruth.indptr) > 0) & (np.diff(vX.indptr) > 0))
    vcontent = Content(cache_dir=cache_dir, export_onnx=False).fit(vtrain)
    vgy = genre_year_vectors(vtrain)
    vgy -= vgy.mean(axis=0)
    vc = _standardise(vcontent.score_users(vusers))
    vg = _standardise(np.asarray(vX[vusers] @ vgy) @ vgy.T)
    vidx = _standardise(np.broadcast_to(index_prior[0], vc.shape))
    tc, tg, tidx = _standardise(c_sc), _standardise(g_sc), _standardise(index_prior)
    vmeta = np.broadcast_to(meta_prior(vtrain), vc.shape)
    tmeta = np.broadcast_to(meta_prior(train), tc.shape)
    out["ties"]["meta_prior_only"] = _all_items_metrics(tmeta, seen, tr)
    out["blend"] = {}
    blends = {"genre_year": (vg, tg), "meta_prior": (vmeta, tmeta), "index_prior": (vidx, tidx)}
    for label, (va, ta) in blends.items():
        val = {
            w: _all_items_metrics(vc + w * va, vX[vusers], vtruth[vusers])["ndcg@10"] for w in BLEND_WEIGHTS
        }
        best = max(val, key=lambda w: (val[w], -w))
        out["blend"][f"content+{label}"] = {
            "validation_ndcg@10": {str(w): v for w, v in val.items()},
            "chosen_weight": best,
            "test": _all_items_metrics(tc + best * ta, seen, tr),
        }
    seeds = tuple(int(x) for x in os.environ.get("BENCH_COLD_GAP_SEEDS", "").split(",") if x) or GAP_SEEDS
    out["seeds"] = gap_over_seeds(ds, cache_dir, seeds)
    if "tags" in ds.items.columns and os.environ.get("BENCH_COLD_NO_TAGS"):
        import dataclasses as dc

        no_tags = pl.lit([], dtype=pl.List(pl.String))
        bare = dc.replace(train, items=train.items.with_columns(no_tags.alias("tags")))
        c2 = Content(cache_dir=cache_dir, export_onnx=False).fit(bare)
        out["tags"] = {"content_no_tags": _all_items_metrics(c2.score_users(users), seen, tr)}
    return out


def throughput(ds: Dataset, cache_dir: str) -> dict[str, Any]:
    """Encode every item text of ``ds`` (cold cache; fills it for the content model's fit)."""
    TextEncoder().encode(["warm-up"])  # the model load is not part of the throughput
    n = len(item_texts(ds))
    load0 = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as cold:
        t0 = time.perf_counter()
        embed_items(ds, cache_dir=cold, progress=False)
        s = time.perf_counter() - t0
        Path(cache_dir).mkdir(parents=True, exist_ok=True)
        for f in Path(cold).glob("texts-*.npy"):  # the content model's fit reads them
            shutil.copy(f, Path(cache_dir) / f.name)
    return {
        "items": n,
        "seconds": round(s, 2),
        "items_per_second": round(n / s, 1),
        "load_average_1min": [round(load0, 1), round(os.getloadavg()[0], 1)],
    }


def build_time(cache_dir: str) -> dict[str, Any]:
    """`recstack build` on ml-latest-small with pop, itemknn, content and content_userknn (stratified
    evaluation, refit, index over the content embeddings, ONNX query encoder in the release). The text
    embeddings come from ``cache_dir`` (filled by the throughput run: add its seconds for a cold
    cache)."""
    from recstack.release.build import BuildConfig, DatasetSpec, IndexSpec, ModelSpec, build

    text = {"cache_dir": cache_dir}
    cfg = BuildConfig(
        dataset=DatasetSpec(source=str(DATA["ml-latest-small"])),
        models=[
            ModelSpec(name="pop"),
            ModelSpec(name="itemknn"),
            ModelSpec(name="content", params=text),
            ModelSpec(name="content_userknn", params=text),
        ],
        index=IndexSpec(source="content"),
    )
    with tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter()
        man = build(cfg, d)
        total = time.perf_counter() - t0
        size = sum(f.stat().st_size for f in Path(d, man.id).rglob("*") if f.is_file())
        return {
            "dataset": "ml-latest-small",
            "models": [m.key for m in cfg.models],
            "text_cache": "warm (add the throughput seconds for a cold cache)",
            "total_seconds": round(total, 1),
            "stages": man.timings,
            "release_mb": round(size / 2**20, 1),
            "ndcg@10": {k: round(v.get("ndcg@10", 0.0), 4) for k, v in man.metrics.items()},
        }


def post_items(cache_dir: str, n: int) -> dict[str, Any]:
    """``POST /v1/items`` latency until the item is recommendable: ml-latest-small served in process
    (FastAPI TestClient; pop, itemknn and content with its ONNX encoder; a SQLite event log), ``n``
    new movies posted one by one. The POST answers once the item is logged, embedded and in the
    catalogue, the text index and search; each is then checked by its similar items (the nearest
    release movie by text) and by a recommendation (top 50) for a visitor who liked that movie."""
    from fastapi.testclient import TestClient

    from recstack.serving._release import MemoryRelease
    from recstack.serving.api.app import create_app
    from recstack.serving.settings import ServingSettings

    ds = load_movielens(DATA["ml-latest-small"])
    from recstack.models.registry import create

    models = {name: create(name).fit(ds) for name in ("pop", "itemknn")}
    models["content"] = Content(cache_dir=cache_dir).fit(ds)
    rel = MemoryRelease(id="bench-post", dataset=ds, retrievers=models)
    texts = [
        ("Robots of the Outer Rim", ["Sci-Fi", "Adventure"], "A space opera with robots and rebels."),
        ("The Last Wedding", ["Comedy", "Romance"], "Two families meet for a wedding in Paris."),
        ("Deep Water", ["Thriller"], "A submarine crew hunts a killer in the dark."),
        ("Dragon School", ["Animation", "Children"], "Young dragons learn to fly."),
    ]
    lat: list[float] = []
    parts: dict[str, list[float]] = {"log": [], "add": []}
    recommendable = 0
    with tempfile.TemporaryDirectory() as d:
        settings = ServingSettings(api_key="k", event_log=f"sqlite:///{d}/events.db")
        with TestClient(create_app(settings, loader=lambda target: rel)) as client:
            client.get("/v1/search", params={"q": "warm-up"})  # opens the ONNX encoder
            for j in range(n):
                title, genres, text = texts[j % len(texts)]
                body = {"item_id": 10_000_000 + j, "title": f"{title} {j}", "year": 2026, "genres": genres,
                        "text": text}  # fmt: skip
                t0 = time.perf_counter()
                r = client.post("/v1/items", json=body, headers={"X-API-Key": "k"})
                lat.append(time.perf_counter() - t0)
                assert r.status_code == 201, r.text
                for key in parts:
                    parts[key].append(r.json()["seconds"][key] * 1000)
                sim = client.get(f"/v1/items/{body['item_id']}/similar", params={"k": 10}).json()
                # the nearest release movie (not one of the movies posted before)
                liked = next(it["item_id"] for it in sim["items"] if it["item_id"] < 10_000_000)
                rec = client.post("/v1/recommendations", json={"liked_items": [liked], "k": 50}).json()
                recommendable += any(it["item_id"] == body["item_id"] for it in rec["items"])
    ms = np.asarray(lat) * 1000
    return {
        "dataset": "ml-latest-small",
        "items_posted": n,
        "p50_ms": round(float(np.percentile(ms, 50)), 1),
        "p99_ms": round(float(np.percentile(ms, 99)), 1),
        "max_ms": round(float(ms.max()), 1),
        "p50_ms_by_part": {k: round(float(np.percentile(v, 50)), 1) for k, v in parts.items()},
        "p99_ms_by_part": {k: round(float(np.percentile(v, 99)), 1) for k, v in parts.items()},
        "in_top50_of_a_fan_of_its_nearest_movie": recommendable,
        "load_average_1min": round(os.getloadavg()[0], 1),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", nargs="*", default=list(DATA), choices=list(DATA))
    ap.add_argument(
        "--cache",
        default=str(Path(tempfile.gettempdir()) / "recstack-bench-text"),
        help="text embedding / ONNX cache (kept between runs; delete it for cold-cache figures)",
    )
    ap.add_argument("--build", action="store_true", help="also time a build with text on ml-latest-small")
    ap.add_argument("--no-throughput", action="store_true", help="keep the previous throughput figures")
    ap.add_argument("--post", type=int, default=0, help="POST /v1/items latency over this many items")
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument(
        "--gap-only",
        action="store_true",
        help="only the all-items gap analysis (`all_items_gap`), into the 'all_items_gap' key",
    )
    args = ap.parse_args()
    import torch

    torch.set_num_threads(2)
    result: dict[str, Any] = {
        "protocol": f"cold-items: {SHARE:.0%} of rated items held out with all their interactions, seed "
        f"{SEED}; each test user ranks the held-out items",
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "cold_items": {},
        "throughput": {},
    }
    previous = json.loads(args.out.read_text()) if args.out.is_file() else {}
    # data sets not run this time keep their previous figures
    for key in ("cold_items", "throughput"):
        result[key].update({k: v for k, v in previous.get(key, {}).items() if k not in args.data})
    cache = args.cache
    if args.gap_only:
        previous.setdefault("all_items_gap", {})
        for name in args.data:
            res = all_items_gap(name, load_movielens(DATA[name]), cache)
            previous["all_items_gap"][name] = res
            print(json.dumps(res, indent=1), flush=True)
            args.out.write_text(json.dumps(previous, indent=2) + "\n")
        return 0
    for name in args.data:
        ds = load_movielens(DATA[name])
        print(f"== {name}: {ds.n_users} users, {ds.n_items} items", flush=True)
        if args.no_throughput and name in previous.get("throughput", {}):
            result["throughput"][name] = previous["throughput"][name]
        else:
            result["throughput"][name] = throughput(ds, cache)
            print("throughput", result["throughput"][name], flush=True)
        result["cold_items"][name] = cold_items(name, ds, cache)
        print(json.dumps(result["cold_items"][name], indent=1), flush=True)
    if args.build:
        if "ml-latest-small" not in args.data:
            embed_items(load_movielens(DATA["ml-latest-small"]), cache_dir=cache, progress=False)
        result["build"] = build_time(cache)
        print("build", result["build"], flush=True)
    elif "build" in previous:
        result["build"] = previous["build"]
    if args.post:
        if "ml-latest-small" not in args.data:
            embed_items(load_movielens(DATA["ml-latest-small"]), cache_dir=cache, progress=False)
        result["post_items"] = post_items(cache, args.post)
        print("post", result["post_items"], flush=True)
    elif "post_items" in previous:
        result["post_items"] = previous["post_items"]
    if "all_items_gap" in previous:
        result["all_items_gap"] = previous["all_items_gap"]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
