"""Kafka: the local development broker and the transport port the pipelines use."""
