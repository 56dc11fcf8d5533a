"""recstack.features."""
