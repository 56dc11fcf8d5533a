"""Models: the `Retriever` / `Ranker` contracts, retrieval and ranking models, the registry."""

from recstack.models.base import Ranker, Retriever, top_k
from recstack.models.registry import create, get_class, names

__all__ = ["Ranker", "Retriever", "create", "get_class", "names", "top_k"]
