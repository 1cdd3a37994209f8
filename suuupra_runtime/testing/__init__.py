"""Test support: real PostgreSQL/NATS fixtures and the EchoService used by platform tests."""
