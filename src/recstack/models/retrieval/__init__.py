"""recstack.models.retrieval."""
