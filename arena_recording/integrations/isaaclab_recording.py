"""Isaac Lab adapter, recording: the episode identity of an env and the recorder term.

Recording goes through Isaac Lab's own ``RecorderManager``: the term closes episodes in
``record_pre_reset`` (length from ``episode_length_buf``, terminated / truncated and the
termination term that fired are still intact there) and writes nothing to Isaac Lab's own
episode buffers. Live objects stay on the env and the manager terms, never in configs
(managers deep-copy those).

Example (the one line that instruments an env cfg)::

    env = ManagerBasedRLEnv(instrument(env_cfg))  # records only while a session is active
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from isaaclab.envs import ManagerBasedEnv, ManagerBasedRLEnv, ManagerBasedRLEnvCfg
from isaaclab.managers import RecorderTerm, RecorderTermCfg
from isaaclab.managers.recorder_manager import DatasetExportMode, RecorderManagerBaseCfg
from isaaclab.utils import configclass

from arena_recording.core.episodes import EpisodeEnd, EpisodeIdentity
from arena_recording.core.session import active_session

EnvIds = torch.Tensor | Sequence[int] | slice | None

_ATTRIBUTE = "_arena_recording_episodes"


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
