"""The shared runtime every Suuupra service imports (DESIGN.md §4). It never imports a service."""
