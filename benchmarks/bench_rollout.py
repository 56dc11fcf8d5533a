"""Automatic roll-out: a release promoted by ``retrain`` is served by every worker within the watch
interval (plus its load time), with 0 failed requests during the switch; a rollback is the same path.

Protocol. A small ML-100K release A is built (``retrain``'s first run on an empty log) and promoted;
``recstack serve --workers 2`` serves the production channel with its own run dir and event log. An
open loop sends ``--rate`` recommendation requests/s (known users, new keep-alive connection per
request) for the whole run. After a few seconds, ``--events`` view events are posted through the API
(the log), ``retrain`` builds release B from base + log and promotes it (gate: not worse on the last
2 days; ``--max-drop`` relaxes it, since this benchmark measures the roll-out, not the model).
Nobody calls ``/admin/reload``: the workers notice the channel moved. Measured: seconds from the
promotion to the moment every worker's status (run dir) names B, and the same for
``recstack releases rollback`` back to A; failed requests (no answer or 5xx) over the whole run and
inside each switch window. Writes benchmarks/results/rollout.json.

    nice -n 10 .venv/bin/python benchmarks/bench_rollout.py [--rate 50]
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
from _openloop import open_loop_until, summary

from recstack.release import BuildConfig, Registry
from recstack.release.retrain import RetrainConfig, retrain
from recstack.serving._target import RunDir
from recstack.testing import ServerProcess, free_port, small_release_toml

HERE = Path(__file__).resolve().parent


def statuses(run_dir: Path) -> dict[int, str | None]:
    return {pid: s.get("release") for pid, s in RunDir(run_dir).statuses().items()}


def wait_all(run_dir: Path, release: str, workers: int, timeout: float = 600.0) -> float:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        st = statuses(run_dir)
        if len(st) >= workers and all(r == release for r in st.values()):
            return time.monotonic() - t0
        time.sleep(0.02)
    raise TimeoutError(f"not every worker serves {release} after {timeout:.0f} s: {statuses(run_dir)}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rate", type=float, default=50.0)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--events", type=int, default=600)
    ap.add_argument("--max-drop", type=float, default=0.5)
    ap.add_argument("--out", type=Path, default=HERE / "results" / "rollout.json")
    a = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-rollout-"))
    root, run_dir = tmp / "releases", tmp / "run"
    toml = tmp / "build.toml"
    toml.write_text(small_release_toml())
    log_url = f"sqlite:///{tmp / 'events.db'}"
    cfg = RetrainConfig(
        build=BuildConfig.from_toml(toml), event_log=log_url, max_drop=a.max_drop, min_holdout_users=0
    )
    first = retrain(cfg, root)
    rel_a = first.candidate
    assert rel_a is not None
    users = list(range(1, 944))
    rng = random.Random(20)
    args = ["--workers", str(a.workers), "--run-dir", str(run_dir), "--event-log", log_url]
    result: dict[str, Any] = {"rate": a.rate, "workers": a.workers, "release_a": rel_a}
    with ServerProcess(root, args=args, port=free_port()) as srv:
        wait_all(run_dir, rel_a, a.workers)
        stop = threading.Event()
        box: dict[str, Any] = {}

        def mix(i: int) -> tuple[str, str, str, Any]:
            return "rec", "GET", f"/v1/users/{users[i % len(users)]}/recommendations?k=10", None

        t_start = time.monotonic()
        loader = threading.Thread(target=lambda: box.update(run=open_loop_until(srv.url, a.rate, stop, mix)))
        loader.start()
        time.sleep(5.0)
        now = int(time.time())
        with httpx.Client(base_url=srv.url, timeout=30) as c:
            for i in range(a.events):
                ev = {"user_id": rng.choice(users), "item_id": rng.randint(1, 200), "type": "view",
                      "timestamp": now - 3 * 86_400 + i * 300}  # fmt: skip
                c.post("/v1/events", json=ev).raise_for_status()
        res = retrain(cfg, root)
        t_promoted = time.monotonic() - t_start
        result["retrain"] = res.to_json()
        if res.action != "promoted" or res.candidate is None:
            raise SystemExit(f"retrain did not promote ({res.reason}); raise --max-drop")
        rel_b = res.candidate
        result["promote_to_all_workers_s"] = round(wait_all(run_dir, rel_b, a.workers), 3)
        t_b = time.monotonic() - t_start
        time.sleep(5.0)
        t_rollback = time.monotonic() - t_start
        Registry(root).rollback()
        result["rollback_to_all_workers_s"] = round(wait_all(run_dir, rel_a, a.workers), 3)
        t_a = time.monotonic() - t_start
        time.sleep(5.0)
        stop.set()
        loader.join()
    samples = box["run"].samples
    result["requests"] = summary(samples)
    result["during_promote_switch"] = summary([s for s in samples if t_promoted <= s.t <= t_b + 1.0])
    result["during_rollback_switch"] = summary([s for s in samples if t_rollback <= s.t <= t_a + 1.0])
    a.out.write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "retrain"}, indent=1))


if __name__ == "__main__":
    main()
