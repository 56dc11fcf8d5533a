"""recstack.models.ranking."""
