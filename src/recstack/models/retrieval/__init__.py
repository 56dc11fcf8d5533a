"""Retrieval models (`recstack.models.base.Retriever` subclasses).

Names are imported lazily (PEP 562) so that ``import recstack.models.retrieval`` stays light: ALS/BPR
load `implicit`, the two-tower and SASRec models load torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from recstack.models.retrieval.content import (
        Content,
        ContentConfig,
        ContentUserKNN,
        ContentUserKNNConfig,
    )
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
    from recstack.models.retrieval.sasrec import SASRec, SASRecConfig

__all__ = [
    "ALS",
    "BPR",
    "EASE",
    "ALSConfig",
    "BPRConfig",
    "Content",
    "ContentConfig",
    "ContentUserKNN",
    "ContentUserKNNConfig",
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
    "SASRec",
    "SASRecConfig",
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
    "Content": "content",
    "ContentConfig": "content",
    "ContentUserKNN": "content",
    "ContentUserKNNConfig": "content",
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
    "SASRec": "sasrec",
    "SASRecConfig": "sasrec",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
