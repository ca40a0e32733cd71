"""A small CartPole evaluation shared by the test apps: variations from config, random actions.

Config keys it reads (all optional): ``seed``, ``num_envs``, ``steps``, ``fail_at`` (raise at
that step), ``forever`` (step until the process is stopped), ``variations``.
"""

from __future__ import annotations

import time
from typing import Any

import gymnasium as gym
import numpy as np

from arena_recording.integrations.gym_wrapper import VariationsWrapper
from arena_recording.integrations.hydra_callback import variations_from_config


def evaluate(cfg: Any) -> int:
    print("TASK STARTED", flush=True)
    seed = int(cfg.get("seed", 0))
    num_envs = int(cfg.get("num_envs", 4))
    steps = int(cfg.get("steps", 60))
    fail_at = cfg.get("fail_at", None)
    forever = bool(cfg.get("forever", False))
    variations = variations_from_config(cfg.get("variations", None))
    vector_env = gym.make_vec("CartPole-v1", num_envs=num_envs, vectorization_mode="sync")
    env = VariationsWrapper(vector_env, variations, seed=seed, success="truncated")
    rng = np.random.default_rng(seed)
    env.reset(seed=seed)
    step = 0
    while forever or step < steps:
        env.step(rng.integers(0, 2, size=num_envs))
        step += 1
        if fail_at is not None and step == int(fail_at):
            raise RuntimeError(f"task failed on purpose at step {step}")
        if forever:
            time.sleep(0.002)
    env.close()
    return step
