"""recstack.serving.api."""
