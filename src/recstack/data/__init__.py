"""Data layer: `Dataset`, `Vocabulary`, loaders, the synthetic generator and splits."""

from recstack.data.dataset import INTERACTION_SCHEMA, Dataset, Vocabulary
from recstack.data.splits import PROTOCOLS, Split, split

__all__ = ["INTERACTION_SCHEMA", "PROTOCOLS", "Dataset", "Split", "Vocabulary", "split"]
