"""Suuupra services: one package per bounded context (DESIGN.md §1)."""
