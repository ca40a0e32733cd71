"""Demo tasks. Importing this package registers the sliding-cube task as ``Arena-Slide-v0`` in
gymnasium's registry, the way Isaac Lab registers its own tasks, so the evaluation runner
(``python -m arena_recording.evaluate``) runs it like any other task."""

import gymnasium as gym

if "Arena-Slide-v0" not in gym.registry:
    gym.register(
        id="Arena-Slide-v0",
        entry_point="isaaclab.envs:ManagerBasedRLEnv",
        disable_env_checker=True,
        kwargs={"env_cfg_entry_point": "arena_recording.demo.slide_env:SlideEnvCfg"},
    )
