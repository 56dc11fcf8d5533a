"""A replay simulator: a population of simulated users drives a real server through its HTTP API, so
experiments (and monitoring) can be tested without real users.

**Population** (`Population.from_split`): the held-out part of a temporal split (the last 10% of the
interactions by time, `recstack.data.splits`): each test user with their *future* items and ratings.
The server must serve a release built from the split's *train* part (`Population.train`), so that
the future is unknown to it. Users first seen in the test window are new visitors (cold start).

**Behaviour** (`replay`): each user visits ``visits`` times; a visit asks the API for ``k``
recommendations; the user examines position ``p`` with probability ``(1 / p) ** eta`` (a
position-based click model: Joachims et al. 2017 use eta = 1) and clicks an examined item when it is
among their future items, then rates it with their real rating (``rate``). Clicks and ratings go
through ``POST /v1/events``, so the next visit sees the updated history and the experiment's report
attributes them to the impression that showed the item. Every user's random draws come from their
own generator (seed, user id): a replay is deterministic whatever the thread interleaving.

`post_events` replays raw interactions (organic events, e.g. a genre-shifted slice) for the drift
monitor.
"""

from __future__ import annotations

import hashlib
import random
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import httpx

from recstack.errors import InvalidArgumentError

__all__ = ["HttpClient", "Population", "ReplayConfig", "ReplayStats", "post_events", "replay"]


#: ``httpx.Client`` with the server's base URL, or ``starlette.testclient.TestClient`` (a subclass:
#: the app in process)
HttpClient = httpx.Client


@dataclass(frozen=True)
class Population:
    """Simulated users: external user id -> {external item id (str): rating} of their future."""

    future: dict[str, dict[str, float]]
    warm: frozenset[str]
    #: the split's train part (build the served release from it)
    train: Any = None
    #: the split's test part (organic events for the drift replay)
    test: Any = None

    @property
    def users(self) -> list[str]:
        return list(self.future)

    @classmethod
    def from_split(
        cls, dataset: Any, *, seed: int = 42, test_fraction: float = 0.1, min_future: int = 1
    ) -> Population:
        """The test users of a temporal split of ``dataset`` (users ordered by their first test
        interaction, the order they would arrive in)."""
        from recstack.data.splits import split

        sp = split(dataset, "temporal", seed=seed, test_fraction=test_fraction)
        test = sp.test.interactions.sort("timestamp")
        uids = dataset.user_vocab.ids.to_list()
        iids = dataset.item_vocab.ids.to_list()
        future: dict[str, dict[str, float]] = {}
        for u, i, r in zip(
            test["user"].to_list(), test["item"].to_list(), test["rating"].to_list(), strict=True
        ):
            future.setdefault(str(uids[u]), {})[str(iids[i])] = float(r)
        future = {u: f for u, f in future.items() if len(f) >= min_future}
        cold = {str(uids[u]) for u in sp.cold_users.tolist()}
        warm = frozenset(u for u in future if u not in cold)
        return cls(future, warm, sp.train, sp.test)

    def subset(self, n: int, seed: int = 0) -> Population:
        """``n`` users drawn at random (seeded)."""
        users = sorted(self.future)
        random.Random(seed).shuffle(users)
        keep = set(users[:n])
        return Population(
            {u: f for u, f in self.future.items() if u in keep}, self.warm & keep, self.train, self.test
        )


@dataclass(frozen=True)
class ReplayConfig:
    visits: int = 3
    k: int = 10
    eta: float = 1.0
    rate: bool = True
    seed: int = 0
    concurrency: int = 4
    #: extra query parameters of every recommendation request
    params: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.visits < 1 or self.k < 1 or self.eta < 0 or self.concurrency < 1:
            raise InvalidArgumentError("visits, k and concurrency must be >= 1 and eta >= 0")


