"""Data layer: `Dataset`, `Vocabulary`, loaders, the synthetic generator and splits."""

from recstack.data._parse import dedupe
from recstack.data.dataset import INTERACTION_SCHEMA, Dataset, Vocabulary
from recstack.data.fetch import fetch_movielens
from recstack.data.loading import DATASET_FORMATS, load_dataset
from recstack.data.movielens import MOVIELENS_FORMATS, detect_movielens_format, load_movielens
from recstack.data.splits import PROTOCOLS, Split, split
from recstack.data.synthetic import synthesize
from recstack.data.tabular import load_tabular

__all__ = [
    "DATASET_FORMATS",
    "INTERACTION_SCHEMA",
    "MOVIELENS_FORMATS",
    "PROTOCOLS",
    "Dataset",
    "Split",
    "Vocabulary",
    "dedupe",
    "detect_movielens_format",
    "fetch_movielens",
    "load_dataset",
    "load_movielens",
    "load_tabular",
    "split",
    "synthesize",
]
