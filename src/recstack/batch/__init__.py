"""recstack.batch."""
