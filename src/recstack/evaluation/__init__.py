"""recstack.evaluation."""
