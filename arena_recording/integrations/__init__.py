"""Adapters from the core to the tools our users run: Hydra, Isaac Lab, gymnasium.

Each depends on the core and never on another integration.
"""
