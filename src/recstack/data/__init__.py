"""Data layer: `Dataset`, `Vocabulary`, loaders, the synthetic generator and splits."""

from recstack.data.dataset import INTERACTION_SCHEMA, Dataset, Vocabulary

__all__ = ["INTERACTION_SCHEMA", "Dataset", "Vocabulary"]