@dataclass
class ReplayStats:
    users: int = 0
    requests: int = 0
    clicks: int = 0
    ratings: int = 0
    errors: int = 0
    seconds: float = 0.0
    #: arm per user as the answers said (None outside an experiment)
    arms: dict[str, str | None] = field(default_factory=dict)
    #: users whose answers named more than one arm (must stay 0: assignment is sticky)
    arm_switches: int = 0
    releases: set[str] = field(default_factory=set)

    def as_dict(self) -> dict[str, Any]:
        per_arm: dict[str, int] = {}
        for a in self.arms.values():
            per_arm[str(a)] = per_arm.get(str(a), 0) + 1
        return {
            "users": self.users,
            "requests": self.requests,
            "clicks": self.clicks,
            "ratings": self.ratings,
            "errors": self.errors,
            "seconds": round(self.seconds, 2),
            "requests_per_s": round(self.requests / self.seconds, 1) if self.seconds else None,
            "users_per_arm": per_arm,
            "arm_switches": self.arm_switches,
            "releases": sorted(self.releases),
        }


def _rng(seed: int, user: str) -> random.Random:
    h = hashlib.sha256(f"{seed}\x1f{user}".encode()).digest()
    return random.Random(int.from_bytes(h[:8], "big"))


def _check(r: Any, what: str) -> Any:
    if r.status_code >= 400:
        raise RuntimeError(f"{what}: HTTP {r.status_code}: {r.text[:300]}")
    return r.json()


def replay(
    client: HttpClient,
    population: Population,
    config: ReplayConfig | None = None,
    *,
    on_user: Callable[[int], None] | None = None,
) -> ReplayStats:
    """Run every user of ``population`` against the API behind ``client`` (see the module
    docstring); returns what happened. Raises on the first HTTP error."""
    cfg = config or ReplayConfig()
    stats = ReplayStats()
    lock = threading.Lock()
    t0 = time.perf_counter()

    def one(user: str) -> None:
        rng = _rng(cfg.seed, user)
        future = dict(population.future[user])
        arms: set[str | None] = set()
        req = clicks = ratings = 0
        releases: set[str] = set()
        for _ in range(cfg.visits):
            body = _check(
                client.get(f"/v1/users/{user}/recommendations", params={"k": cfg.k, **cfg.params}),
                f"recommendations of user {user}",
            )
            req += 1
            exp = body.get("experiment")
            arms.add(exp["arm"] if exp else None)
            releases.add(body["release_id"])
            for pos, it in enumerate(body["items"], start=1):
                item = str(it["item_id"])
                if item not in future or rng.random() >= (1.0 / pos) ** cfg.eta:
                    continue
                _check(
                    client.post(
                        "/v1/events", json={"user_id": user, "item_id": it["item_id"], "type": "click"}
                    ),
                    "click event",
                )
                clicks += 1
                rating = future.pop(item)
                if cfg.rate:
                    _check(
                        client.post(
                            "/v1/events",
                            json={
                                "user_id": user,
                                "item_id": it["item_id"],
                                "type": "rating",
                                "rating": rating,
                            },
                        ),
                        "rating event",
                    )
                    ratings += 1
        with lock:
            stats.users += 1
            stats.requests += req
            stats.clicks += clicks
            stats.ratings += ratings
            stats.arms[user] = next(iter(arms)) if len(arms) == 1 else ",".join(sorted(map(str, arms)))
            stats.arm_switches += len(arms) > 1
            stats.releases |= releases
            n = stats.users
        if on_user is not None:
            on_user(n)

    users = population.users
    if cfg.concurrency == 1:
        for u in users:
            one(u)
    else:
        with ThreadPoolExecutor(cfg.concurrency) as pool:
            list(pool.map(one, users))
    stats.seconds = time.perf_counter() - t0
    return stats


def post_events(
    client: HttpClient,
    events: Iterable[tuple[str, str, float | None]],
    *,
    concurrency: int = 4,
) -> int:
    """POST ``(user id, item id, rating or None)`` as rating (or view) events; returns how many."""
    rows: Sequence[tuple[str, str, float | None]] = list(events)

    def one(row: tuple[str, str, float | None]) -> None:
        u, i, r = row
        body: dict[str, Any] = {"user_id": u, "item_id": i, "type": "view" if r is None else "rating"}
        if r is not None:
            body["rating"] = r
        _check(client.post("/v1/events", json=body), "event")

    if concurrency == 1:
        for row in rows:
            one(row)
    else:
        with ThreadPoolExecutor(concurrency) as pool:
            list(pool.map(one, rows))
    return len(rows)
