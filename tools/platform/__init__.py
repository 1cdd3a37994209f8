"""Helpers of the dev platform runner (`./dev up`, tools/platform_runner.py).

Each module has one job: `options` (command line + environment), `layout` (the state directory),
`ports` (the port offset), `service_env` (what a service process is told), `processes` (children
that never outlive the runner), `health` (waiting for readiness), `infrastructure` (PostgreSQL and
NATS, embedded or external), `envoy_configs` (certificates and Envoy bootstraps), `bootstrap`
(identity's platform admin and the per-state-dir secrets).
"""
