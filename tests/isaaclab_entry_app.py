"""Isaac Lab's own entry-point flow, as the ``isaaclab_rl`` play scripts run it.

``resolve_task_config`` composes the env cfg with Hydra (reading the Hydra overrides from
``sys.argv``) and returns; the app then launches the runtime, builds the env from that cfg,
steps it and closes it. Prints one JSON line: the episodes the env reported, per env, as
``[env_id, length, terminated, truncated]`` in the order they ended.

    python isaaclab_entry_app.py TASK STEPS [--no-env | --no-close | --fail] env.scene.num_envs=4 \\
        '+recorder=[core,variations]' hydra.run.dir=OUT
"""

from __future__ import annotations

import json
import sys

import gymnasium as gym
import torch
from isaaclab_local_tasks import localize
from isaaclab_tasks.utils import resolve_task_config

from arena_recording.demo.slide_env import launch


def main() -> None:
    task, steps, *rest = sys.argv[1:]
    flags = {arg for arg in rest if arg.startswith("--")}
    sys.argv = [sys.argv[0], *(arg for arg in rest if not arg.startswith("--"))]
    env_cfg, _ = resolve_task_config(task, None)
    if "--fail" in flags:
        raise RuntimeError("the rollout failed")
    if "--no-env" in flags:
        return
    localize(env_cfg)
    ended = []
    with launch():
        env = gym.make(task, cfg=env_cfg)
        env.reset()
        num_envs = env.unwrapped.num_envs
        length = torch.zeros(num_envs, dtype=torch.long)
        for _ in range(int(steps)):
            _, _, terminated, truncated, _ = env.step(torch.zeros(env.action_space.shape))
            length += 1
            for i in (terminated | truncated).nonzero().flatten().tolist():
                ended.append([i, int(length[i]), bool(terminated[i]), bool(truncated[i])])
                length[i] = 0
        print(json.dumps({"ended": ended, "running": length.tolist()}))
        if "--no-close" not in flags:
            env.close()


if __name__ == "__main__":
    main()
