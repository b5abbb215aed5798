"""The data path: ingress (platform -> Kafka) and egress (Kafka -> platform), one module per step."""
