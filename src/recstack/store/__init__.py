"""recstack.store."""
