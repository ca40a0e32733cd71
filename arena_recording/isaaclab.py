"""Isaac Lab adapter: a recorder term for ``ManagerBasedRLEnv`` and variations as event terms.

Recording goes through Isaac Lab's own ``RecorderManager``: the term closes episodes in
``record_pre_reset`` (length from ``episode_length_buf``, terminated / truncated and the
termination term that fired are still intact there) and writes nothing to Isaac Lab's own
episode buffers. Variations are event terms that draw through our samplers, for the episode
open in each env, and apply the values with the asset APIs (startup: build scope, reset:
episode scope, interval: interval scope). Live objects stay on the env and the manager terms,
never in configs (managers deep-copy those).

Example (the one line that instruments an env cfg, and a variation)::

    env_cfg.events.cube_mass = variation_event(
        "cube.mass", {"type": "uniform", "low": 0.5, "high": 5.0}, apply=mass, asset="cube"
    )
    env = ManagerBasedRLEnv(instrument(env_cfg))  # records only while a session is active
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import warp as wp
from isaaclab.assets import RigidObject
from isaaclab.envs import ManagerBasedEnv, ManagerBasedRLEnv, ManagerBasedRLEnvCfg
from isaaclab.managers import (
    EventTermCfg,
    ManagerTermBase,
    RecorderTerm,
    RecorderTermCfg,
    SceneEntityCfg,
)
from isaaclab.managers.recorder_manager import DatasetExportMode, RecorderManagerBaseCfg
from isaaclab.utils import configclass
from newton import ModelFlags

from arena_recording.episodes import EpisodeEnd, EpisodeIdentity
from arena_recording.sampling import Scope
from arena_recording.session import active_session
from arena_recording.terms import import_func
from arena_recording.variations import VariationBase, VariationCfg

EnvIds = torch.Tensor | Sequence[int] | slice | None
Applier = Callable[[ManagerBasedEnv, torch.Tensor, torch.Tensor, SceneEntityCfg], None]

_ATTRIBUTE = "_arena_recording_episodes"
_SCOPES = {"startup": Scope.BUILD, "reset": Scope.EPISODE, "interval": Scope.INTERVAL}


def env_ids_tensor(env: ManagerBasedEnv, env_ids: EnvIds) -> torch.Tensor:
    """Env ids as a long tensor on the env's device (Isaac Lab passes None, slices, lists)."""
    if env_ids is None or isinstance(env_ids, slice):
        return torch.arange(env.num_envs, device=env.device)[env_ids or slice(None)]
    return torch.as_tensor(env_ids, device=env.device).long()


class EnvEpisodes:
    """The episode identity of one env, advanced exactly once per reset.

    Whoever sees a reset first (the recorder term before it, or the first variation event
    during it) advances the identity; ``episode_length_buf`` is still intact at both points.
    Draws are therefore the same with recording on or off.
    """

    def __init__(self, env: ManagerBasedEnv) -> None:
        self.env = env
        self.identity = EpisodeIdentity(env.num_envs, env.device)
        self._advanced_at = torch.full((env.num_envs,), -1, dtype=torch.long, device=env.device)

    def lengths(self, env_ids: torch.Tensor) -> torch.Tensor:
        return self.env.episode_length_buf[env_ids]

    def advance(self, env_ids: torch.Tensor) -> None:
        """Open the next episodes of ``env_ids`` unless this reset already did."""
        step = int(self.env.common_step_counter)
        fresh = self._advanced_at.index_select(0, env_ids) != step
        self.identity.advance(env_ids, started=(self.lengths(env_ids) > 0) & fresh)
        self._advanced_at.index_fill_(0, env_ids, step)


def env_episodes(env: ManagerBasedEnv) -> EnvEpisodes:
    """The ``EnvEpisodes`` of ``env``, created on first use and kept on the env itself."""
    episodes = getattr(env, _ATTRIBUTE, None)
    if episodes is None:
        episodes = EnvEpisodes(env)
        setattr(env, _ATTRIBUTE, episodes)
    return episodes


class EpisodeRecorderTerm(RecorderTerm):
    """Closes episodes into the active session before each reset; returns nothing to Isaac Lab."""

    def __init__(self, cfg: EpisodeRecorderTermCfg, env: ManagerBasedRLEnv) -> None:
        super().__init__(cfg, env)
        session = active_session()
        if session is None:
            raise RuntimeError("EpisodeRecorderTerm needs an active recording session")
        self._session = session
        self._episodes = env_episodes(env)
        self._success_terms = tuple(cfg.success_terms)
        self._names: list[str] | None = None
        self.recorder = session.bind(self._episodes.identity, seed=env.cfg.seed or 0, env=env)

    def _termination_names(self) -> list[str]:
        """Resolved on first use: the termination manager is built after the recorder."""
        if self._names is None:
            names = list(self._env.termination_manager.active_terms)
            unknown = [n for n in self._success_terms if n not in names]
            if unknown:
                raise ValueError(
                    f"success terms {unknown} are not termination terms of this env: {names}"
                )
            self._names = names
            self.recorder.set_termination_names(names)
        return self._names

    def record_pre_reset(self, env_ids: Sequence[int] | None) -> tuple[None, None]:
        ids = env_ids_tensor(self._env, env_ids)
        manager = self._env.termination_manager
        names = self._termination_names()
        fired = torch.stack([manager.get_term(name)[ids] for name in names], dim=1)
        termination = torch.where(fired.any(1), fired.int().argmax(1), -1)
        success = fired[:, [names.index(n) for n in self._success_terms]].any(1)
        self.recorder.close(
            EpisodeEnd(
                env_ids=ids,
                length=self._episodes.lengths(ids),
                terminated=manager.terminated[ids],
                truncated=manager.time_outs[ids],
                termination=termination,
                success=success,
            )
        )
        self._episodes.advance(ids)
        return None, None

    def close(self, file_path: str | None = None) -> None:
        """The env is closing: its running episodes end as aborted records."""
        if self.recorder is None:
            return
        ids = torch.arange(self._env.num_envs, device=self._env.device)
        none = torch.zeros_like(ids, dtype=torch.bool)
        self.recorder.close(
            EpisodeEnd(ids, self._episodes.lengths(ids), none, none, torch.full_like(ids, -1))
        )
        self._session.unbind(self.recorder)
        self.recorder = None


