"""Custom recorder terms for the CartPole test apps."""

from __future__ import annotations

from arena_recording.core.terms import EpisodeBatch


def final_x(batch: EpisodeBatch, axis: int = 0) -> list[float]:
    """The cart's state component ``axis`` when the episode ended."""
    envs = batch.env.env.envs
    return [float(envs[i].unwrapped.state[axis]) for i in batch.env_ids.tolist()]
