"""Isaac Lab's own registered tasks, kit-less on the CPU: their env cfgs with local USDs.

The registered tasks reference robot and ground USDs on Isaac's asset server, which cannot be
reached here. ``localize`` swaps them for local stand-ins with the same joint and body names:
the cartpole cut from a flattened test stage of the isaaclab wheel (``tests/data/usd``), Newton's
``ant.usda``, and a plain collision plane for the ground. Physics is Newton / MuJoCo-Warp on the
CPU without CUDA graphs. Everything else (events, terminations, observations, actions) is the
task's own config.

Usage (inside ``arena_recording.demo.slide_env.launch()``, the kit-less runtime)::

    import gymnasium as gym
    from isaaclab_local_tasks import task_env_cfg

    with launch():
        cfg = task_env_cfg("Isaac-Cartpole", num_envs=8, seed=0)
        env = gym.make("Isaac-Cartpole", cfg=cfg)   # or ManagerBasedRLEnv(cfg)

A cfg composed by Isaac Lab's own entry points (``resolve_task_config``) is made runnable the
same way: ``localize(env_cfg)``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import isaaclab_tasks  # noqa: F401  registers the Isaac-* gym ids
import newton.examples
from isaaclab.assets import ArticulationCfg, AssetBaseCfg
from isaaclab.sim import GroundPlaneCfg, UsdFileCfg
from isaaclab.terrains import TerrainImporterCfg
from isaaclab_tasks.utils import parse_env_cfg

USD_DIR = Path(__file__).parent / "data" / "usd"
GROUND_USD = USD_DIR / "ground_plane.usda"
ROBOT_USDS = {
    "cartpole.usd": USD_DIR / "cartpole.usda",
    "ant_instanceable.usd": Path(newton.examples.get_asset("ant.usda")),
}
"""Local stand-in per file name of the task's robot USD on the asset server."""

TASKS = ("Isaac-Cartpole", "Isaac-Ant", "Isaac-Cartpole-Direct")
"""Registered tasks that run here once localized."""


def localize(env_cfg: Any, device: str = "cpu") -> Any:
    """Swap the remote robot and ground USDs of ``env_cfg`` for local ones; CPU physics.

    Raises ``KeyError`` for a robot USD that has no local stand-in (the task cannot run here).
    """
    for name, asset in vars(env_cfg.scene).items():
        if isinstance(asset, TerrainImporterCfg) and asset.terrain_type == "plane":
            asset.terrain_type = "usd"
            asset.usd_path = str(GROUND_USD)
        elif isinstance(asset, AssetBaseCfg) and isinstance(asset.spawn, GroundPlaneCfg):
            asset.spawn.usd_path = str(GROUND_USD)
        elif isinstance(asset, ArticulationCfg) and isinstance(asset.spawn, UsdFileCfg):
            remote = Path(asset.spawn.usd_path).name
            if remote not in ROBOT_USDS:
                raise KeyError(f"scene.{name}: no local stand-in for {asset.spawn.usd_path}")
            asset.spawn.usd_path = str(ROBOT_USDS[remote])
    env_cfg.sim.device = device
    env_cfg.sim.physics.use_cuda_graph = device.startswith("cuda")
    return env_cfg


def task_env_cfg(task: str, num_envs: int, seed: int = 0, device: str = "cpu") -> Any:
    """The registered env cfg of ``task`` (default presets: Newton / MJWarp), localized."""
    cfg = parse_env_cfg(task, device=device, num_envs=num_envs)
    cfg.seed = seed
    return localize(cfg, device)
