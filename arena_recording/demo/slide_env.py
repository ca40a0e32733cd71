"""Sliding-cube demo env for Isaac Lab 3.0, kit-less on the CPU (Newton + MuJoCo-Warp).

A 0.1 m cube starts at rest near the -x end of a static 2 m platform and is launched along +x at
every reset. The episode ends with the termination term ``success`` when the cube comes to rest on
the platform, ``fell_off`` when it drops below the platform top, or ``time_out`` (truncated).
With friction ``mu`` and speed ``v`` it slides ``v**2 / (2 * mu * g)``; its mass does not matter.

The env has no meaningful action (the action space has zero dimensions): pass
``torch.zeros(num_envs, 0)`` to ``env.step``.

Physical factors are set per env with the appliers of ``arena_recording.integrations.isaaclab_appliers`` (root
velocity and position offset, mass, friction, gravity); model changes reach the solver at the
next physics step.

Usage::

    from isaaclab.envs import ManagerBasedRLEnv
    from arena_recording.demo.slide_env import launch, make_env_cfg

    with launch():
        env = ManagerBasedRLEnv(make_env_cfg(num_envs=16))
        obs, _ = env.reset()
        ...
        env.close()
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Any

import isaaclab.sim as sim_utils
import torch
from isaaclab.assets import AssetBaseCfg, RigidObject, RigidObjectCfg
from isaaclab.envs import ManagerBasedEnv, ManagerBasedRLEnv, ManagerBasedRLEnvCfg
from isaaclab.envs.mdp import time_out
from isaaclab.managers import (
    EventTermCfg,
    ManagerTermBase,
    ObservationGroupCfg,
    ObservationTermCfg,
    SceneEntityCfg,
    TerminationTermCfg,
)
from isaaclab.scene import InteractiveSceneCfg
from isaaclab.sim import SimulationCfg
from isaaclab.utils import configclass
from isaaclab_newton.physics import MJWarpSolverCfg, NewtonCfg

from arena_recording.integrations.isaaclab_appliers import root_position_offset, root_velocity
from arena_recording.integrations.isaaclab_recording import env_ids_tensor

# --- scene parameters (metres, kilograms, seconds; positions relative to each env origin) ----
PLATFORM_SIZE: tuple[float, float, float] = (2.0, 0.5, 0.1)
"""Platform box size (x, y, z); it spans x in [-1, 1] around the env origin."""
PLATFORM_TOP_Z: float = 0.0
"""Height of the platform's top face (its centre is half its thickness below)."""
PLATFORM_FRICTION: float = 0.05
"""Low on purpose: MuJoCo uses the larger friction of two touching materials, so the cube's wins."""
CUBE_SIZE: float = 0.1
CUBE_MASS: float = 1.0
CUBE_FRICTION: float = 0.5
"""Default friction of the cube. Newton has one coefficient: it takes the dynamic friction."""
CUBE_START_X: float = -0.8
"""Default start of the cube centre along x, near the -x end of the platform."""
CUBE_INIT_SPEED: float = 2.0
"""Default speed along +x given at each reset [m/s]; slides 0.41 m with friction 0.5."""
GRAVITY: float = 9.81
REST_SPEED: float = 0.01
"""Speed [m/s], from the displacement over one env step, under which the cube is at rest."""
EPISODE_LENGTH_S: float = 4.0
ENV_SPACING: float = 3.0
SIM_DT: float = 0.01
NUM_SUBSTEPS: int = 1
"""1 substep: ~50 env steps/s at 64 envs on 2 CPU cores; slides 1-5 % short of v**2/(2 mu g) and
the cube hops (up to ~10 cm at 3 m/s). 4 substeps: within ~1 %, no hops, ~4.5x slower."""
DECIMATION: int = 2

_CUBE = SceneEntityCfg("cube")


# --- MDP terms ------------------------------------------------------------------------------
def cube_state(env: ManagerBasedEnv, asset_cfg: SceneEntityCfg = _CUBE) -> torch.Tensor:
    """Cube position relative to its env origin and its linear velocity, shape (num_envs, 6)."""
    cube: RigidObject = env.scene[asset_cfg.name]
    pos = cube.data.root_link_pos_w.torch - env.scene.env_origins
    return torch.cat([pos, cube.data.root_com_lin_vel_w.torch], dim=-1)


def cube_fell_off(env: ManagerBasedRLEnv, asset_cfg: SceneEntityCfg = _CUBE) -> torch.Tensor:
    """True where the cube centre is below the platform top (it left the platform)."""
    cube: RigidObject = env.scene[asset_cfg.name]
    return cube.data.root_link_pos_w.torch[:, 2] - env.scene.env_origins[:, 2] < PLATFORM_TOP_Z


class cube_at_rest(ManagerTermBase):
    """True where the cube is on the platform and has (nearly) stopped moving.

    The speed is measured from the displacement over the last env step, not from the reported
    velocity: at ``NUM_SUBSTEPS = 1`` MuJoCo-Warp can leave a cube that stands still with a
    constant non-zero velocity (seen: 0.028 m/s with friction 0.7). The first step of an episode
    never counts (no previous position yet).
    """

    def __init__(self, cfg: TerminationTermCfg, env: ManagerBasedRLEnv) -> None:
        super().__init__(cfg, env)
        self._prev_pos = torch.full((env.num_envs, 3), float("nan"), device=env.device)

    def __call__(
        self,
        env: ManagerBasedRLEnv,
        speed_threshold: float = REST_SPEED,
        asset_cfg: SceneEntityCfg = _CUBE,
    ) -> torch.Tensor:
        pos = env.scene[asset_cfg.name].data.root_link_pos_w.torch
        speed = torch.linalg.vector_norm(pos - self._prev_pos, dim=-1) / env.step_dt
        self._prev_pos.copy_(pos)
        # episode_length_buf is already incremented: 1 on the first step after a reset
        still = (speed < speed_threshold) & (env.episode_length_buf > 1)
        return still & ~cube_fell_off(env, asset_cfg)