@configclass
class EpisodeRecorderTermCfg(RecorderTermCfg):
    class_type: type[RecorderTerm] = EpisodeRecorderTerm
    success_terms: tuple[str, ...] = ("success",)
    """Termination terms whose firing counts as success (Isaac Lab's own convention: success)."""


def instrument(
    env_cfg: ManagerBasedRLEnvCfg, *, success_terms: Sequence[str] = ("success",)
) -> ManagerBasedRLEnvCfg:
    """Add the episode recorder term to ``env_cfg`` if a session is active; else do nothing.

    Other recorder terms already configured are kept; when ours is the only one, Isaac Lab's
    own dataset export is turned off so that no HDF5 file is written.
    """
    if active_session() is None:
        return env_cfg
    recorders = env_cfg.recorders
    if not isinstance(recorders, RecorderManagerBaseCfg):
        raise TypeError(f"env_cfg.recorders must be a RecorderManagerBaseCfg, got {recorders!r}")
    has_terms = any(isinstance(v, RecorderTermCfg) for v in vars(recorders).values())
    if not has_terms:
        recorders.dataset_export_mode = DatasetExportMode.EXPORT_NONE
        recorders.export_in_record_pre_reset = False
    recorders.arena_recording = EpisodeRecorderTermCfg(success_terms=tuple(success_terms))
    return env_cfg


class VariationEvent(ManagerTermBase):
    """An event term that draws one variation for the open episodes and applies it.

    The scope follows the event mode: ``startup`` draws once per env at build, ``reset`` once
    per episode, ``interval`` at the episode step of each draw. With ``apply=None`` the value
    is drawn and recorded but applied to nothing (a control factor for analysis).
    """

    def __init__(self, cfg: EventTermCfg, env: ManagerBasedEnv) -> None:
        super().__init__(cfg, env)
        params = cfg.params
        if cfg.mode not in _SCOPES:
            raise ValueError(
                f"variation {params['key']!r}: event mode {cfg.mode!r} is not one of {list(_SCOPES)}"
            )
        self.variation = VariationBase(
            VariationCfg(
                key=params["key"],
                sampler=params["sampler"],
                scope=_SCOPES[cfg.mode],
                enabled=params.get("enabled", True),
            )
        )
        apply = params.get("apply")
        try:
            self._apply = import_func(apply) if isinstance(apply, str) else apply
        except ValueError as err:
            raise ValueError(f"variation {params['key']!r}: apply: {err}") from None
        self._asset_cfg = SceneEntityCfg(params.get("asset") or "")
        if params.get("asset"):
            self._asset_cfg.resolve(env.scene)
        self._episodes = env_episodes(env)

    def __call__(
        self,
        env: ManagerBasedEnv,
        env_ids: EnvIds,
        key: str,
        sampler: Any,
        apply: str | Applier | None = None,
        asset: str | None = None,
        enabled: bool = True,
    ) -> None:
        if not self.variation.enabled:
            return
        ids = env_ids_tensor(env, env_ids)
        identity = self._episodes.identity
        if self.variation.scope is Scope.EPISODE:
            self._episodes.advance(ids)
        values = self.variation.sample(
            ids,
            seed=env.cfg.seed or 0,
            episode_in_env=identity.episode_in_env[ids],
            step=env.episode_length_buf[ids] if self.variation.scope is Scope.INTERVAL else None,
            device=env.device,
        )
        if self._apply is not None:
            self._apply(env, ids, values, self._asset_cfg)


def variation_event(
    key: str,
    sampler: dict[str, Any],
    *,
    apply: str | Applier | None,
    asset: str | None = None,
    mode: str = "reset",
    enabled: bool = True,
    interval_range_s: tuple[float, float] | None = None,
) -> EventTermCfg:
    """An ``EventTermCfg`` for a variation (plain data only: configs get deep-copied)."""
    return EventTermCfg(
        func=VariationEvent,
        mode=mode,
        interval_range_s=interval_range_s,
        params={
            "key": key,
            "sampler": dict(sampler),
            "apply": apply,
            "asset": asset,
            "enabled": enabled,
        },
    )


# --- appliers: (env, env_ids, values, asset_cfg) -> None, and their read-backs ---------------


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
