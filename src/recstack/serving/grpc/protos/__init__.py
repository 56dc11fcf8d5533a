"""Protobuf definitions of the gRPC services and their generated (committed) stubs."""
