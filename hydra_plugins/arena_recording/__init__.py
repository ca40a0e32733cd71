"""Hydra plugin package of arena-recording (``hydra_plugins`` itself is a namespace package)."""
