"""pytest plugin with the platform's shared fixtures (registered by the root conftest.py)."""
