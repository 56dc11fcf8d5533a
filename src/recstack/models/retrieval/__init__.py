"""Retrieval models (`recstack.models.base.Retriever` subclasses).

Names are imported lazily (PEP 562) so that ``import recstack.models.retrieval`` stays light: ALS/BPR
load `implicit`, the two-tower model loads torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from recstack.models.retrieval.ease import EASE, EASEConfig, TimeEASE, TimeEASEConfig
    from recstack.models.retrieval.itemknn import ItemKNN, ItemKNNConfig, SequenceKNN, SequenceKNNConfig
    from recstack.models.retrieval.mf import ALS, BPR, ALSConfig, BPRConfig
    from recstack.models.retrieval.popular import (
        GenreTrending,
        GenreTrendingConfig,
        MostPopular,
        MostPopularConfig,
        RecentPopular,
        RecentPopularConfig,
        Trending,
        TrendingConfig,
        WindowPopular,
        WindowPopularConfig,
    )
    from recstack.models.retrieval.rp3beta import RP3beta, RP3betaConfig

__all__ = [
    "ALS",
    "BPR",
    "EASE",
    "ALSConfig",
    "BPRConfig",
    "EASEConfig",
    "GenreTrending",
    "GenreTrendingConfig",
    "ItemKNN",
    "ItemKNNConfig",
    "MostPopular",
    "MostPopularConfig",
    "RP3beta",
    "RP3betaConfig",
    "RecentPopular",
    "RecentPopularConfig",
    "SequenceKNN",
    "SequenceKNNConfig",
    "TimeEASE",
    "TimeEASEConfig",
    "Trending",
    "TrendingConfig",
    "WindowPopular",
    "WindowPopularConfig",
]

_LAZY: dict[str, str] = {
    "MostPopular": "popular",
    "MostPopularConfig": "popular",
    "RecentPopular": "popular",
    "RecentPopularConfig": "popular",
    "WindowPopular": "popular",
    "Trending": "popular",
    "TrendingConfig": "popular",
    "GenreTrending": "popular",
    "GenreTrendingConfig": "popular",
    "WindowPopularConfig": "popular",
    "ItemKNN": "itemknn",
    "ItemKNNConfig": "itemknn",
    "SequenceKNN": "itemknn",
    "SequenceKNNConfig": "itemknn",
    "RP3beta": "rp3beta",
    "RP3betaConfig": "rp3beta",
    "EASE": "ease",
    "EASEConfig": "ease",
    "TimeEASE": "ease",
    "TimeEASEConfig": "ease",
    "ALS": "mf",
    "ALSConfig": "mf",
    "BPR": "mf",
    "BPRConfig": "mf",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
