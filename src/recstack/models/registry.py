"""Model names -> classes, imported lazily so that light commands stay light.

CLI names: ``pop``, ``recent_pop``, ``window_pop``, ``trending``, ``genre_trending``, ``itemknn``,
``seqknn``, ``rp3beta``, ``ease``, ``time_ease``, ``als``, ``bpr``, ``two_tower``, ``sasrec``,
``content``, ``content_userknn`` and ``two_stage:<ranker>`` with ranker in ``ncf``, ``widedeep``,
``deepfm``, ``dnn``.
"""

from __future__ import annotations

import importlib
from typing import Any

from recstack.errors import InvalidArgumentError
from recstack.models.base import Retriever

__all__ = ["create", "display_name", "get_class", "names"]

_RETRIEVERS: dict[str, str] = {
    "pop": "recstack.models.retrieval.popular:MostPopular",
    "recent_pop": "recstack.models.retrieval.popular:RecentPopular",
    "window_pop": "recstack.models.retrieval.popular:WindowPopular",
    "trending": "recstack.models.retrieval.popular:Trending",
    "genre_trending": "recstack.models.retrieval.popular:GenreTrending",
    "itemknn": "recstack.models.retrieval.itemknn:ItemKNN",
    "seqknn": "recstack.models.retrieval.itemknn:SequenceKNN",
    "rp3beta": "recstack.models.retrieval.rp3beta:RP3beta",
    "ease": "recstack.models.retrieval.ease:EASE",
    "time_ease": "recstack.models.retrieval.ease:TimeEASE",
    "als": "recstack.models.retrieval.mf:ALS",
    "bpr": "recstack.models.retrieval.mf:BPR",
    "two_tower": "recstack.models.retrieval.two_tower:TwoTower",
    "content": "recstack.models.retrieval.content:Content",
    "content_userknn": "recstack.models.retrieval.content:ContentUserKNN",
    "sasrec": "recstack.models.retrieval.sasrec:SASRec",
    "two_stage": "recstack.models.ranking.two_stage:TwoStage",
}

_RANKERS = ("ncf", "widedeep", "deepfm", "dnn")

#: the one place for human-readable model names (web UI, reports): model, ranker and serving names
_DISPLAY: dict[str, str] = {
    "pop": "Popular",
    "recent_pop": "Popular lately",
    "window_pop": "Popular in your time window",
    "genre_trending": "Trending in your genres",
    "itemknn": "Item-kNN",
    "seqknn": "Sequence kNN",
    "rp3beta": "RP3beta",
    "ease": "EASE",
    "time_ease": "Time-aware EASE",
    "als": "ALS",
    "bpr": "BPR",
    "two_tower": "Two-tower",
    "sasrec": "SASRec (sequential)",
    "content": "Similar content",
    "content_userknn": "Similar viewers by content",
    "two_stage": "Two-stage",
    "ncf": "NCF",
    "widedeep": "Wide & Deep",
    "deepfm": "DeepFM",
    "dnn": "DNN",
    # serving names: the ranker-less model and the pipeline's non-model recall sources
    "recall": "Recall only (no ranker)",
    "popular": "Popular",
    "trending": "Trending",
    "fill": "Popular fill",
    "new_items": "New arrivals",
}


def names() -> list[str]:
    """Every model name the CLI accepts."""
    return [n for n in _RETRIEVERS if n != "two_stage"] + [f"two_stage:{r}" for r in _RANKERS]


def display_name(name: str, model: str | None = None) -> str:
    """A model's human-readable name: ``two_stage:ncf`` -> "Two-stage (NCF ranker)", ``ncf`` (a
    served ranker) -> "Two-stage (NCF ranker)", ``time_ease`` -> "Time-aware EASE", ``recall`` ->
    "Recall only (no ranker)". ``model``: the registry name behind an alias (a release's
    ``als64`` is ``als``: "ALS (als64)"). Unknown names are returned as they are."""
    if model is not None and model != name:
        base = display_name(model)
        return base if base == name else f"{base} ({name})"
    if name in _RANKERS or name.startswith("two_stage:"):
        ranker = name.split(":", 1)[1] if ":" in name else name
        return f"Two-stage ({_DISPLAY.get(ranker, ranker)} ranker)"
    return _DISPLAY.get(name, name)


def get_class(name: str) -> type[Retriever]:
    base = name.split(":", 1)[0]
    if base not in _RETRIEVERS:
        raise InvalidArgumentError(f"unknown model {name!r}; choose from {', '.join(names())}")
    module, cls = _RETRIEVERS[base].split(":")
    try:
        klass: type[Retriever] = getattr(importlib.import_module(module), cls)
    except (ImportError, AttributeError) as exc:  # a model not implemented yet
        raise InvalidArgumentError(f"model {name!r} is not available: {exc}") from exc
    return klass


def create(name: str, **params: Any) -> Retriever:
    """Instantiate a model by CLI name; ``two_stage:deepfm`` passes ``ranker="deepfm"``."""
    klass = get_class(name)
    if ":" in name:
        ranker = name.split(":", 1)[1]
        if ranker not in _RANKERS:
            raise InvalidArgumentError(f"unknown ranker {ranker!r}; choose from {', '.join(_RANKERS)}")
        params = {"ranker": ranker, **params}
    return klass(**params)
