"""User and item feature tables (polars-built, Parquet-saved), shared by training and serving."""

from recstack.features.tables import (
    AGE_EDGES,
    MAX_TITLE_TOKENS,
    USER_CATEGORICAL,
    FeatureTables,
    build_features,
    user_genre_affinity,
)

__all__ = [
    "AGE_EDGES",
    "MAX_TITLE_TOKENS",
    "USER_CATEGORICAL",
    "FeatureTables",
    "build_features",
    "user_genre_affinity",
]
