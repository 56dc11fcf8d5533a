"""Prometheus metrics of what is shown, per release and experiment arm, and of input drift.

Per answer (`ShownMonitor.observe`; labels ``release`` and ``arm``, ``none`` outside an experiment;
the distributions from a 1-in-8 sample of the answers, the counters from all):

- ``recstack_recommendations_total``, ``recstack_recommendation_cold_starts_total``,
  ``recstack_recommendation_fallbacks_total``: answers, and those for users unknown to the release
  and those where the pipeline fell back (shares: divide by the first);
- ``recstack_recommendation_score``: the scores returned (a histogram; scales differ by model);
- ``recstack_shown_item_popularity``: the popularity percentile of each shown item (1 = the most
  popular item of the catalogue, 0 = the least);
- ``recstack_shown_genre_total{genre}``: shown items per genre (the genre mix);
- ``recstack_catalog_coverage``: distinct items among the last ``coverage_window`` sampled answers
  of the worker / catalogue size (a gauge; the max over workers).

Drift (`recstack.ops.drift`, refreshed by the server from the event log every few seconds):
``recstack_drift_psi{feature}``, ``recstack_drift_threshold``, ``recstack_drift_window_events``.

`recstack/ops/alerts.yml` (Prometheus alert rules) and `recstack/ops/grafana-dashboard.json` use
these names; ``tests/unit/serving/test_alert_rules.py`` checks them against what the app exports.
"""

from __future__ import annotations

import math
import threading
from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
from prometheus_client import Counter, Gauge, Histogram

from recstack.ops.metrics import child

__all__ = [
    "CATALOG_COVERAGE",
    "DRIFT_PSI",
    "DRIFT_THRESHOLD",
    "DRIFT_WINDOW",
    "IMPRESSIONS_DROPPED",
    "RECOMMENDATIONS",
    "REC_COLD_STARTS",
    "REC_FALLBACKS",
    "SCORES",
    "SHOWN_GENRES",
    "SHOWN_POPULARITY",
    "ShownMonitor",
    "set_drift",
]

_LABELS = ["release", "arm"]
SCORE_BUCKETS = (-10.0, -5.0, -2.0, -1.0, -0.5, 0.0, 0.1, 0.25, 0.5, 0.75, 1.0, 2.0, 5.0, 10.0, 100.0)
PERCENTILE_BUCKETS = tuple(round(x, 1) for x in np.linspace(0.1, 1.0, 10))

RECOMMENDATIONS = Counter(
    "recstack_recommendations_total", "Recommendation answers by release and experiment arm.", _LABELS
)
REC_COLD_STARTS = Counter(
    "recstack_recommendation_cold_starts_total",
    "Answers for users unknown to the release, by release and arm.",
    _LABELS,
)
REC_FALLBACKS = Counter(
    "recstack_recommendation_fallbacks_total",
    "Answers where the pipeline fell back (popular fill, no history...), by release and arm.",
    _LABELS,
)
SCORES = Histogram(
    "recstack_recommendation_score",
    "Scores of the returned items, by release and arm.",
    _LABELS,
    buckets=SCORE_BUCKETS,
)
SHOWN_POPULARITY = Histogram(
    "recstack_shown_item_popularity",
    "Popularity percentile of each shown item (1 = the most popular), by release and arm.",
    _LABELS,
    buckets=PERCENTILE_BUCKETS,
)
SHOWN_GENRES = Counter(
    "recstack_shown_genre_total", "Shown items per genre, by release and arm.", [*_LABELS, "genre"]
)
CATALOG_COVERAGE = Gauge(
    "recstack_catalog_coverage",
    "Distinct items among the worker's last answers / catalogue size, by release and arm.",
    _LABELS,
    multiprocess_mode="max",
)
IMPRESSIONS_DROPPED = Counter(
    "recstack_impressions_dropped_total", "Impressions the event log refused (not attributed)."
)
DRIFT_PSI = Gauge(
    "recstack_drift_psi",
    "Population stability index of live events against the training data, by feature.",
    ["feature"],
    multiprocess_mode="max",
)
DRIFT_THRESHOLD = Gauge(
    "recstack_drift_threshold", "PSI above which a feature counts as drifted.", multiprocess_mode="max"
)
DRIFT_WINDOW = Gauge(
    "recstack_drift_window_events", "Live observations in the drift window.", multiprocess_mode="max"
)


