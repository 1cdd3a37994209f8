"""Developer tooling: code generation, checks, the platform runner. Never imported by services."""
