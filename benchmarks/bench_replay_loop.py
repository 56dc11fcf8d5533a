"""The feedback loop, simulated: the temporal test period's events replayed through the API day by
day, ``retrain`` every simulated week, NDCG@10 on the following week for the retrained releases vs
the frozen first release.

Protocol (ML-100K: ``--data``, a path or a name looked up in the data directories of
`recstack.data.paths`):

1. The interactions are cut at the ``1 - --test-share`` quantile of their timestamps (``temporal``:
   0.1, the last 22 days of ML-100K; ``--test-share 0.3`` replays 72 days, ten weeks). The part
   before the cut is the base data set: only its users and items exist for the first release.
2. ``retrain`` builds the first release (base data, empty log) and promotes it. Two servers start:
   **loop** follows the production channel and logs into the retrain log; **frozen** serves the
   first release for ever (its own log, so its histories get the same events).
3. Each simulated week: first every user with events in that week asks both servers for 10
   recommendations (before any of the week's events is sent); the truth is the user's items of that
   week minus what the user had before (so a perfect server would score 1). Users new in that week
   ask too (they get the cold-start answer from both). Then the week's events are posted to both
   servers day by day (their original timestamps), then ``retrain`` runs (holdout: the last
   ``--holdout-days`` of new events; promote only if not worse) and, on a promotion, the loop server
   rolls out the new release (``--rollout watch``: it follows the channel by itself; ``admin``:
   ``POST /admin/reload``) before the next week starts.
4. Reported: NDCG@10 and recall@10 per week for both servers (all users, and the users known to the
   first release), the mean over the weeks after the first retrain, each retrain's decision with
   both holdout scores, and the time each retrain took.

    nice -n 10 .venv/bin/python benchmarks/bench_replay_loop.py [--test-share 0.1]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import polars as pl

from recstack.data.dataset import Dataset
from recstack.data.loading import load_dataset
from recstack.release import BuildConfig, Registry
from recstack.release.retrain import RetrainConfig, retrain
from recstack.testing import ServerProcess, free_port

HERE = Path(__file__).resolve().parent
DAY = 86_400
KEY = "bench-replay"
TRENDING_PIPELINE = """
trending_days = 14.0
[[sources]]
name = "itemknn"
kind = "history"
quota = 200
[[sources]]
name = "ease"
kind = "history"
quota = 200
[[sources]]
name = "popular"
kind = "popular"
quota = 100
[[sources]]
name = "trending"
kind = "trending"
quota = 100
"""


def external_frame(ds: Dataset) -> pl.DataFrame:
    u = ds.user_vocab.ids.gather(ds.interactions["user"])
    i = ds.item_vocab.ids.gather(ds.interactions["item"])
    return pl.DataFrame(
        {
            "user_id": u,
            "item_id": i,
            "rating": ds.interactions["rating"],
            "timestamp": ds.interactions["timestamp"],
        }
    )


def base_dataset(ds: Dataset, inter: pl.DataFrame) -> Dataset:
    """A dataset of ``inter`` with the attributes of its users and items only."""
    users = ds.users.rename({"external_id": "user_id"}).drop("user")
    items = ds.items.rename({"external_id": "item_id"}).drop("item")
    users = users.join(inter.select("user_id").unique(), on="user_id", how="semi")
    items = items.join(inter.select("item_id").unique(), on="item_id", how="semi")
    return Dataset.from_frames(f"{ds.name}-before-cut", inter, users, items, meta=ds.meta)


def ndcg_recall(recs: list[Any], truth: set[Any], k: int = 10) -> tuple[float, float]:
    disc = 1.0 / np.log2(np.arange(2, k + 2))
    hits = np.asarray([r in truth for r in recs[:k]] + [False] * (k - len(recs[:k])), dtype=np.float64)
    ideal = disc[: min(len(truth), k)].sum()
    return float((hits * disc).sum() / ideal), float(hits.sum() / len(truth))


async def post_all(port: int, events: list[dict[str, Any]], conns: int = 8) -> int:
    """POST every event (in order, ``conns`` at a time); returns how many were not 201."""
    bad = 0
    q: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    for e in events:
        q.put_nowait(e)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as c:

        async def worker() -> None:
            nonlocal bad
            while not q.empty():
                e = q.get_nowait()
                try:
                    r = await c.post("/v1/events", json=e)
                except httpx.TransportError:  # counted, not retried (it may have been logged)
                    bad += 1
                    continue
                bad += r.status_code != 201

        await asyncio.gather(*(worker() for _ in range(conns)))
    return bad


async def recommend_all(port: int, users: list[Any], k: int = 10) -> dict[Any, list[Any]]:
    out: dict[Any, list[Any]] = {}
    sem = asyncio.Semaphore(8)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=60) as c:

        async def one(u: Any) -> None:
            async with sem:
                for attempt in range(3):  # a keep-alive connection the server closed meanwhile
                    try:
                        r = await c.get(f"/v1/users/{u}/recommendations", params={"k": k})
                        break
                    except httpx.TransportError:
                        if attempt == 2:
                            raise
                r.raise_for_status()
                out[u] = [it["item_id"] for it in r.json()["items"]]

        await asyncio.gather(*(one(u) for u in users))
    return out


def wait_release(port: int, rid: str, timeout: float = 300.0) -> float:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/v1/release", timeout=5).json().get("release_id") == rid:
                return time.monotonic() - t0
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"the loop server did not serve {rid} within {timeout:.0f} s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="ml-100k", help="a path, or a name found in the data directories")
    ap.add_argument("--test-share", type=float, default=0.1)
    ap.add_argument("--every-days", type=float, default=7.0)
    ap.add_argument("--holdout-days", type=float, default=7.0)
    ap.add_argument(
        "--models", default="pop,itemknn,ease", help="the release's models; the last one is gated"
    )
    ap.add_argument("--rollout", choices=["watch", "admin"], default="admin")
    ap.add_argument(
        "--pipeline",
        choices=["default", "trending"],
        default="default",
        help="serving pipeline of both servers: the default sources (item-kNN, EASE, popular), or "
        "those plus a 'trending' source (popularity over the release's last 14 days)",
    )
    ap.add_argument("--out", type=Path, default=None)
    a = ap.parse_args()
    suffix = "" if a.pipeline == "default" else f"_{a.pipeline}"
    out_path = a.out or HERE / "results" / f"replay_loop_{round(a.test_share * 100)}{suffix}.json"
    ds = load_dataset(a.data)
    src = str(ds.meta.get("source", a.data))
    ext = external_frame(ds)
    ts = np.sort(ext["timestamp"].to_numpy())
    cut = int(ts[int(len(ts) * (1 - a.test_share))])
    before = ext.filter(pl.col("timestamp") < cut)
    after = ext.filter(pl.col("timestamp") >= cut).sort("timestamp")
    end = int(after["timestamp"].max())  # type: ignore[arg-type]
    print(f"{src}: {before.height} interactions before the cut, {after.height} replayed over "
          f"{(end - cut) / DAY:.1f} days")  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="bench-replay-", dir=os.environ.get("BENCH_TMP")) as tmp_s:
        tmp = Path(tmp_s)
        base = base_dataset(ds, before)
        base_dir = base.save(tmp / "base")
        root = tmp / "releases"
        log_url = f"sqlite:///{tmp / 'events.db'}"
        models = a.models.split(",")
        build = BuildConfig.from_config(
            {
                "dataset": {"source": str(base_dir)},
                "evaluation": {"enabled": False, "report": False},
                "models": [{"name": m} for m in models],
                "index": {"backend": "none"},
            }
        )
        cfg = RetrainConfig(build=build, event_log=log_url, holdout_days=a.holdout_days, min_holdout_users=10)
        first = retrain(cfg, root)
        frozen = first.candidate
        assert frozen is not None
        print(f"first release {frozen} ({first.seconds:.0f}s)")
        known_users = set(base.user_vocab.ids.to_list())
        common = ["--workers", "1", "--api-key", KEY]
        if a.pipeline == "trending":
            toml = tmp / "pipeline.toml"
            toml.write_text(TRENDING_PIPELINE)
            common += ["--pipeline", str(toml)]
        loop_args = [*common, "--event-log", log_url]
        frozen_args = [*common, "--event-log", f"sqlite:///{tmp / 'frozen.db'}"]
        weeks: list[dict[str, Any]] = []
        retrains: list[dict[str, Any]] = []
        seen: dict[Any, set[Any]] = {}
        for u, i in before.select("user_id", "item_id").iter_rows():
            seen.setdefault(u, set()).add(i)
        with (
            ServerProcess(root, args=loop_args, port=free_port()) as loop_srv,
            ServerProcess(root, release=frozen, args=frozen_args, port=free_port()) as frozen_srv,
        ):
            t = cut
            w = 0
            while t <= end:
                t_next = int(t + a.every_days * DAY)
                week = after.filter((pl.col("timestamp") >= t) & (pl.col("timestamp") < t_next))
                truth: dict[Any, set[Any]] = {}
                for u, i in week.select("user_id", "item_id").iter_rows():
                    if i not in seen.get(u, set()):
                        truth.setdefault(u, set()).add(i)
                users = sorted(truth)
                serving = httpx.get(f"{loop_srv.url}/v1/release").json()["release_id"]
                recs = {
                    "loop": asyncio.run(recommend_all(loop_srv.port, users)),
                    "frozen": asyncio.run(recommend_all(frozen_srv.port, users)),
                }
                row: dict[str, Any] = {"week": w, "start": t, "users": len(users), "events": week.height,
                                       "loop_release": serving}  # fmt: skip
                for side, got in recs.items():
                    scores = [ndcg_recall(got[u], truth[u]) for u in users]
                    warm = [s for u, s in zip(users, scores, strict=True) if u in known_users]
                    row[f"{side}_ndcg@10"] = float(np.mean([s[0] for s in scores])) if scores else None
                    row[f"{side}_recall@10"] = float(np.mean([s[1] for s in scores])) if scores else None
                    row[f"{side}_ndcg@10_known_users"] = (
                        float(np.mean([s[0] for s in warm])) if warm else None
                    )
                row["known_users"] = sum(1 for u in users if u in known_users)
                # replay the week day by day
                bad = 0
                day = t
                while day < t_next:
                    todays = week.filter((pl.col("timestamp") >= day) & (pl.col("timestamp") < day + DAY))
                    evs = [
                        {
                            "user_id": u,
                            "item_id": i,
                            "type": "rating",
                            "rating": float(r),
                            "timestamp": int(s),
                        }
                        for u, i, r, s in todays.iter_rows()
                    ]
                    for srv in (loop_srv, frozen_srv):
                        bad += asyncio.run(post_all(srv.port, evs))
                    day += DAY
                for u, i in week.select("user_id", "item_id").iter_rows():
                    seen.setdefault(u, set()).add(i)
                row["failed_posts"] = bad
                weeks.append(row)
                print(f"week {w}: {len(users)} users ({row['known_users']} known) | loop {serving[:22]} "
                      f"ndcg {row['loop_ndcg@10']:.4f} | frozen ndcg {row['frozen_ndcg@10']:.4f} | "
                      f"{week.height} events posted, {bad} failed")  # fmt: skip
                t, w = t_next, w + 1
                if t > end:
                    break
                res = retrain(cfg, root)
                info = res.to_json()
                if res.action == "promoted" and res.candidate:
                    t0 = time.monotonic()
                    if a.rollout == "admin":
                        httpx.post(
                            f"{loop_srv.url}/admin/reload",
                            params={"wait": True},
                            json={"channel": "production"},
                            headers={"X-API-Key": KEY},
                            timeout=600,
                        )
                    info["rollout_s"] = round(wait_release(loop_srv.port, res.candidate), 2)
                    info["rollout_total_s"] = round(time.monotonic() - t0, 2)
                retrains.append(info)
                sc = res.scores
                vs = ""
                if sc:
                    vs = f" [cand {sc['candidate_ndcg@10']:.4f} vs prod {sc['production_ndcg@10']:.4f}]"
                print(f"  retrain: {res.action} ({res.seconds:.0f}s): {res.reason}{vs}")
        after_first = [r for r in weeks if r["week"] >= 1 and r["users"]]
        summary = {
            "weeks_compared": len(after_first),
            "loop_ndcg@10_mean": float(np.mean([r["loop_ndcg@10"] for r in after_first]))
            if after_first
            else None,
            "frozen_ndcg@10_mean": float(np.mean([r["frozen_ndcg@10"] for r in after_first]))
            if after_first
            else None,
            "promoted": sum(1 for r in retrains if r["action"] == "promoted"),
            "refused": sum(1 for r in retrains if r["action"] == "refused"),
            "skipped": sum(1 for r in retrains if r["action"] == "skipped"),
            "channel_history": Registry(root).channel("production").history,
        }
    result = {
        "protocol": {
            "data": src,
            "test_share": a.test_share,
            "cut": cut,
            "every_days": a.every_days,
            "holdout_days": a.holdout_days,
            "models": models,
            "rollout": a.rollout,
            "pipeline": a.pipeline,
            "replayed": after.height,
        },
        "weeks": weeks,
        "retrains": retrains,
        "summary": summary,
    }
    out_path.write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(json.dumps({k: v for k, v in summary.items() if k != "channel_history"}, indent=1))
    print(f"-> {out_path}")


if __name__ == "__main__":
    main()
