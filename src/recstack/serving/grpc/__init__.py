"""recstack.serving.grpc."""