def reset_cube(
    env: ManagerBasedEnv,
    env_ids: torch.Tensor | slice | None,
    speed: float = CUBE_INIT_SPEED,
    asset_cfg: SceneEntityCfg = _CUBE,
) -> None:
    """Default reset event: cube back to its start pose, launched along +x at ``speed``."""
    ids = env_ids_tensor(env, env_ids)
    root_position_offset(env, ids, torch.zeros(ids.numel(), device=env.device), asset_cfg)
    root_velocity(env, ids, torch.full((ids.numel(),), speed, device=env.device), asset_cfg)


# --- configuration --------------------------------------------------------------------------
@configclass
class SlideSceneCfg(InteractiveSceneCfg):
    """One static platform and one free cube per env."""

    platform = AssetBaseCfg(
        prim_path="{ENV_REGEX_NS}/Platform",
        # no rigid body API: a static collider
        spawn=sim_utils.CuboidCfg(
            size=PLATFORM_SIZE,
            collision_props=sim_utils.UsdPhysicsCollisionCfg(),
            physics_material=sim_utils.RigidBodyMaterialCfg(
                static_friction=PLATFORM_FRICTION, dynamic_friction=PLATFORM_FRICTION
            ),
        ),
        init_state=AssetBaseCfg.InitialStateCfg(
            pos=(0.0, 0.0, PLATFORM_TOP_Z - PLATFORM_SIZE[2] / 2)
        ),
    )
    cube = RigidObjectCfg(
        prim_path="{ENV_REGEX_NS}/Cube",
        spawn=sim_utils.CuboidCfg(
            size=(CUBE_SIZE, CUBE_SIZE, CUBE_SIZE),
            rigid_props=sim_utils.UsdPhysicsRigidBodyCfg(),
            mass_props=sim_utils.MassCfg(mass=CUBE_MASS),
            collision_props=sim_utils.UsdPhysicsCollisionCfg(),
            physics_material=sim_utils.RigidBodyMaterialCfg(
                static_friction=CUBE_FRICTION, dynamic_friction=CUBE_FRICTION
            ),
        ),
        init_state=RigidObjectCfg.InitialStateCfg(
            pos=(CUBE_START_X, 0.0, PLATFORM_TOP_Z + CUBE_SIZE / 2)
        ),
    )


@configclass
class ActionsCfg:
    """No action terms: the action space has zero dimensions."""


@configclass
class RewardsCfg:
    """No reward terms: the demo is an evaluation, rewards are all zero."""


@configclass
class ObservationsCfg:
    @configclass
    class PolicyCfg(ObservationGroupCfg):
        cube = ObservationTermCfg(func=cube_state)

    policy: PolicyCfg = PolicyCfg()


@configclass
class EventsCfg:
    reset_cube = EventTermCfg(func=reset_cube, mode="reset")


@configclass
class TerminationsCfg:
    """``success`` and ``fell_off`` are terminations, ``time_out`` a truncation."""

    success = TerminationTermCfg(func=cube_at_rest, params={"speed_threshold": REST_SPEED})
    fell_off = TerminationTermCfg(func=cube_fell_off)
    time_out = TerminationTermCfg(func=time_out, time_out=True)


def make_sim_cfg(
    dt: float = SIM_DT, num_substeps: int = NUM_SUBSTEPS, device: str = "cpu"
) -> SimulationCfg:
    """Kit-less Newton / MuJoCo-Warp simulation settings (no CUDA graph on the CPU)."""
    physics = NewtonCfg(
        solver_cfg=MJWarpSolverCfg(),
        num_substeps=num_substeps,
        use_cuda_graph=device.startswith("cuda"),
    )
    return SimulationCfg(device=device, dt=dt, physics=physics, gravity=(0.0, 0.0, -GRAVITY))


@configclass
class SlideEnvCfg(ManagerBasedRLEnvCfg):
    scene: SlideSceneCfg = SlideSceneCfg(num_envs=16, env_spacing=ENV_SPACING)
    observations: ObservationsCfg = ObservationsCfg()
    actions: ActionsCfg = ActionsCfg()
    rewards: RewardsCfg = RewardsCfg()
    terminations: TerminationsCfg = TerminationsCfg()
    events: EventsCfg = EventsCfg()
    decimation: int = DECIMATION
    episode_length_s: float = EPISODE_LENGTH_S
    sim: SimulationCfg = make_sim_cfg()


def make_env_cfg(
    num_envs: int,
    *,
    seed: int | None = 0,
    episode_length_s: float = EPISODE_LENGTH_S,
    dt: float = SIM_DT,
    num_substeps: int = NUM_SUBSTEPS,
    decimation: int = DECIMATION,
    device: str = "cpu",
) -> SlideEnvCfg:
    """Build the env config for ``num_envs`` envs spaced ``ENV_SPACING`` apart."""
    cfg = SlideEnvCfg()
    cfg.scene.num_envs = num_envs
    cfg.scene.env_spacing = ENV_SPACING
    cfg.sim = make_sim_cfg(dt=dt, num_substeps=num_substeps, device=device)
    cfg.decimation = decimation
    cfg.episode_length_s = episode_length_s
    cfg.seed = seed
    return cfg


def launch(device: str = "cpu", **launcher_args: Any) -> AbstractContextManager:
    """Context manager starting the kit-less runtime (no Isaac Sim); build envs inside it."""
    from isaaclab.app import launch_simulation

    args: dict[str, Any] = {"headless": True, "device": device, **launcher_args}
    return launch_simulation(make_sim_cfg(device=device), args)
