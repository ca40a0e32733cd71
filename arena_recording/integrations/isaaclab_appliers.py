"""Isaac Lab appliers: write a variation's values into the simulation, and read them back.

An applier is ``(env, env_ids, values, asset_cfg) -> None``; the read-backs let tests (and
users) check that what the records say is what the simulation ran with.

Example::

    variation_event("cube.friction", {"type": "uniform", "low": 0.1, "high": 0.6},
                    apply=friction, asset="cube")
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import warp as wp
from isaaclab.assets import RigidObject
from isaaclab.envs import ManagerBasedEnv
from isaaclab.managers import SceneEntityCfg
from newton import ModelFlags

Applier = Callable[[ManagerBasedEnv, torch.Tensor, torch.Tensor, SceneEntityCfg], None]


def _rows(values: torch.Tensor, width: int) -> torch.Tensor:
    """Scalars per env become the first component of ``width``-wide rows."""
    if values.ndim == 1:
        rows = torch.zeros(values.shape[0], width, device=values.device, dtype=torch.float32)
        rows[:, 0] = values
        return rows
    return values.float()


def root_velocity(
    env: ManagerBasedEnv, env_ids: torch.Tensor, values: torch.Tensor, asset_cfg: SceneEntityCfg
) -> None:
    """Root velocity in the world frame: a speed along +x, a linear (3) or full (6) velocity."""
    asset: RigidObject = env.scene[asset_cfg.name]
    velocity = torch.zeros(env_ids.shape[0], 6, device=env.device)
    rows = _rows(values, 6 if values.ndim > 1 and values.shape[1] == 6 else 3)
    velocity[:, : rows.shape[1]] = rows
    asset.write_root_velocity_to_sim_index(root_velocity=velocity, env_ids=env_ids.int())


def root_position_offset(
    env: ManagerBasedEnv, env_ids: torch.Tensor, values: torch.Tensor, asset_cfg: SceneEntityCfg
) -> None:
    """Start pose = default pose + offset: an offset along x, or an (x, y, z) offset."""
    asset: RigidObject = env.scene[asset_cfg.name]
    pose = asset.data.default_root_pose.torch[env_ids].clone()
    pose[:, :3] += env.scene.env_origins[env_ids] + _rows(values, 3)
    asset.write_root_pose_to_sim_index(root_pose=pose, env_ids=env_ids.int())


def mass(
    env: ManagerBasedEnv, env_ids: torch.Tensor, values: torch.Tensor, asset_cfg: SceneEntityCfg
) -> None:
    """Mass of the asset's (first) body in kg; inertia scales with it (same density)."""
    asset: RigidObject = env.scene[asset_cfg.name]
    new = values.float().reshape(-1, 1)
    old = asset.data.body_mass.torch[env_ids]
    inertia = asset.data.body_inertia.torch[env_ids] * (new / old)[..., None]
    asset.set_masses_index(masses=new.contiguous(), env_ids=env_ids.int())
    asset.set_inertias_index(inertias=inertia.contiguous(), env_ids=env_ids.int())


def _friction_view(env: ManagerBasedEnv, asset_cfg: SceneEntityCfg) -> torch.Tensor:
    asset: RigidObject = env.scene[asset_cfg.name]
    model = env.sim.physics_manager.get_model()
    return wp.to_torch(asset.root_view.get_attribute("shape_material_mu", model)[:, 0])


def friction(
    env: ManagerBasedEnv, env_ids: torch.Tensor, values: torch.Tensor, asset_cfg: SceneEntityCfg
) -> None:
    """Friction of every shape of the asset. Newton has one coefficient for static and
    dynamic friction; contact uses the larger of the two touching materials' values."""
    view = _friction_view(env, asset_cfg)
    view[env_ids] = values.reshape(-1, 1).to(view.dtype)
    env.sim.physics_manager.add_model_change(ModelFlags.SHAPE_PROPERTIES)


def gravity(
    env: ManagerBasedEnv, env_ids: torch.Tensor, values: torch.Tensor, asset_cfg: SceneEntityCfg
) -> None:
    """Gravity per env: a magnitude pointing down, or a 3-vector (Newton: one per world)."""
    field = wp.to_torch(env.sim.physics_manager.get_model().gravity)  # (num_envs + 1, 3)
    rows = torch.zeros(env_ids.shape[0], 3, device=field.device, dtype=field.dtype)
    if values.ndim == 1:
        rows[:, 2] = -values.to(field.dtype)
    else:
        rows[:] = values.to(field.dtype)
    field[env_ids] = rows
    env.sim.physics_manager.add_model_change(ModelFlags.MODEL_PROPERTIES)


def read_mass(env: ManagerBasedEnv, asset: str) -> torch.Tensor:
    return env.scene[asset].data.body_mass.torch[:, 0].clone()


def read_friction(env: ManagerBasedEnv, asset: str) -> torch.Tensor:
    return _friction_view(env, SceneEntityCfg(asset))[:, 0].clone()


def read_gravity(env: ManagerBasedEnv) -> torch.Tensor:
    return wp.to_torch(env.sim.physics_manager.get_model().gravity)[: env.num_envs].clone()


def read_root_position(env: ManagerBasedEnv, asset: str) -> torch.Tensor:
    """Root position relative to each env origin."""
    return env.scene[asset].data.root_link_pos_w.torch - env.scene.env_origins


def read_root_velocity(env: ManagerBasedEnv, asset: str) -> torch.Tensor:
    return env.scene[asset].data.root_com_lin_vel_w.torch.clone()
