"""Hydra apps that the Hydra tests run as subprocesses, and helpers to run them."""
