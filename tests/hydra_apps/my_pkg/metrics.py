"""Custom recorder terms for the CartPole test apps."""

from __future__ import annotations

import math

from arena_recording.core.terms import EpisodeBatch


def final_x(batch: EpisodeBatch, axis: int = 0) -> list[float]:
    """The cart's state component ``axis`` when the episode ended (NaN for a sub-env that was
    never reset: the recorder drops episodes that took no step, but may ask about them)."""
    envs = batch.env.env.envs
    states = [envs[i].unwrapped.state for i in batch.env_ids.tolist()]
    return [math.nan if state is None else float(state[axis]) for state in states]
