"""The recording core: samplers, variations, episode identity, recorder, terms, sinks, session.

It depends on torch and numpy only; it imports no Hydra, Isaac Lab or gymnasium. Adapters live
in ``arena_recording.integrations`` and depend on it, never the other way round.
"""
