"""Embedded infrastructure processes: PostgreSQL, NATS JetStream, Envoy, free ports."""
