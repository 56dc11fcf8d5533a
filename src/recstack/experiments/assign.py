"""Sticky assignment of users to arms by a salted hash of the user id.

``u = int(sha256(salt + "\\x1f" + user_id)[:8]) / 2**64`` is a uniform number in [0, 1) that depends
only on the experiment's salt and the user id: the same user always lands in the same arm (on every
worker, after restarts, for ids the release has never seen), and a new salt re-draws everybody
independently of the previous experiment. The unit interval is cut in the order holdout, then the
arms as declared, each piece as long as its share (`ExperimentConfig.shares`).

SHA-256 rather than Python's ``hash`` (salted per process) or a fast non-cryptographic hash: it is
the same in every process and language, and at ~1 µs per id it costs nothing next to a request.
"""

from __future__ import annotations

import bisect
import hashlib
from collections.abc import Iterable

from recstack.experiments.config import HOLDOUT_ARM, ExperimentConfig

__all__ = ["Assigner", "bucket"]

_SCALE = float(2**64)


def bucket(salt: str, user_id: str | int) -> float:
    """The user's uniform draw in [0, 1) for ``salt``."""
    digest = hashlib.sha256(f"{salt}\x1f{user_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / _SCALE


class Assigner:
    """``assigner(user_id) -> arm name`` (`HOLDOUT_ARM` for users kept out) for one experiment."""

    def __init__(self, experiment: ExperimentConfig) -> None:
        self.experiment = experiment
        self.salt = experiment.salt_value
        shares = experiment.shares()
        order = ([HOLDOUT_ARM] if HOLDOUT_ARM in shares else []) + experiment.arm_names
        self.names = order
        edges: list[float] = []
        acc = 0.0
        for name in order:
            acc += shares[name]
            edges.append(acc)
        edges[-1] = 1.0  # rounding: the last piece ends at 1 exactly
        self.edges = edges

    def __call__(self, user_id: str | int) -> str:
        u = bucket(self.salt, user_id)
        return self.names[min(bisect.bisect_right(self.edges, u), len(self.names) - 1)]

    def counts(self, user_ids: Iterable[str | int]) -> dict[str, int]:
        """Users per arm (holdout included when there is one)."""
        out = dict.fromkeys(self.names, 0)
        for u in user_ids:
            out[self(u)] += 1
        return out
