"""Demo evaluation on gymnasium CartPole: a fixed controller under varied physics.

Gravity and the push force change how hard balancing is (they decide success); ``tau`` is
held constant and ``label`` is a factor with no effect at all, a control for the analysis.
Each episode that reaches the time limit (500 steps) counts as a success.

Run it with recording on (records land in Hydra's output dir)::

    python -m arena_recording.demo.cartpole +recorder=default
    python -m arena_recording.demo.cartpole +recorder=default \\
        variations.gravity.sampler.high=30 eval.num_episodes=400
"""

from __future__ import annotations

import logging
from typing import Any

import gymnasium as gym
import hydra
import numpy as np
from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf

from arena_recording.core.variations import build_variations
from arena_recording.integrations.gym_wrapper import VariationsWrapper
from arena_recording.progress import Tally

log = logging.getLogger(__name__)

CONFIG: dict[str, Any] = {
    "seed": 0,
    "num_envs": 16,
    "eval": {"num_episodes": 128},
    "policy": {"angle": 1.0, "angular_velocity": 0.25, "position": 0.02, "velocity": 0.1},
    "variations": {
        "gravity": {"sampler": {"type": "uniform", "low": 5.0, "high": 40.0}},
        "force_mag": {"sampler": {"type": "uniform", "low": 0.1, "high": 3.0}},
        "tau": {"sampler": {"type": "constant", "value": 0.02}},
        "label": {"sampler": {"type": "choice", "choices": ["a", "b", "c"]}},
    },
}
ConfigStore.instance().store(name="cartpole_eval", node=CONFIG)


def policy(obs: np.ndarray, gains: DictConfig) -> np.ndarray:
    """Push towards the side the pole falls to (a linear state-feedback controller)."""
    x, x_dot, theta, theta_dot = obs.T
    score = (
        gains.angle * theta
        + gains.angular_velocity * theta_dot
        + gains.position * x
        + gains.velocity * x_dot
    )
    return (score > 0).astype(np.int64)


def evaluate(cfg: DictConfig) -> Tally:
    """Run ``eval.num_episodes`` episodes (a fixed quota per env)."""
    variations = build_variations(
        OmegaConf.to_container(cfg.variations, resolve=True), "variations"
    )
    vector_env = gym.make_vec("CartPole-v1", num_envs=cfg.num_envs, vectorization_mode="sync")
    env = VariationsWrapper(
        vector_env,
        variations,
        seed=cfg.seed,
        success="truncated",
        num_episodes=cfg.eval.num_episodes,
    )
    obs, _ = env.reset(seed=cfg.seed)
    tally = Tally(int(env.identity.quota.sum()))  # a replay sets its own budget
    while not env.identity.quota_met():
        counted = env.identity.in_quota().numpy()
        obs, _, terminated, truncated, _ = env.step(policy(obs, cfg.policy))
        ended = (terminated | truncated) & counted
        if ended.any():
            tally.add(int(ended.sum()), int((truncated & ended).sum()))
    env.close()
    return tally


@hydra.main(version_base=None, config_name="cartpole_eval")
def main(cfg: DictConfig) -> float:
    return evaluate(cfg).summary()


if __name__ == "__main__":
    main()