class ShownMonitor:
    """Per-answer metrics of one catalogue (one per serving state).

    The counters (answers, cold starts, fallbacks) count every answer; the distributions (scores,
    popularity and genres of shown items, coverage) are taken from every ``sample_every``-th answer
    of the worker: observing ten items into three metrics costs more than a recall-only answer, and
    a 1-in-8 sample of thousands of answers a minute estimates the same distributions."""

    def __init__(
        self,
        popularity: npt.NDArray[Any],
        genre_codes: Sequence[Sequence[int]],
        genre_names: Sequence[str],
        coverage_window: int = 1000,
        sample_every: int = 8,
    ) -> None:
        n = len(popularity)
        order = np.lexsort((np.arange(n), -np.asarray(popularity, dtype=np.float64)))
        pct = np.empty(n, dtype=np.float64)
        pct[order] = 1.0 - np.arange(n) / max(n - 1, 1)
        self.percentile = pct
        self.genre_codes = [tuple(g) for g in genre_codes]
        self.genre_names = list(genre_names)
        self.n_items = n
        self.coverage_window = coverage_window
        self.sample_every = max(1, int(sample_every))
        self._seen = 0
        self._cov: dict[
            tuple[str, str], tuple[deque[npt.NDArray[np.int64]], npt.NDArray[np.int32], list[int]]
        ] = {}
        self._children: dict[tuple[str, str], tuple[Any, ...]] = {}
        self._lock = threading.Lock()

    @classmethod
    def of_catalog(cls, catalog: Any, sample_every: int = 8) -> ShownMonitor:
        return cls(catalog.popularity, catalog.genre_codes, catalog.genre_names, sample_every=sample_every)

    def _metrics(self, labels: tuple[str, str]) -> tuple[Any, ...]:
        c = self._children.get(labels)
        if c is None:
            c = self._children[labels] = tuple(
                m.labels(*labels)
                for m in (
                    RECOMMENDATIONS,
                    REC_COLD_STARTS,
                    REC_FALLBACKS,
                    SCORES,
                    SHOWN_POPULARITY,
                    CATALOG_COVERAGE,
                )
            )
        return c

    def observe(
        self,
        release: str,
        arm: str,
        items: npt.NDArray[np.int64],
        scores: npt.NDArray[np.float32],
        cold_start: bool,
        fallbacks: Sequence[str],
    ) -> None:
        labels = (release, arm)
        answers, colds, fbs, hist, pop, cov = self._metrics(labels)
        answers.inc()
        if cold_start:
            colds.inc()
        if fallbacks:
            fbs.inc()
        self._seen += 1
        if self._seen % self.sample_every:
            return
        for s in scores.tolist():
            if math.isfinite(s):
                hist.observe(s)
        # items added online (`POST /v1/items`) are not in the release's tables: left out here
        items = items[items < len(self.percentile)]
        for v in self.percentile[items].tolist():
            pop.observe(v)
        counts: dict[int, int] = {}
        for i in items.tolist():
            for g in self.genre_codes[i]:
                counts[g] = counts.get(g, 0) + 1
        for g, c in counts.items():
            child(SHOWN_GENRES, release, arm, self.genre_names[g]).inc(c)
        cov.set(self._coverage(labels, items))

    def _coverage(self, key: tuple[str, str], items: npt.NDArray[np.int64]) -> float:
        """Distinct items over the last ``coverage_window`` answers of ``key`` / catalogue size."""
        with self._lock:
            entry = self._cov.get(key)
            if entry is None:
                entry = self._cov[key] = (deque(), np.zeros(self.n_items, dtype=np.int32), [0])
            window, counts, distinct = entry
            items = np.unique(items)
            distinct[0] += int(np.count_nonzero(counts[items] == 0))
            counts[items] += 1
            window.append(items)
            if len(window) > self.coverage_window:
                old = window.popleft()
                counts[old] -= 1
                distinct[0] -= int(np.count_nonzero(counts[old] == 0))
            return distinct[0] / max(self.n_items, 1)


def set_drift(psi: Mapping[str, float], threshold: float, window_events: int) -> None:
    """Export the drift monitor's state (features still without a value are left out)."""
    for feature, value in psi.items():
        if math.isfinite(value):
            DRIFT_PSI.labels(feature=feature).set(value)
    DRIFT_THRESHOLD.set(threshold)
    DRIFT_WINDOW.set(window_events)
