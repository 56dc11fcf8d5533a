"""recstack.ops."""
