"""Mesh: topology model, Envoy config rendering, dev CA and SPIFFE workload certificates."""
