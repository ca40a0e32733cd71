"""The YAML config groups of arena-recording (installed as ``arena_recording.conf``).

The search-path plugin adds ``pkg://arena_recording.conf`` to every Hydra app, so
``+recorder=default`` (core + variations), ``+recorder=core`` and ``+recorder=variations`` work
without code changes.
"""
