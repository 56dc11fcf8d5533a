"""recstack.release."""
