"""recstack.index."""
